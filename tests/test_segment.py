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
