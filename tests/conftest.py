"Shared fixtures: tiny fabricated Kaggle-layout folders, and the real data when it is beside the project."
import numpy as np, pandas as pd, pytest
from pathlib import Path
from hpa_fastai.core import real_hpa_path
from hpa_fastai.data import write_rgby

REAL = real_hpa_path(Path(__file__).parent)
needs_real = pytest.mark.skipif(REAL is None, reason='real HPA files not found: ../shared/hpa is absent (set HPA_REAL_DATA to use them)')

def make_fake(dest, n=12, size=32, seed=0):
    "A Kaggle-layout folder of `n` random samples with varied labels"
    rng = np.random.default_rng(seed); dest = Path(dest)
    ids = [f'{i:08x}-fake' for i in range(n)]
    tg = [' '.join(map(str, sorted({i % 28, (5*i+1) % 28}))) for i in range(n)]
    pd.DataFrame({'Id': ids, 'Target': tg}).to_csv(dest/'train.csv', index=False)
    for i in ids: write_rgby(dest/'train', i, rng.integers(0, 256, (size, size, 4), dtype=np.uint8))
    return dest

@pytest.fixture
def fake(tmp_path): return make_fake(tmp_path)
