"The learner's life cycle on CPU in seconds: tiny images, random or test-written weights, no download."
import urllib.error, numpy as np, pytest, torch, torch.nn as nn
from pathlib import Path
from fastai.vision.all import resnet18, resnet34, load_learner
import hpa_fastai.learner as L_
from hpa_fastai.core import HPA_CLASSES
from hpa_fastai.data import hpa_dataloaders, hpa_test_dl, find_ids, open_rgby
from hpa_fastai.learner import *
from hpa_fastai.synth import make_synthetic_hpa

@pytest.fixture(scope='module')
def syn(tmp_path_factory):
    return make_synthetic_hpa(tmp_path_factory.mktemp('syn'), n_train=20, n_test=3, size=64, seed=2, progress=False)

def test_offline_pretrained_error_says_how(monkeypatch, tmp_path):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    def no_net(*a, **k): raise urllib.error.URLError('no network')
    monkeypatch.setattr(torch.hub, 'load_state_dict_from_url', no_net)
    with pytest.raises(PretrainedWeightsError) as e: load_arch(resnet34, pretrained=True)
    msg = str(e.value)
    assert 'resnet34-b627a593.pth' in msg and 'weights=' in msg and 'pretrained=False' in msg

def test_weights_file_and_fourth_channel(syn, tmp_path):
    ref = resnet34(weights=None); torch.save(ref.state_dict(), tmp_path/'imagenet.pth')
    dls = hpa_dataloaders(syn, size=32, bs=4, num_workers=0)
    for init, idx in [('blue', 2), ('red', 0)]:
        learn = hpa_learner(dls, weights=tmp_path/'imagenet.pth', fourth_channel=init)
        w = learn.model.body[0].weight
        assert torch.equal(w[:, :3], ref.conv1.weight) and torch.equal(w[:, 3], ref.conv1.weight[:, idx])
        assert torch.equal(learn.model.body[4][0].conv1.weight, ref.layer1[0].conv1.weight)
        assert learn.opt.frozen_idx == 2                       # pretrained: head-only training first, as vision_learner
    learn.fine_tune(1, 1e-3)

@pytest.mark.parametrize('features', [False, True])
def test_life_cycle(syn, tmp_path, features):
    dls = hpa_dataloaders(syn, size=32, bs=4, features=features, num_workers=0, feature_workers=0)
    learn = hpa_learner(dls, arch=resnet18, pretrained=False)
    assert (learn.model.n_features == 10) == features
    learn.lr_find(num_it=8, show_plot=False)
    learn.fit_one_cycle(1, 1e-3)
    learn.export(tmp_path/'m.pkl')
    learn2 = load_learner(tmp_path/'m.pkl')
    assert learn2.dls.vocab == HPA_CLASSES
    stem = syn/'test'/find_ids(syn/'test')[0]
    names, dec, probs = learn2.predict(stem)
    assert probs.shape == (28,) and ((probs >= 0) & (probs <= 1)).all() and len(names) == int(dec.sum())
    arr = open_rgby(stem.parent, stem.name)                  # an array in: image resized, features computed
    assert torch.allclose(learn2.predict(arr)[2], probs, atol=1e-5)
    tdl = hpa_test_dl(learn2.dls, syn/'test')
    p, _ = learn2.get_preds(dl=tdl)
    assert p.shape == (3, 28)

def test_rgb_channels_and_focal(syn):
    dls = hpa_dataloaders(syn, size=32, bs=4, channels='rgb', num_workers=0)
    learn = hpa_learner(dls, arch=resnet18, pretrained=False, loss='focal')
    assert learn.model.body[0].in_channels == 3
    learn.fit_clr(1, 1e-3, cycle_len=1)
    p, t = learn.get_preds()
    assert ((p >= 0) & (p <= 1)).all() and p.shape == t.shape

def test_bad_options(syn):
    dls = hpa_dataloaders(syn, size=32, bs=4, num_workers=0)
    with pytest.raises(ValueError, match='fourth_channel'): hpa_learner(dls, pretrained=False, fourth_channel='green')
    with pytest.raises(ValueError, match='loss'): hpa_learner(dls, pretrained=False, loss='mse')

def test_f1_matches_sklearn():
    from sklearn.metrics import f1_score
    rng = np.random.default_rng(1)
    for _ in range(50):
        n = int(rng.integers(1, 40)); P, T = rng.random((n, 28)), rng.random((n, 28)) < rng.random()
        th = rng.random(28) if rng.random() < 0.5 else float(rng.random())
        assert abs(macro_f1(P, T, th) - f1_score(T, P > th, average='macro', zero_division=0)) < 1e-12
