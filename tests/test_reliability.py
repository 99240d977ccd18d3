"Runs that cannot lie: bad settings refused before work, divergence fails, run folders never mixed, resume is exact."
import json, subprocess, numpy as np, pandas as pd, pytest, torch
from pathlib import Path
from fastai.vision.all import Callback, load_learner, resnet18
from hpa_fastai.all import *
from hpa_fastai.cli import *
from hpa_fastai.test_utils import fake_hpa

def cli(args, cwd):
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600)

TINY = ['--size', '32', '--bs', '8', '--epochs', '1', '--arch', 'resnet18', '--num-workers', '0', '--tta', 'none']

@pytest.mark.parametrize('kw,msg', [
    (dict(lr=-1e-3), '--lr must be a positive number'),
    (dict(epochs=0), '--epochs must be at least 1'),
    (dict(size=0), '--size must be at least 16'),
    (dict(bs=0), '--bs must be at least 1'),
    (dict(valid_pct=0), 'no labelled validation set'),
    (dict(valid_pct=1), '--valid-pct must be in [0, 1)'),
    (dict(threshold_method='bogus'), '--thresholds must be one of'),
    (dict(threshold_method='5'), '--thresholds must be one of'),
    (dict(tta='median'), '--tta must be one of'),
    (dict(arch='vgg'), "--arch: "),
    (dict(channels='rgbx'), 'unknown channel letter'),
    (dict(weights='nowhere.pth'), '--weights nowhere.pth: file not found'),
    (dict(seed=-1), '--seed must be between'),
    (dict(dropout_at='first'), '--dropout-at must be one of'),
    (dict(precision='fp8'), '--precision must be one of'),
])
def test_bad_settings(kw, msg):
    with pytest.raises(HpaConfigError, match=msg.replace('[', r'\[').replace(')', r'\)')): TrainConfig(**kw).check()

def test_bad_settings_refused_before_work(tmp_path):
    "The command: exit 2, every problem named, no traceback, nothing written"
    fake_hpa(tmp_path/'d', n=12)
    r = cli(['hpa-train', '--path', 'd', '--name', 'r', '--lr=-1e-3', '--epochs', '0', '--thresholds', 'bogus'], tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]
    for msg in ('--lr must be a positive number', '--epochs must be at least 1', '--thresholds must be one of'): assert msg in r.stderr
    assert 'Traceback' not in r.stderr and not (tmp_path/'runs').exists() and not (tmp_path/'features_cache').exists()

def test_too_few_samples(tmp_path):
    d = fake_hpa(tmp_path/'d', n=3)
    with pytest.raises(HpaConfigError, match='fewer than one batch of --bs 8'): run_training(d, out=tmp_path/'runs', bs=8)
    with pytest.raises(HpaConfigError, match='no validation sample'): run_training(d, out=tmp_path/'runs', bs=1, valid_pct=0.1)

def test_diverged_run_fails_and_writes_nothing(tmp_path, cli_here):
    fake_hpa(tmp_path/'d', n=24, n_test=4)
    r = cli_here(['hpa-train', '--path', 'd', '--name', 'r', '--lr', '1e4', *TINY], tmp_path)
    assert r.returncode == 1 and 'diverged' in r.stderr, (r.stdout[-2000:], r.stderr[-2000:])
    run = tmp_path/'runs'/'r'
    assert not (run/'submission.csv').exists() and not (run/'model.pkl').exists() and not (run/'metrics.json').exists()

def test_run_folder_not_mixed(tmp_path):
    d = fake_hpa(tmp_path/'d', n=24, n_test=4)
    kw = dict(out=tmp_path/'runs', name='r', size=32, bs=8, epochs=1, lr=1e-3, arch='resnet18', num_workers=0, tta='none', features=False)
    run_training(d, **kw)
    with pytest.raises(HpaConfigError, match='run folder exists'): run_training(d, **kw)
    (tmp_path/'runs'/'r'/'stale.txt').write_text('old run')
    m = run_training(d, overwrite=True, **kw)
    assert not (tmp_path/'runs'/'r'/'stale.txt').exists() and m['config']['features'] is False
    m = json.loads((tmp_path/'runs'/'r'/'metrics.json').read_text())
    assert m['data']['n_samples'] == 24 and m['software']['packages']['fastai'] and 'git_commit' in m['software']

def test_valid_pct_zero_freq(tmp_path):
    d = fake_hpa(tmp_path/'d', n=16, n_test=4)
    m = run_training(d, out=tmp_path/'runs', name='all', size=32, bs=8, epochs=1, lr=1e-3, arch='resnet18', num_workers=0,
                     tta='none', features=False, valid_pct=0, threshold_method='freq')
    assert 'valid' not in m and (tmp_path/'runs'/'all'/'submission.csv').exists()
    th = json.loads((tmp_path/'runs'/'all'/'model.thresholds.json').read_text())['thresholds']
    assert all(0 <= t <= 1 for t in th)

class Interrupt(Callback):
    "Simulate Ctrl-C after the checkpoint of training epoch `at` of stage `stage`"
    order = Checkpoint.order + 1
    def __init__(self, at=0): self.at, self.calls = at, 0
    def after_epoch(self):
        if getattr(self.learn, 'lr_finder', None) is None and self.training is False:
            self.calls += 1
            if self.calls > self.at: raise KeyboardInterrupt

def _weights(run): return load_learner(run/'model.pkl', cpu=True).model.state_dict()

@pytest.mark.parametrize('pretrained', [False, True])
def test_resume_is_exact(tmp_path, pretrained):
    d = fake_hpa(tmp_path/'d', n=24, n_test=4)
    kw = dict(size=32, bs=8, epochs=1 if pretrained else 2, lr=1e-3, arch='resnet18', num_workers=0, tta='none', features=pretrained)
    if pretrained:                                   # a local weights file: fine-tuning, two stages
        torch.save(resnet18(weights=None).state_dict(), tmp_path/'w.pth'); kw['weights'] = str(tmp_path/'w.pth')
    full = run_training(d, out=tmp_path/'runs', name='full', **kw)
    with pytest.raises(KeyboardInterrupt): run_training(d, out=tmp_path/'runs', name='cut', cbs=[Interrupt(at=0)], **kw)
    cut = tmp_path/'runs'/'cut'
    assert (cut/'checkpoint.pth').exists() and not (cut/'model.pkl').exists()
    res = run_training(None, out=tmp_path/'runs', name='cut', resume=True)
    a, b = _weights(tmp_path/'runs'/'full'), _weights(cut)
    assert all(torch.equal(a[k], b[k]) for k in a), 'resumed weights differ'
    assert res['valid'] == full['valid']
    assert (cut/'submission.csv').read_text() == (tmp_path/'runs'/'full'/'submission.csv').read_text()
    assert len(res['config']) and not (cut/'checkpoint.pth').exists()

def test_resume_nothing(tmp_path):
    with pytest.raises(HpaConfigError, match='nothing to resume'): run_training(None, out=tmp_path, name='x', resume=True)

def test_predict_bad_sample_submission(tmp_path, cli_here):
    d = fake_hpa(tmp_path/'d', n=4, n_test=2)
    (tmp_path/'ss.csv').write_text('Name,Predicted\na,0\n')
    r = cli_here(['hpa-predict', 'model.pkl', 'd/test', '--sample-submission', 'ss.csv'], tmp_path)
    assert r.returncode == 1 and 'ss.csv: no Id column' in r.stderr, r.stderr[-2000:]
    r = cli_here(['hpa-predict', 'model.pkl', 'd/test', '--tta', 'bogus'], tmp_path)
    assert r.returncode == 2 and '--tta must be one of' in r.stderr

def test_several_processes_without_accelerate(monkeypatch):
    "One process never needs accelerate; a launch on several says what to install, before any work"
    import sys
    from hpa_fastai.distributed import distributed_state
    monkeypatch.setitem(sys.modules, 'accelerate', None)              # as if not installed
    monkeypatch.delenv('WORLD_SIZE', raising=False)
    assert distributed_state() is None
    monkeypatch.setenv('WORLD_SIZE', '2')
    with pytest.raises(HpaConfigError, match=r'launched on 2 processes.*pip install "hpa_fastai\[distributed\]"'):
        distributed_state()

def test_two_processes(tmp_path):
    "Data-parallel training on 2 CPU processes (gloo): one run folder, written by rank 0, each validation sample scored once"
    import sys
    pytest.importorskip('accelerate')
    d = fake_hpa(tmp_path/'d', n=24, n_test=4)
    exe = str(Path(sys.executable).parent/'hpa-train')          # the real script (a pyenv shim is a shell script)
    r = cli(['accelerate', 'launch', '--multi_gpu', '--num_processes', '2', '--num_machines', '1', '--mixed_precision', 'no',
             '--dynamo_backend', 'no', exe, '--path', 'd', '--out', 'runs', '--size', '32', '--bs', '4', '--epochs', '1',
             '--lr', '1e-3', '--arch', 'resnet18', '--num-workers', '0', '--tta', 'none'], tmp_path)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    runs = list((tmp_path/'runs').iterdir())
    assert len(runs) == 1, runs                                   # one folder, named by rank 0
    m = json.loads((runs[0]/'metrics.json').read_text())
    assert m['processes'] == 2 and m['valid']['n'] == 12          # the whole validation split, no padded duplicates
    assert r.stdout.count('trained in') == 1 and 'on 2 processes' in r.stdout

def test_read_only_input(tmp_path):
    "Kaggle's input folder is read-only: features are cached per user, the run goes to --out"
    import os, shutil, stat
    if not shutil.which('setpriv'): pytest.skip('setpriv not found: cannot drop root’s permission override')
    d = fake_hpa(tmp_path/'input', n=16, n_test=2)
    for p in [d, *d.rglob('*')]: p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    env = dict(os.environ, HPA_CACHE=str(tmp_path/'cache'))
    r = subprocess.run(['setpriv', '--bounding-set=-dac_override,-dac_read_search', '--inh-caps=-dac_override,-dac_read_search',
                        'hpa-train', '--path', 'input', '--name', 'r', *TINY, '--lr', '1e-3'],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-2000:])
    assert (tmp_path/'runs'/'r'/'submission.csv').exists() and list((tmp_path/'cache').rglob('*.parquet'))
    assert not (tmp_path/'features_cache').exists()

def test_train_on_a_packed_store(tmp_path):
    "A packed store (here packed by the run) trains, evaluates and predicts; the next run finds and uses it"
    d = fake_hpa(tmp_path/'d', n=24, n_test=4)
    kw = dict(out=tmp_path/'runs', size=32, bs=8, epochs=1, lr=1e-3, arch='resnet18', num_workers=0, tta='mean')
    m = run_training(d, name='packed', store=True, **kw)
    assert (tmp_path/'runs'/'packed'/'submission.csv').exists() and m['valid']['n'] > 0
    again = run_training(d, name='auto', **kw)                      # a complete store is used without asking
    assert again['valid'] == m['valid']

def test_files_get_a_plain_write_mode(tmp_path):
    import os
    from hpa_fastai.files import write_text
    umask = os.umask(0o022)
    try: write_text(tmp_path/'a.txt', 'x')
    finally: os.umask(umask)
    assert (tmp_path/'a.txt').stat().st_mode & 0o777 == 0o644

def test_resume_a_finished_run(tmp_path):
    d = fake_hpa(tmp_path/'d', n=16)
    run_training(d, out=tmp_path/'runs', name='done', size=32, bs=8, epochs=1, lr=1e-3, arch='resnet18', num_workers=0, tta='none', features=False)
    with pytest.raises(HpaConfigError, match='already finished'): run_training(None, out=tmp_path/'runs', name='done', resume=True)
