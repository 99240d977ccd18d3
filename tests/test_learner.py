"The learner's life cycle on CPU in seconds: tiny images, random or test-written weights, no download."
import re, urllib.error, numpy as np, pytest, torch, torch.nn as nn
from pathlib import Path
from fastai.vision.all import resnet18, resnet34, load_learner
from hpa_fastai.core import HPA_CLASSES
from hpa_fastai.dataloaders import hpa_dataloaders
from hpa_fastai.data import hpa_test_dl, find_ids, open_rgby
from hpa_fastai.all import *
import hpa_fastai.learner as L_
from hpa_fastai.synth import make_synthetic_hpa

@pytest.fixture(scope='module')
def syn(tmp_path_factory):
    return make_synthetic_hpa(tmp_path_factory.mktemp('syn'), n_train=20, n_test=3, size=64, seed=2, progress=False)

def test_offline_pretrained_error_says_how(monkeypatch, tmp_path):
    _offline(monkeypatch, tmp_path)
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

# --- Other architectures: torchvision constructors and names, timm names -------------------------------------------
import sys, types, torchvision
from hpa_fastai.test_utils import fake_hpa
from hpa_fastai.dataloaders import hpa_dataloaders as hpa_dataloaders_features
from fastai.vision.all import TimmBody

FOUR = ['resnet18', 'densenet121', 'efficientnet_b0', 'convnext_tiny']
YELLOW = dict(resnet18='blue', densenet121='red', efficientnet_b0='mean', convnext_tiny='zero')   # a strategy each
N_FEATURES = dict(resnet18=512, densenet121=1024, efficientnet_b0=1280, convnext_tiny=768)

@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    "8 fused samples at 32 px, batches of 2"
    return hpa_dataloaders_features(fake_hpa(tmp_path_factory.mktemp('tiny'), n=8, size=32), size=32, bs=2, features=True,
                                    num_workers=0, feature_workers=0)

@pytest.fixture
def one_thread():
    "One torch thread: on a small CPU shared with other jobs, two OpenMP threads spin against each other (several times slower)"
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

def _stem(model): return next(l for l in model.body.modules() if isinstance(l, nn.Conv2d))

def _check_yellow(w, init):
    "The 4th (yellow) filter of a 4-channel stem is what `init` says"
    assert w.shape[1] == 4
    want = {'zero': torch.zeros_like(w[:, 0]), 'blue': w[:, 2], 'red': w[:, 0], 'mean': w[:, :3].mean(1)}[init]
    assert torch.equal(w[:, 3], want)

def _check_groups(model):
    "Three parameter groups holding every parameter exactly once"
    groups = hpa_splitter(model)
    ids = [id(p) for g in groups for p in g]
    assert len(groups) == 3 and all(len(g) for g in groups)
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))

def _offline(monkeypatch, tmp_path):
    "No network: torchvision's download raises URLError, wherever it is looked up"
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    def no_net(*a, **k): raise urllib.error.URLError('no network')
    monkeypatch.setattr(torch.hub, 'load_state_dict_from_url', no_net)
    monkeypatch.setattr(torchvision.models._api, 'load_state_dict_from_url', no_net)

@pytest.mark.parametrize('as_name', [False, True], ids=['callable', 'name'])
@pytest.mark.parametrize('name', FOUR)
@pytest.mark.usefixtures('one_thread')
def test_architectures(tiny, name, as_name):
    arch = name if as_name else getattr(torchvision.models, name)
    learn = hpa_learner(tiny, arch=arch, pretrained=False, fourth_channel=YELLOW[name])
    _check_yellow(_stem(learn.model).weight, YELLOW[name])
    assert learn.model.pool[2].num_features == 2 * N_FEATURES[name] and learn.model.n_features == 10
    _check_groups(learn.model)
    if name == 'resnet18' and not as_name:                     # the light one: a real epoch (3 batches of 2, then valid)
        with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3)
        assert np.isfinite(learn.recorder.values[-1][0])
    else:                                                       # the heavy ones on CPU: one forward/backward on 2 samples
        xb, fb, yb = tiny.one_batch()
        loss = learn.loss_func(learn.model(xb, fb), yb); loss.backward()
        assert torch.isfinite(loss) and _stem(learn.model).weight.grad.abs().sum() > 0

def test_resolve_arch_names():
    for n in FOUR: assert resolve_arch(n) is getattr(torchvision.models, n) and resolve_arch(n.upper()) is resolve_arch(n)
    assert resolve_arch(resnet34) is resnet34 and set(FOUR) <= set(known_archs())
    with pytest.raises(ValueError) as e: resolve_arch('densenet12')
    msg = str(e.value)
    assert "did you mean 'densenet121'" in msg and 'known_archs()' in msg and "'timm/<name>'" in msg
    with pytest.raises(ValueError, match='not a CNN'): resolve_arch('vit_b_16')
    with pytest.raises(TypeError, match='constructor'): resolve_arch(resnet18())
    for n in FOUR:                                             # the weights enum found by name, for every architecture
        assert Path(L_._tv_weights(resolve_arch(n)).url).name.startswith(n.split('_')[0])

def test_body_must_end_in_a_feature_map():
    with pytest.raises(ValueError, match='feature map'): HpaModel(nn.Sequential(nn.Conv2d(4, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()))

@pytest.mark.usefixtures('one_thread')
def test_densenet_weights_file(tiny, tmp_path):
    ref = torchvision.models.densenet121(weights=None); sd = ref.state_dict()
    torch.save(sd, tmp_path/'dn.pth')
    learn = hpa_learner(tiny, arch='densenet121', weights=tmp_path/'dn.pth', fourth_channel='red')
    w, w0 = learn.model.body[0].weight, ref.features.conv0.weight
    assert torch.equal(w[:, :3], w0) and torch.equal(w[:, 3], w0[:, 0])
    assert torch.equal(learn.model.body[4].denselayer1.conv1.weight, ref.features.denseblock1.denselayer1.conv1.weight)
    assert learn.opt.frozen_idx == 2
    old = {re.sub(r'(denselayer\d+\.(?:norm|relu|conv))([12])\.', r'\1.\2.', k): v for k, v in sd.items()
           if not k.endswith('num_batches_tracked')}             # torchvision's own download: old key names, no batch counts
    assert 'features.denseblock1.denselayer1.norm.1.weight' in old
    torch.save(old, tmp_path/'dn_old.pth')
    m = load_arch(torchvision.models.densenet121, weights=tmp_path/'dn_old.pth')
    assert torch.equal(m.features.denseblock4.denselayer16.conv2.weight, ref.features.denseblock4.denselayer16.conv2.weight)
    with pytest.raises(PretrainedWeightsError, match='does not fit efficientnet_b0'): load_arch('efficientnet_b0', weights=tmp_path/'dn.pth')

@pytest.mark.parametrize('name,file', [('densenet121', 'densenet121-a639ec97.pth'), ('efficientnet_b0', 'efficientnet_b0_rwightman-7f5810bc.pth')])
def test_offline_pretrained_error_other_archs(tiny, monkeypatch, tmp_path, name, file):
    _offline(monkeypatch, tmp_path)
    with pytest.raises(PretrainedWeightsError) as e: hpa_learner(tiny, arch=name, pretrained=True)
    msg = str(e.value)
    assert name in msg and file in msg and str(tmp_path) in msg and 'weights=' in msg and 'pretrained=False' in msg

@pytest.mark.usefixtures('one_thread')
def test_timm_real(tiny):
    pytest.importorskip('timm', reason="timm is not installed (optional: pip install 'hpa_fastai[timm]'); the timm path is checked with a stand-in in test_timm_path_with_stand_in")
    learn = hpa_learner(tiny, arch='timm/resnet18', pretrained=False, fourth_channel='red')
    assert isinstance(learn.model.body, TimmBody) and learn.model.pool[2].num_features == 2 * 512
    _check_yellow(_stem(learn.model).weight, 'red'); _check_groups(learn.model)
    xb, fb, yb = tiny.one_batch()
    learn.loss_func(learn.model(xb, fb), yb).backward()

class _StandInTimmNet(nn.Module):
    "The parts of a timm CNN that hpa_fastai uses: `forward_features`, `reset_classifier`, and `default_cfg` (read by fastai's `TimmBody`)"
    default_cfg = {'pool_size': (1, 1)}
    def __init__(self):
        super().__init__()
        self.num_features = 32
        self.conv_stem, self.bn1 = nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8)
        self.blocks = nn.Sequential(nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU()), nn.Sequential(nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU()))
        self.gamma = nn.Parameter(torch.ones(1))               # held by the model itself, as a ViT's cls_token
        self.classifier = nn.Linear(32, 1000)
    def forward_features(self, x): return self.blocks(self.bn1(self.conv_stem(x))) * self.gamma
    def forward(self, x): return self.classifier(self.forward_features(x).mean((2, 3)))
    def reset_classifier(self, n): self.classifier = nn.Identity()

@pytest.mark.usefixtures('one_thread')
def test_timm_path_with_stand_in(tiny, monkeypatch, tmp_path):
    "resolve → load (random, file, offline) → stem → body → head → groups, with a stand-in `timm` module (the real one may be absent)"
    def create_model(name, pretrained=False):
        if pretrained: raise ConnectionError('no network')
        return _StandInTimmNet()
    monkeypatch.setitem(sys.modules, 'timm', types.SimpleNamespace(create_model=create_model, is_model=lambda n: n.split('.')[0] == 'standin'))
    assert isinstance(resolve_arch('timm/standin'), TimmArch)
    with pytest.raises(ValueError, match='timm has no model'): resolve_arch('timm/nope')
    learn = hpa_learner(tiny, arch='timm/standin', pretrained=False, fourth_channel='mean')
    assert isinstance(learn.model.body, TimmBody) and learn.model.pool[2].num_features == 64
    _check_yellow(_stem(learn.model).weight, 'mean'); _check_groups(learn.model)
    xb, fb, yb = tiny.one_batch()
    learn.loss_func(learn.model(xb, fb), yb).backward()
    ref = _StandInTimmNet(); torch.save(ref.state_dict(), tmp_path/'t.pth')
    learn = hpa_learner(tiny, arch='timm/standin', weights=tmp_path/'t.pth')
    assert torch.equal(_stem(learn.model).weight[:, :3], ref.conv_stem.weight) and learn.opt.frozen_idx == 2
    with pytest.raises(PretrainedWeightsError, match='HF_HOME') as e: load_arch('timm/standin', pretrained=True)
    assert 'weights=' in str(e.value) and 'pretrained=False' in str(e.value)

def test_timm_missing_says_how(monkeypatch):
    monkeypatch.setitem(sys.modules, 'timm', None)             # as if not installed
    with pytest.raises(ImportError, match=r"pip install 'hpa_fastai\[timm\]'"): resolve_arch('timm/resnet18')
