"The synthetic generator writes the Kaggle layout (and the hidden per-cell truth), deterministically, refuses to clobber, and stays close to real statistics."
import numpy as np, pandas as pd, pytest, cv2
from hpa_fastai.all import *
from hpa_fastai.dataloaders import hpa_dataloaders
from hpa_fastai.data import find_ids, open_rgby
from hpa_fastai.synth import _cells, _landmarks, _n_cells
from hpa_fastai.test_utils import needs_real
from hpa_fastai.core import real_hpa_path

def test_layout_and_determinism(tmp_path):
    a = make_synthetic_hpa(tmp_path/'a', n_train=8, n_test=3, size=64, seed=5)
    b = make_synthetic_hpa(tmp_path/'b', n_train=8, n_test=3, size=64, seed=5)
    tr, ss, tl = read_labels(a/'train.csv'), pd.read_csv(a/'sample_submission.csv'), read_labels(a/'test_labels.csv')
    assert len(tr) == 8 and list(ss.columns) == ['Id', 'Predicted'] and list(ss.Id) == list(tl.Id) and len(ss) == 3
    assert sorted(find_ids(a/'train')) == sorted(tr.Id) and sorted(find_ids(a/'test')) == sorted(ss.Id)
    assert all(len(i) == 36 and i.count('-') == 4 for i in tr.Id)           # uuid-like, as Kaggle's
    x = open_rgby(a/'train', tr.Id[0]); y = open_rgby(b/'train', tr.Id[0])
    assert x.shape == (64, 64, 4) and x.dtype == np.uint8 and (x == y).all()
    for split, n in (('train', 8), ('test', 3)):                               # hidden per-cell truth, one row per cell
        cells = pd.read_csv(a/f'{split}_cells.csv', keep_default_na=False)
        assert list(cells.columns) == ['Id', 'cell', 'x', 'y', 'Target'] and cells.Id.nunique() == n
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
    "Nuclear classes put green inside the nucleus (bright blue), cytosol puts it outside (median over 5 fields)"
    def inside_ratio(c):
        r = []
        for seed in range(5):
            x = synth_sample([c], size=128, seed=seed).astype(float); nuc = x[..., 2] > np.percentile(x[..., 2], 85)
            r.append(x[..., 1][nuc].mean() / (x[..., 1][~nuc].mean() + 1e-3))
        return np.median(r)
    assert inside_ratio(HPA_CLASSES.index('Nucleoplasm')) > 2 and inside_ratio(HPA_CLASSES.index('Cytosol')) < 0.7

def test_patterns_by_class_name():
    "One pattern per class, keyed by name in class order; each one draws green; unknown names are refused"
    assert list(CLASS_PATTERNS) == HPA_CLASSES
    rng = np.random.default_rng(4); cells = _cells(rng, 256); marks = _landmarks(rng, cells, 256)
    for name, draw in CLASS_PATTERNS.items():
        g = np.zeros((256, 256), np.float32); draw(g, rng, cells, marks, 256 / 512)
        assert g.max() > 0.3, name
    with pytest.raises(ValueError, match='not a class'): pattern('Nucleus')

def test_cell_records():
    "Per-cell truth: each image label shown by some cells, no cell shows a class the image lacks; dividing classes by 1-3 cells"
    spindle, bridge = HPA_CLASSES.index('Mitotic spindle'), HPA_CLASSES.index('Cytokinetic bridge')
    for seed, labels in enumerate([[0], [0, 25], [spindle, 21], [bridge], [3, 7, 16]]):
        x, cells = synth_sample(labels, size=128, seed=seed, return_cells=True)
        assert (x == synth_sample(labels, size=128, seed=seed)).all()
        assert [c['cell'] for c in cells] == list(range(len(cells))) and 8 <= len(cells) <= 110
        assert set().union(*[c['labels'] for c in cells]) == set(labels)
        assert all(0 <= c['x'] <= 128 and 0 <= c['y'] <= 128 for c in cells)
        for m in (spindle, bridge):
            if m in labels: assert 1 <= sum(m in c['labels'] for c in cells) <= 3
    shown = [np.mean([0 in c['labels'] for c in synth_sample([0], 64, seed=s, return_cells=True)[1]]) for s in range(40)]
    assert min(shown) < 0.7 and np.median(shown) > 0.7          # most cells usually, only some at times

def test_nuclei_per_field():
    "8-110 nuclei per field, median about 18, as counted on real fields"
    n = [_n_cells(np.random.default_rng(s)) for s in range(2000)]
    assert min(n) >= 8 and max(n) <= 110 and 15 <= np.median(n) <= 21 and np.percentile(n, 99) > 60

def test_no_label_count_cue_and_no_copies():
    "Green's brightness does not rise with the number of labels; Microtubules and ER are not copies of red and yellow"
    from scipy.stats import spearmanr
    sets = sample_label_sets(150, seed=9)
    rho = spearmanr([len(t) for t in sets], [synth_sample(t, 96, seed=i)[..., 1].mean() for i, t in enumerate(sets)]).statistic
    assert rho <= 0.2, rho
    for name, ch in (('Microtubules', 0), ('Endoplasmic reticulum', 3)):
        x = synth_sample([HPA_CLASSES.index(name)], 128, seed=1)
        assert np.corrcoef(x[..., 1].ravel(), x[..., ch].ravel())[0, 1] < 0.8, name

def test_stats_known_answers(tmp_path):
    "hf_share, realism_stats and realism_table on drawn images whose answers are known"
    xx = np.arange(64)[None].repeat(64, 0)
    assert hf_share(np.ones((64, 64))) == 0 and np.isclose(hf_share((xx + xx.T) % 2), 1)
    assert np.isclose(hf_share(np.cos(2 * np.pi * xx / 32)), 0) and np.isclose(hf_share(np.cos(2 * np.pi * xx / 4)), 1)
    x = np.zeros((64, 64), np.uint8); x[:16, :16] = 255
    st = realism_stats(x)
    assert st['mean'] == 255 / 16 and st['max'] == 255 and st['zero_frac'] == 15 / 16 and st['sat_frac'] == 1 / 16
    b = np.zeros((256, 256), np.uint8)
    for c in [(50, 50), (200, 60), (60, 200), (190, 190)]: cv2.circle(b, c, 18, 180, -1)
    assert realism_stats(b, count_nuclei)['nuclei'] == 4 and realism_stats(b, lambda im: 7)['nuclei'] == 7
    for k, v in enumerate([0, 10, 20, 30, 40]): cv2.imwrite(str(tmp_path/f'r{k}_green.png'), np.full((16, 16), v, np.uint8))
    t = realism_table(sorted(tmp_path.glob('*.png')), [np.full((16, 16, 4), v, np.uint8) for v in (25, 45)], None).set_index('stat')
    assert list(t.channel.unique()) == ['green'] and t.loc['mean', 'real_median'] == 20 and t.loc['mean', 'synth_median'] == 35
    assert (t.loc['mean', 'real_q25'], t.loc['mean', 'real_q75']) == (10, 30) and not t.loc['mean', 'inside']
    assert t.loc['zero_frac', 'inside']                             # real zero shares 1, 0, 0, 0, 0: IQR 0-0; synthetic 0
    with pytest.raises(ValueError, match='2-D uint8'): realism_stats(np.zeros((4, 4, 2), np.uint8))

@needs_real()
def test_realism_on_held_out_real_fields():
    "Most synthetic medians fall inside the interquartile range of the held-out real half"
    real = real_hpa_path()
    files = split_real_files(list((real/'single_channel').glob('*.png')) + list((real/'sample_4ch').glob('*.png')), 1)
    t = realism_table(files, [synth_sample(s, 512, seed=77 + i) for i, s in enumerate(sample_label_sets(12, seed=77))])
    assert len(t) == 25 and t.inside.sum() >= 20, t[~t.inside]
