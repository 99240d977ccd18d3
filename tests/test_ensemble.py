"""The winners' recipe on tiny data: k-fold ensembles (OOF thresholds, resume, hpa-predict on the run folder), averaged
weights, and training on crops of full-size images."""
import json, os, subprocess, sys, warnings, numpy as np, pandas as pd, pytest, torch, torch.nn as nn
from pathlib import Path
from fastai.vision.all import Learner, DataLoaders, MSELossFlat, Callback, set_seed, TensorImage
from hpa_fastai.test_utils import fake_hpa
from hpa_fastai.averaging import WeightAveraging, recompute_bn
from hpa_fastai.dataloaders import hpa_dataloaders, RandomCropBatch
from hpa_fastai.inference import crop_grid, tta_probs, dihedral_tta
from hpa_fastai.learner import hpa_learner
from hpa_fastai.train import TrainConfig
from hpa_fastai.ensemble import train_folds, load_ensemble, combine_folds
from hpa_fastai.core import HpaConfigError, HpaDataError

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(size=32, bs=4, lr=1e-3, num_workers=0)

@pytest.fixture(scope='module')
def data(tmp_path_factory): return fake_hpa(tmp_path_factory.mktemp('ens')/'d', n=24, size=32, n_test=4)

def _cli(args, cwd):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout

def test_weight_averaging_is_the_mean_of_the_last_epochs():
    set_seed(0)
    x = torch.randn(64, 4); y = x.sum(1, keepdim=True)
    dls = DataLoaders.from_dsets(list(zip(x, y)), list(zip(x[:16], y[:16])), bs=16, device='cpu')
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1))
    class Snap(Callback):
        order = WeightAveraging.order - 1
        def before_fit(self): self.ws = []
        def after_epoch(self): self.ws.append({k: v.detach().clone() for k, v in self.learn.model.state_dict().items()})
    learn = Learner(dls, model, loss_func=MSELossFlat(), cbs=[Snap(), WeightAveraging(2)])
    with learn.no_bar(), learn.no_logging(): learn.fit(4, 1e-2)
    for k in ('0.weight', '3.bias'):
        torch.testing.assert_close(learn.model.state_dict()[k], (learn.snap.ws[-1][k] + learn.snap.ws[-2][k]) / 2)
    # the batch-norm statistics are the averaged weights' own, not the last epoch's
    assert not torch.allclose(learn.model[1].running_mean, learn.snap.ws[-1]['1.running_mean'])
    h = learn.model[0](x).detach()
    torch.testing.assert_close(learn.model[1].running_mean, h.mean(0), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match='n_epochs'): WeightAveraging(0)

def test_recompute_bn_restores_mode_and_momentum():
    m = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)).eval()
    assert recompute_bn(m, [(torch.randn(8, 3),)] * 3, max_batches=2) == 2
    assert not m.training and m[1].momentum == 0.1

@pytest.mark.parametrize('store', [False, True])
def test_crops_train_only_from_pngs_and_store(tmp_path, store):
    d = fake_hpa(tmp_path/'d', n=12, size=64)
    dls = hpa_dataloaders(d, size=64, bs=4, crop=24, num_workers=0, store=store, dedup=False)
    xb = dls.one_batch()[0]
    assert xb.shape == (4, 4, 24, 24) and isinstance(xb, TensorImage)
    assert dls.valid.one_batch()[0].shape[-2:] == (64, 64)
    with pytest.raises(ValueError, match='larger than'): RandomCropBatch(80)(TensorImage(torch.zeros(2, 4, 64, 64)), split_idx=0)

def test_crop_grid_tta(data):
    assert [tuple(c.shape[-2:]) for c in crop_grid(torch.zeros(1, 4, 32, 48), 16, 2)] == [(16, 16)] * 4
    assert crop_grid(torch.arange(25.).view(1, 1, 5, 5), 3, 1)[0][0, 0, 0, 0] == 6.       # the centre crop
    dls = hpa_dataloaders(data, size=32, bs=4, crop=16, num_workers=0, dedup=False)
    learn = hpa_learner(dls, arch='small_cnn', pretrained=False)
    with learn.no_bar():
        p, t = tta_probs(learn, tta='max', crop=16, grid=2)
        p1 = dihedral_tta(learn, agg='max', n=8, crop=16, grid=1)[0]
    assert p.shape == t.shape == (len(dls.valid_ds), 28) and not torch.allclose(p, p1)
    with pytest.raises(ValueError, match='larger than'), learn.no_bar(): tta_probs(learn, crop=48)

def test_settings_checked():
    errs = '\n'.join(TrainConfig(size=32, crop=48, crop_grid=0, average=20, folds=1, fold=3).problems())
    for msg in ('--crop must be between 16 and --size 32', '--crop-grid must be at least 1', '--average must be between 0',
                '--folds must be 2 or more', '--fold must be between 0'):
        assert msg in errs
    with pytest.raises(ValueError, match="agg must be"): combine_folds([np.zeros((1, 28))], 'median')

def test_hpa_train_folds_end_to_end_and_hpa_predict_reproduces(data, tmp_path, cli_here):
    "`hpa-train --folds 3` with crops and averaged weights from a fresh folder; `hpa-predict RUN` gives its submission"
    out = _cli(['hpa-train', '--path', str(data), '--folds', '3', '--size', '32', '--crop', '24', '--average', '1',
                '--epochs', '1', '--bs', '4', '--lr', '1e-3', '--num-workers', '0', '--name', 'ens', '--ensemble', 'max'],
               tmp_path)
    run = tmp_path/'runs'/'ens'
    assert 'out-of-fold macro-F1' in out and 'weights averaged over the last 1 epochs' in out
    oof = pd.read_csv(run/'oof.csv')
    assert sorted(oof.Id) == sorted(pd.read_csv(data/'train.csv').Id) and sorted(oof.fold.unique()) == [0, 1, 2]
    m = json.loads((run/'metrics.json').read_text())
    assert m['folds'] == 3 and m['ensemble'] == 'max' and len(m['oof']['f1_thresholds_ci95']) == 2
    assert {'all_positive', 'frequency', 'features_only'} <= set(m['oof']['baselines'])
    assert all((run/f'fold-{i}'/'model.pth').exists() for i in range(3))
    r = cli_here(['hpa-predict', str(run), str(data/'test'), '--sample-submission', str(data/'sample_submission.csv'),
                  '--out', 'again.csv'], tmp_path)                # the installed script, in this process
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path/'again.csv'), pd.read_csv(run/'submission.csv'))
    P, ids = load_ensemble(run).predict(data/'test')
    assert P.shape == (4, 28) and ids == sorted(ids)
    r = cli_here(['hpa-predict', str(run), str(data/'test'), '--tta', 'max'], tmp_path)
    assert r.returncode != 0 and 'is an ensemble' in r.stderr + r.stdout

class _Stop(Exception): pass

def test_train_folds_resume_continues_the_stopped_fold(data, tmp_path):
    class StopFold1(Callback):
        def before_epoch(self):
            if Path(self.learn.path).name == 'fold-1' and self.epoch == 1: raise _Stop('interrupted')
    kw = dict(out=tmp_path, name='e', epochs=2, tta='none', **TINY)
    with warnings.catch_warnings(), pytest.raises(_Stop):
        warnings.simplefilter('ignore'); train_folds(data, folds=3, cbs=[StopFold1()], **kw)
    run = tmp_path/'e'
    assert (run/'fold-0'/'metrics.json').exists() and (run/'fold-1'/'checkpoint.pth').exists()
    with pytest.raises(HpaDataError, match='not finished'): load_ensemble(run)
    t0 = (run/'fold-0'/'model.pth').stat().st_mtime_ns
    with warnings.catch_warnings():
        warnings.simplefilter('ignore'); m = train_folds(None, out=tmp_path, name='e', resume=True)
    assert (run/'fold-0'/'model.pth').stat().st_mtime_ns == t0                      # the finished fold is kept
    assert len(json.loads((run/'fold-1'/'metrics.json').read_text())['history']) == 2  # the stopped one finished
    assert (run/'submission.csv').exists() and m['oof']['n'] == 24
    with pytest.raises(HpaConfigError, match='already finished'): train_folds(None, out=tmp_path, name='e', resume=True)
