"Interpretation of the multi-label learners: top losses for fused and image-only models, per-class confusion, most confused pairs, Grad-CAM"
import numpy as np, pytest, torch, torch.nn as nn, matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
from types import SimpleNamespace
from fastai.vision.all import Interpretation, resnet18
from hpa_fastai.core import HPA_CLASSES
from hpa_fastai.data import find_ids
from hpa_fastai.dataloaders import hpa_dataloaders
from hpa_fastai.learner import hpa_learner
from hpa_fastai.metrics import f1_per_class
from hpa_fastai.inference import set_thresholds
from hpa_fastai.test_utils import fake_hpa
from hpa_fastai.all import *

@pytest.fixture(scope='module')
def toy(tmp_path_factory):
    "Twelve random 64² samples: fused and image-only learners (untrained: interpretation needs predictions, not good ones)"
    path = fake_hpa(tmp_path_factory.mktemp('interp'), n=12, size=64)
    fused = hpa_dataloaders(path, size=64, bs=4, features=True, num_workers=0, feature_workers=0)
    image = hpa_dataloaders(path, size=64, bs=4, num_workers=0)
    stem = path/'train'/find_ids(path/'train')[0]
    return SimpleNamespace(path=path, stem=stem, fused=hpa_learner(fused, arch=resnet18, pretrained=False),
                           image=hpa_learner(image, arch=resnet18, pretrained=False))

@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close('all')

@pytest.mark.parametrize('kind,n_child', [('fused', 1), ('image', 0)])
def test_plot_top_losses(toy, kind, n_child):
    learn = getattr(toy, kind)
    with learn.no_bar():
        interp = MultiLabelInterpretation.from_learner(learn)
        axs = interp.plot_top_losses(3)
    assert len(axs) == 3
    for ax in axs:
        title = ax.get_title(loc='left')
        assert title.startswith('loss ') and '\ntrue: ' in title and '\npred: ' in title
        assert len(ax.child_axes) == n_child              # the feature bars, for the fused model
    losses = [float(ax.get_title(loc='left').split('\n')[0].split()[1]) for ax in axs]
    assert losses == sorted(losses, reverse=True)

@pytest.mark.parametrize('kind', ['fused', 'image'])
def test_fastai_interpretation_plots(toy, kind):
    "fastai's own `Interpretation` finds the new `plot_top_losses` methods (it raised for the fused model before)"
    learn = getattr(toy, kind)
    with learn.no_bar(): Interpretation.from_learner(learn).plot_top_losses(2)
    assert len(plt.gcf().axes) == 2

def test_losses_match_fastai(toy):
    learn = toy.fused
    with learn.no_bar():
        ours, theirs = MultiLabelInterpretation.from_learner(learn), Interpretation.from_learner(learn)
    assert torch.allclose(ours.losses, theirs.losses, atol=1e-5)

def test_focal_loss(toy):
    "fastai's `from_learner` needs a loss with `reduction`; ours works with the focal loss too"
    learn = hpa_learner(toy.image.dls, arch=resnet18, pretrained=False, loss='focal')
    with learn.no_bar():
        with pytest.raises(TypeError, match='reduction'): Interpretation.from_learner(learn)
        interp = MultiLabelInterpretation.from_learner(learn)
    assert interp.losses.shape == (len(learn.dls.valid_ds),) and torch.isfinite(interp.losses).all()

def test_per_class_confusion_sums(toy):
    learn = toy.fused
    set_thresholds(learn, np.linspace(0.3, 0.7, 28))
    with learn.no_bar(): interp = MultiLabelInterpretation.from_learner(learn)
    n = len(learn.dls.valid_ds)
    df = interp.per_class_confusion()
    assert list(df.columns) == ['class', 'threshold', 'tp', 'fp', 'fn', 'tn', 'precision', 'recall', 'f1', 'support']
    assert (df[['tp', 'fp', 'fn', 'tn']].sum(axis=1) == n).all() and ((df.tp + df.fn) == df.support).all()
    np.testing.assert_allclose(df.threshold, np.linspace(0.3, 0.7, 28), rtol=1e-6)     # the learner's thresholds
    nk = interp.per_class_confusion(keep_top=False)
    np.testing.assert_allclose(nk.f1, f1_per_class(interp.probs, interp.targs, learner_thresholds(learn)))
    axs = interp.plot_per_class_confusion(classes=[0, 'Cytosol', 27], ncols=2)
    assert axs.shape == (2, 2) and sum(ax.get_visible() and ax.axison for ax in axs.flat) == 3
    assert len(interp.plot_per_class_confusion().flat) == 28

def test_class_confusion_random():
    rng = np.random.default_rng(1)
    P, T = rng.random((50, 28)), rng.random((50, 28)) < 0.2
    df = class_confusion(P, T, 0.5, keep_top=False)
    assert (df[['tp', 'fp', 'fn', 'tn']].sum(axis=1) == 50).all()
    assert (df.tp == ((P > 0.5) & T).sum(0)).all() and (df.fp == ((P > 0.5) & ~T).sum(0)).all()

def test_most_confused_handmade():
    "Sample 1: a, predicted a b; 2: a c, predicted b; 3: c, predicted a; 4: b, predicted b"
    P = np.array([[.9, .8, .1], [.2, .7, .3], [.6, .1, .4], [.1, .9, .2]]); T = np.array([[1, 0, 0], [1, 0, 1], [0, 0, 1], [0, 1, 0]])
    np.testing.assert_array_equal(confusion_pairs(P, T), [[0, 2, 0], [0, 0, 0], [1, 1, 0]])
    assert most_confused_pairs(P, T, vocab='abc') == [('a', 'b', 2), ('c', 'a', 1), ('c', 'b', 1)]
    assert most_confused_pairs(P, T, min_val=2, vocab='abc') == [('a', 'b', 2)]
    assert most_confused_pairs(P, T, [.5, .85, .5], keep_top=False, vocab='abc') == [('c', 'a', 1)]
    P28, T28 = np.zeros((4, 28)), np.zeros((4, 28)); P28[:, :3], T28[:, :3] = P, T
    assert most_confused_pairs(P28, T28)[0] == (HPA_CLASSES[0], HPA_CLASSES[1], 2)        # class names by default

def test_most_confused_method(toy):
    learn = toy.fused
    with learn.no_bar(): interp = MultiLabelInterpretation.from_learner(learn)
    res = interp.most_confused(min_val=1, thresholds=0.5)
    assert res == most_confused_pairs(interp.probs, interp.targs, 0.5)
    assert all(a != b and c >= 1 for a, b, c in res) and [c for *_, c in res] == sorted([c for *_, c in res], reverse=True)

@pytest.mark.parametrize('kind', ['fused', 'image'])
def test_grad_cam_shape(toy, kind):
    learn = getattr(toy, kind); training = learn.model.training
    for layer in (None, learn.model.body[-2]):
        cam = grad_cam(learn, toy.stem, 'Nucleoplasm', layer=layer)
        assert cam.shape == (64, 64) and torch.isfinite(cam).all() and (cam >= 0).all() and cam.max() <= 1
    xs = model_inputs(learn, toy.stem)
    assert len(xs) == (2 if kind == 'fused' else 1) and xs[0].shape == (1, 4, 64, 64)
    assert torch.allclose(grad_cam(learn, tuple(t[0] for t in xs), 0), grad_cam(learn, toy.stem, 0), atol=1e-5)
    assert len(show_grad_cam(learn, toy.stem, ['Nucleoplasm', 25])) == 3
    assert learn.model.training == training              # the model's mode is left as it was

class GreenRed(nn.Module):
    "Body: green and red sums over 4×4 patches; class 2 = mean green response, every class + half the red"
    def __init__(self):
        super().__init__()
        conv = nn.Conv2d(4, 2, 4, stride=4)
        with torch.no_grad(): conv.weight.zero_(); conv.bias.zero_(); conv.weight[0, 1] = 1/16; conv.weight[1, 0] = 1/16
        self.body = nn.Sequential(nn.Sequential(conv, nn.ReLU()))
        self.head = nn.Linear(2, 28, bias=False)
        with torch.no_grad(): self.head.weight.zero_(); self.head.weight[2, 0] = 1.; self.head.weight[:, 1] = 0.5
    def forward(self, x): return self.head(self.body(x).mean((2, 3)))

@pytest.mark.parametrize('quadrant', [(0, 0), (0, 1), (1, 0), (1, 1)])
def test_grad_cam_peaks_where_the_evidence_is(quadrant):
    r0, c0 = 32 * quadrant[0], 32 * quadrant[1]
    img = torch.rand(4, 64, 64, generator=torch.Generator().manual_seed(0)) * 0.2
    img[1, r0 + 8:r0 + 24, c0 + 8:c0 + 24] = 1.
    cam = grad_cam(SimpleNamespace(model=GreenRed()), img, 'Nucleoli')
    r, c = divmod(int(cam.argmax()), 64)
    assert (r // 32, c // 32) == quadrant
    q = cam[r0:r0 + 32, c0:c0 + 32].mean()
    assert q > 2 * (cam.sum() - cam[r0:r0 + 32, c0:c0 + 32].sum()) / (64 * 64 - 32 * 32)

def test_short_names():
    assert set(SHORT_NAMES) == set(HPA_CLASSES) and all(len(s) <= 14 for s in SHORT_NAMES.values())
    assert short_names(['Endoplasmic reticulum', 'Microtubule organizing center', 'Cytosol', 'Nucleoli']) == 'ER; MTOC; Cytosol +1'
    assert class_index('Cytosol') == 25 and class_index(3) == 3
    with pytest.raises(ValueError, match='not a class'): class_index('Nucleus')
