"The synthetic generator writes the Kaggle layout, deterministically, and refuses to clobber."
import numpy as np, pandas as pd, pytest
from hpa_fastai.core import *
from hpa_fastai.data import hpa_dataloaders, find_ids, open_rgby
from hpa_fastai.synth import *
from hpa_fastai.synth import _cells, _landmarks

def test_layout_and_determinism(tmp_path):
    a = make_synthetic_hpa(tmp_path/'a', n_train=8, n_test=3, size=64, seed=5)
    b = make_synthetic_hpa(tmp_path/'b', n_train=8, n_test=3, size=64, seed=5)
    tr, ss, tl = read_labels(a/'train.csv'), pd.read_csv(a/'sample_submission.csv'), read_labels(a/'test_labels.csv')
    assert len(tr) == 8 and list(ss.columns) == ['Id', 'Predicted'] and list(ss.Id) == list(tl.Id) and len(ss) == 3
    assert sorted(find_ids(a/'train')) == sorted(tr.Id) and sorted(find_ids(a/'test')) == sorted(ss.Id)
    assert all(len(i) == 36 and i.count('-') == 4 for i in tr.Id)           # uuid-like, as Kaggle's
    x = open_rgby(a/'train', tr.Id[0]); y = open_rgby(b/'train', tr.Id[0])
    assert x.shape == (64, 64, 4) and x.dtype == np.uint8 and (x == y).all()
    c = make_synthetic_hpa(tmp_path/'c', n_train=8, n_test=3, size=64, seed=6)
    assert list(read_labels(c/'train.csv').Id) != list(tr.Id)

def test_refuses_nonempty(tmp_path):
    (tmp_path/'keep.txt').write_text('precious')
    with pytest.raises(FileExistsError, match='not empty'): make_synthetic_hpa(tmp_path, n_train=2, n_test=1, size=32)
    make_synthetic_hpa(tmp_path, n_train=2, n_test=1, size=32, overwrite=True)
    assert (tmp_path/'keep.txt').read_text() == 'precious'

def test_loads_in_dataloaders(tmp_path):
    make_synthetic_hpa(tmp_path, n_train=10, n_test=2, size=48, seed=1)
    dls = hpa_dataloaders(tmp_path, size=32, bs=4, num_workers=0)
    xb, yb = dls.one_batch()
    assert xb.shape == (4, 4, 32, 32) and yb.shape == (4, 28)

def test_label_statistics():
    sets = sample_label_sets(30000, seed=2)
    counts = encode_targets(sets).sum(0); real = np.array(TRAIN_COUNTS) / N_TRAIN
    assert np.allclose(counts / len(sets), real, atol=0.02)
    assert np.corrcoef(counts, TRAIN_COUNTS)[0, 1] > 0.99
    flat = encode_targets(sample_label_sets(30000, seed=2, freq_power=0)).sum(0)
    assert flat.min() > 0.5 * flat.max()

def test_green_follows_labels():
    "Nuclear classes put green inside the nucleus (bright blue), cytosol puts it outside"
    def inside_ratio(c):
        x = synth_sample([c], size=128, seed=3).astype(float); nuc = x[..., 2] > np.percentile(x[..., 2], 75)
        return x[..., 1][nuc].mean() / (x[..., 1][~nuc].mean() + 1e-3)
    assert inside_ratio(HPA_CLASSES.index('Nucleoplasm')) > 2 and inside_ratio(HPA_CLASSES.index('Cytosol')) < 0.7

def test_patterns_by_class_name():
    "One pattern per class, keyed by name in class order; each one draws green; unknown names are refused"
    assert list(CLASS_PATTERNS) == HPA_CLASSES
    rng = np.random.default_rng(4); cells = _cells(rng, 256); marks = _landmarks(rng, cells, 256)
    for name, draw in CLASS_PATTERNS.items():
        g = np.zeros((256, 256), np.float32); draw(g, rng, cells, marks, 256 / 512)
        assert g.max() > 0.3, name
    with pytest.raises(ValueError, match='not a class'): pattern('Nucleus')
