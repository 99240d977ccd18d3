"Segmentation: touching nuclei split on drawn fields, cells grown from nuclei, and the real sample"
import numpy as np, cv2, pytest
from hpa_fastai.segment import segment_nuclei, segment_cells
from hpa_fastai.data import open_rgby
from hpa_fastai.test_utils import needs_real, real_data, real_sample

def _grid(n_pairs, r=14, size=256, gap=None):
    "A blue field of `n_pairs` pairs of touching discs (centres 2r·0.9 apart), on a grid"
    im = np.zeros((size, size), np.uint8); centres = []
    per_row = size // (5 * r)
    for k in range(n_pairs):
        cx, cy = 2 * r + (k % per_row) * 5 * r, 2 * r + (k // per_row) * 3 * r
        for dx in (0, int(1.8 * r)):
            cv2.circle(im, (cx + dx, cy), r, 200, -1); centres.append((cx + dx, cy))
    return im, centres

@pytest.mark.parametrize('n_pairs', [1, 3, 6])
def test_touching_pairs_split(n_pairs):
    blue, centres = _grid(n_pairs)
    assert cv2.connectedComponents((blue > 0).astype(np.uint8))[0] - 1 == n_pairs   # merged without the split
    lab = segment_nuclei(blue)
    assert lab.max() == 2 * n_pairs
    assert len({lab[y, x] for x, y in centres}) == 2 * n_pairs and all(lab[y, x] > 0 for x, y in centres)

def test_sizes_and_dtype():
    blue, _ = _grid(2)
    for size in (128, 256, 512):
        b = cv2.resize(blue, (size, size), interpolation=cv2.INTER_NEAREST)
        lab = segment_nuclei(b)
        assert lab.dtype == np.int32 and lab.shape == b.shape and lab.max() == 4
    assert segment_nuclei(blue.astype(np.float32)).max() == 4                          # any dtype, clipped to uint8

def test_cells_hold_their_nuclei():
    blue, centres = _grid(2, r=10)
    cyto = cv2.dilate((blue > 0).astype(np.uint8) * 100, np.ones((15, 15), np.uint8))
    x = np.stack([cyto, blue // 4, blue, cyto], -1)
    nuc = segment_nuclei(blue); cells = segment_cells(x, nuc)
    assert cells.max() == nuc.max() == 4
    assert (cells[nuc > 0] == nuc[nuc > 0]).all()                                    # cell k contains nucleus k
    assert ((cells > 0).sum() > 1.5 * (nuc > 0).sum())                               # and cytoplasm around it
    with pytest.raises(ValueError, match='H×W×4'): segment_cells(blue)
    with pytest.raises(ValueError, match='nuclei of shape'): segment_cells(x, nuc[:10])

@needs_real()
def test_real_sample():
    x = open_rgby(real_sample(real_data(quiet=True)).parent, real_sample(real_data(quiet=True)).name)
    nuc = segment_nuclei(x[..., 2])
    assert 30 <= nuc.max() <= 42                    # 36-37 by eye and by a reference watershed
    cells = segment_cells(x, nuc)
    assert len(np.unique(cells)) - 1 == nuc.max()

# --- one scale, any bit depth (issue 21) ---
import warnings
from hpa_fastai.segment import estimate_diameter, segmentation_f1, label_diameter
from hpa_fastai.test_utils import drawn_nuclei

@pytest.mark.parametrize('diameter', [10, 16, 30, 50, 80])
@pytest.mark.parametrize('bits', [8, 12, 16])
def test_drawn_fields_every_scale(diameter, bits):
    "Nuclei 10-80 px across, a third in touching pairs: F1 at IoU 0.5 >= 0.85 with the diameter given, >= 0.75 estimated"
    blue, truth = drawn_nuclei(diameter, bits=bits, seed=diameter * 7 + bits)
    assert blue.dtype == (np.uint8 if bits == 8 else np.uint16)
    assert segmentation_f1(segment_nuclei(blue, diameter=diameter), truth)['f1'] >= 0.85
    assert segmentation_f1(segment_nuclei(blue), truth)['f1'] >= 0.75
    assert abs(estimate_diameter(blue) / label_diameter(truth) - 1) < 0.25

def test_large_field_agrees_with_its_small_version():
    blue, truth = drawn_nuclei(24, n=30, seed=3)
    small = segment_nuclei(blue)
    big = segment_nuclei(cv2.resize(blue, None, fx=4, fy=4, interpolation=cv2.INTER_LINEAR))     # a 4x magnified field
    assert big.max() == small.max()
    assert segmentation_f1(cv2.resize(big, blue.shape[::-1], interpolation=cv2.INTER_NEAREST), small)['f1'] >= 0.95

def test_non_square_field():
    blue, truth = drawn_nuclei(20, size=(128, 384), n=30, seed=5)
    lab = segment_nuclei(blue)
    assert lab.shape == (128, 384) and segmentation_f1(lab, truth)['f1'] >= 0.85

def test_low_range_16bit_not_empty():
    "The issue's case: 8-bit values stored as uint16 once gave 0 nuclei without a word"
    blue, truth = drawn_nuclei(24, seed=2)
    lab = segment_nuclei(blue.astype(np.uint16))
    assert segmentation_f1(lab, truth)['f1'] >= 0.85
    dim = (blue.astype(np.uint16) * 3).astype(np.uint16)                         # a dim 12-bit camera image
    assert segmentation_f1(segment_nuclei(dim), truth)['f1'] >= 0.85

def test_empty_result_warns_with_range_and_diameter():
    speck = np.zeros((256, 256), np.uint16); speck[100:103, 100:103] = 900
    with pytest.warns(UserWarning, match=r'values 0–900 at a nucleus diameter of 60.0 px \(given\)'):
        assert segment_nuclei(speck, diameter=60).max() == 0
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert segment_nuclei(np.zeros((64, 64), np.uint16)).max() == 0           # an empty field: silent

def test_cells_at_another_scale():
    "Cells grown at the nuclei's working scale, brought back to the field's size"
    blue, truth = drawn_nuclei(60, n=10, seed=4, touching=0)
    cyto = cv2.dilate((truth > 0).astype(np.uint8) * 120, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (41, 41)))
    x = np.stack([cyto, blue // 8, blue, cyto], -1).astype(np.uint16) * 16          # 12-bit
    nuc = segment_nuclei(x[..., 2]); cells = segment_cells(x, nuc)
    assert cells.shape == blue.shape and cells.max() == nuc.max() >= 9
    assert (cells[nuc > 0] == nuc[nuc > 0]).all() and (cells > 0).sum() > 1.5 * (nuc > 0).sum()
