"Every input checked before any work: each refusal names the file or Id; lr_find, features and packs never start."
import os, random, shutil, subprocess, numpy as np, pandas as pd, pytest, torch
from pathlib import Path
from fastai.vision.all import MixUp, CutMix, set_seed, resnet18
from hpa_fastai.all import *
from hpa_fastai.test_utils import fake_hpa

TINY = ['--size', '32', '--bs', '4', '--epochs', '1', '--arch', 'resnet18', '--num-workers', '0', '--tta', 'none']
NO_DAC = ['setpriv', '--bounding-set=-dac_override,-dac_read_search', '--inh-caps=-dac_override,-dac_read_search']

def cli(args, cwd, prefix=()):
    return subprocess.run([*prefix, *args], cwd=cwd, capture_output=True, text=True, timeout=600)

def assert_no_work(root, out=''):
    "Nothing computed under `root`: no lr_find plot, checkpoint or model, no feature / hash / store cache, no epoch"
    run_files = ('lr_find.png', 'checkpoint.pth', 'model.pkl', 'config.json')
    made = [p.name for p in Path(root).rglob('*') if p.name in run_files]
    assert not made, made
    assert not list(Path(root).rglob('features_cache')) and not list(Path(root).rglob('*.parquet'))
    assert 'epoch' not in out and 'train_loss' not in out and 'lr_find' not in out

def read_only(*folders):
    for d in folders:
        for p in [d, *d.rglob('*')]: p.chmod(p.stat().st_mode & ~0o222)

# --- hpa-train: the test folder, the external folder, the weights, the output folder, the disk space

def test_missing_test_file_refused_before_training(tmp_path, cli_here):
    "A test Id of sample_submission.csv without its files: exit 1 before lr_find, naming the CSV, the folder and the Id"
    d = fake_hpa(tmp_path/'d', n=16, n_test=3)
    (d/'test'/'00000001-test_green.png').unlink()
    r = cli_here(['hpa-train', '--path', 'd', '--name', 'r', *TINY], tmp_path)          # no --lr: training would run lr_find
    assert r.returncode == 1, (r.stdout[-2000:], r.stderr[-2000:])
    assert 'sample_submission.csv lists samples whose files are missing' in r.stderr
    assert '00000001-test (green)' in r.stderr and str(Path('d')/'test') in r.stderr and 'Traceback' not in r.stderr
    assert_no_work(tmp_path, r.stdout); assert not (tmp_path/'runs').exists()

def test_sample_submission_without_test_folder_is_said(tmp_path, capsys):
    d = fake_hpa(tmp_path/'d', n=16, n_test=2); shutil.rmtree(d/'test')
    check_inputs(d, TrainConfig(size=32, bs=4))
    assert 'no submission will be written' in capsys.readouterr().out

def test_external_folder_checked_against_its_csv(tmp_path):
    d, e = fake_hpa(tmp_path/'d', n=16), fake_hpa(tmp_path/'e', n=4)
    ids = [f'ext-{i}' for i in range(4)]
    for old, new in zip(pd.read_csv(e/'train.csv').Id, ids):
        for f in (e/'train').glob(f'{old}_*'): f.rename(f.with_name(f.name.replace(old, new)))
    pd.DataFrame({'Id': ids + ['ext-lost'], 'Target': '1'}).to_csv(tmp_path/'ext.csv', index=False)
    kw = dict(out=tmp_path/'runs', name='r', size=32, bs=4, epochs=1, arch='resnet18', num_workers=0, tta='none')
    with pytest.raises(HpaDataError, match=r'ext\.csv lists samples whose files are missing: .*ext-lost \(red\)'):
        run_training(d, external=e/'train', external_csv=tmp_path/'ext.csv', **kw)
    with pytest.raises(HpaDataError, match='need their labels CSV'): run_training(d, external=e/'train', **kw)
    assert_no_work(tmp_path); assert not (tmp_path/'runs').exists()

def test_bad_weights_refused_before_training(tmp_path):
    "A weights file that is no state dict, or one of another architecture: refused naming it, before any feature"
    d = fake_hpa(tmp_path/'d', n=16)
    (tmp_path/'w.txt').write_text('not weights')
    torch.save(resnet18(weights=None).state_dict(), tmp_path/'r18.pth')
    kw = dict(out=tmp_path/'runs', size=32, bs=4, epochs=1, num_workers=0)
    with pytest.raises(HpaDataError, match=f'--weights {tmp_path/"w.txt"}: not a state-dict file'):
        run_training(d, weights=str(tmp_path/'w.txt'), **kw)
    with pytest.raises(PretrainedWeightsError, match='r18.pth does not fit resnet34'):
        run_training(d, weights=str(tmp_path/'r18.pth'), **kw)
    assert_no_work(tmp_path); assert not (tmp_path/'runs').exists()

def test_unwritable_out_refused_before_training(tmp_path):
    "--out where no folder can be made (here below a file; read-only folders: the hpa-features test below)"
    d = fake_hpa(tmp_path/'d', n=16); (tmp_path/'a_file').write_text('x')
    with pytest.raises(HpaConfigError, match='--out .*a_file/runs: cannot write in .*a_file/runs'):
        run_training(d, out=tmp_path/'a_file'/'runs', name='r', size=32, bs=4, epochs=1, num_workers=0)
    assert_no_work(tmp_path)

def test_no_space_for_the_pack_refused_before_work(tmp_path, monkeypatch):
    d = fake_hpa(tmp_path/'d', n=16)
    monkeypatch.setattr(shutil, 'disk_usage', lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(HpaDataError, match='packing needs .* but only 0.0 MB is free'):
        run_training(d, out=tmp_path/'runs', name='r', store=True, size=32, bs=4, epochs=1, num_workers=0)
    assert_no_work(tmp_path); assert not (tmp_path/'runs').exists()

def test_features_read_only_out_refused_before_computing(tmp_path):
    "hpa-features --out in a read-only folder: exit 2 at once, nothing computed or cached"
    if not shutil.which('setpriv'): pytest.skip('setpriv not found: cannot drop root’s permission override')
    fake_hpa(tmp_path/'d', n=16); (tmp_path/'ro').mkdir(); read_only(tmp_path/'ro')
    args = ['hpa-features', 'd/train', '--out', 'ro/f.csv', '--n-workers', '0', '--cache-dir', 'cache']
    r = cli(args, tmp_path, NO_DAC)
    assert r.returncode == 2 and '--out: cannot write in ro (read-only' in r.stderr, r.stderr[-2000:]
    assert not (tmp_path/'cache').exists() and not list(tmp_path.rglob('*.parquet'))

# --- hpa-dedup on a Kaggle folder without test images

@pytest.mark.parametrize('test', ['empty', 'missing'])
def test_dedup_hashes_train_alone(tmp_path, test, capsys):
    d = fake_hpa(tmp_path/'d', n=8)
    if test == 'empty': (d/'test').mkdir()
    dedup_data(d, out=tmp_path/'groups.csv', n_workers=0, figure=False)
    said = 'holds no samples' if test == 'empty' else 'not found'
    assert f'test: {d/"test"} {said}; hashing train/ alone' in capsys.readouterr().out
    g = pd.read_csv(tmp_path/'groups.csv')
    assert len(g) == 8 and set(g.split) == {'train', 'valid'}
    assert 'hashing train/ alone' in (tmp_path/'groups_report.txt').read_text()

# --- fastai's MixUp on the fused learner

def test_mixup_is_feature_mixup(tmp_path, capsys):
    "cbs=MixUp() mixes images, features and targets with one λ: the same run, to the bit, as FeatureMixUp at one seed"
    d = fake_hpa(tmp_path/'d', n=12)
    ft = pd.DataFrame(np.random.default_rng(0).random((12, len(FEATURE_NAMES))), columns=FEATURE_NAMES)
    ft.insert(0, 'Id', pd.read_csv(d/'train.csv').Id)                   # a ready feature table: nothing to compute
    dls = hpa_dataloaders(d, size=32, bs=4, features=ft, num_workers=0, valid_pct=0.25, dedup=False)
    def run(cb):
        set_seed(0); learn = hpa_learner(dls, arch='small_cnn', pretrained=False, cbs=cb)
        set_seed(1); dls.train.rng = random.Random(1)              # the loader's own shuffling generator too
        with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3)
        return [l.item() for l in learn.recorder.losses], learn.model.state_dict(), learn
    l_fm, w_fm, _ = run(FeatureMixUp(0.4))
    l_mu, w_mu, learn = run(MixUp(0.4))
    assert "fastai's MixUp on (image, features) batches" in capsys.readouterr().out
    assert l_mu == l_fm and all(torch.equal(w_fm[k], w_mu[k]) for k in w_fm)
    assert [type(c) for c in learn.cbs if isinstance(c, MixUp)] == [FeatureMixUp]      # the learner's own MixUp, turned
    with pytest.raises(HpaConfigError, match='use FeatureMixUp'):
        hpa_learner(dls, arch='small_cnn', pretrained=False, cbs=CutMix()).fit(1, 1e-3)

# --- the small ones

def test_fit_thresholds_no_rows():
    for method in ('f1', 'freq', 'global'):
        with pytest.raises(HpaDataError, match=r'no samples to fit thresholds on \(probabilities of shape \(0, 28\)\)'):
            fit_thresholds(np.zeros((0, 28)), np.zeros((0, 28)), method)

def test_macro_f1_shapes():
    with pytest.raises(ValueError, match=r'probs of shape \(3, 28\) and targets of shape \(4, 28\)'):
        macro_f1(np.zeros((3, 28)), np.zeros((4, 28)))
    with pytest.raises(ValueError, match=r'thresholds of shape \(27,\) do not fit probs of shape \(3, 28\)'):
        f1_per_class(np.zeros((3, 28)), np.zeros((3, 28)), np.full(27, .5))
    assert macro_f1(np.eye(3, 28), np.eye(3, 28), np.full((3, 28), .5)) == pytest.approx(3 / 28)   # per-sample rows

@pytest.mark.parametrize('text,msg', [
    ('Id,Target\n\na1,1\n\nb2,5 x\n', 'line 5, Id b2'),
    ('Id,Target\n\n\na1,1\n   \n,2\n', 'empty Id on line 6'),
    ('Id,Target\na,1\n\nb,2\n\na,3\n', "duplicate Id 'a' on lines [2, 6]"),
    ('Id,Target\n"a\nb",1\nc,x\n', 'line 4, Id c'),                     # a quoted field over two lines
])
def test_read_labels_true_line(tmp_path, text, msg):
    (tmp_path/'t.csv').write_text(text)
    with pytest.raises(HpaDataError, match=msg.replace('[', r'\[')): read_labels(tmp_path/'t.csv')
