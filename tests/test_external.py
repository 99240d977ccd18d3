"External training data (HPAv18 layout: one colour JPEG per channel, other sizes): training split only, validation stays Kaggle."
import json, cv2, numpy as np, pandas as pd, pytest
from pathlib import Path
from hpa_fastai.core import HpaDataError
from hpa_fastai.features import hpa_dataloaders
from hpa_fastai.cli import run_training
from hpa_fastai.test_utils import fake_hpa

PLANE = dict(red=2, green=1, blue=0)          # OpenCV's B, G, R planes; yellow is R + G

def hpav18(dest, n=6, size=40, seed=0):
    "A folder of HPAv18-style samples (`{Id}_{channel}.jpg`, colour) and its labels CSV"
    rng = np.random.default_rng(seed); dest = Path(dest); dest.mkdir(parents=True)
    ids = [f'{10580 + i}_1610_C1_{i % 3 + 1}' for i in range(n)]
    for i in ids:
        for c in ('red', 'green', 'blue', 'yellow'):
            im = np.zeros((size, size, 3), np.uint8); v = rng.integers(0, 256, (size, size), dtype=np.uint8)
            if c == 'yellow': im[..., 1] = im[..., 2] = v
            else: im[..., PLANE[c]] = v
            cv2.imwrite(str(dest/f'{i}_{c}.jpg'), im)
    pd.DataFrame({'Id': ids, 'Target': [f'{i % 28} {(i + 7) % 28}' for i in range(n)]}).to_csv(dest.parent/'HPAv18.csv', index=False)
    return dest, dest.parent/'HPAv18.csv'

def test_external_training_only(tmp_path):
    d = fake_hpa(tmp_path/'kaggle', n=12)
    ext, csv = hpav18(tmp_path/'hpav18')
    dls = hpa_dataloaders(d, size=32, bs=4, num_workers=0, external=ext, external_csv=csv, features=True, feature_workers=0)
    tr = [Path(s) for s in dls.train_ds.items]; va = [Path(s) for s in dls.valid_ds.items]
    assert sum(s.parent == ext for s in tr) == 6 and not any(s.parent == ext for s in va)
    assert len(tr) + len(va) == 18
    (xb, fb), yb = dls.one_batch()[:2], dls.one_batch()[2]
    assert xb.shape == (4, 4, 32, 32) and fb.shape == (4, 10) and yb.shape == (4, 28)

def test_external_bad_input(tmp_path):
    d = fake_hpa(tmp_path/'kaggle', n=12)
    ext, csv = hpav18(tmp_path/'hpav18')
    with pytest.raises(HpaDataError, match='labels CSV'): hpa_dataloaders(d, size=32, external=ext)
    (ext/f'{pd.read_csv(csv).Id[0]}_green.jpg').unlink()
    with pytest.raises(HpaDataError, match='channel file'): hpa_dataloaders(d, size=32, external=ext, external_csv=csv)

def test_external_in_a_run(tmp_path):
    d = fake_hpa(tmp_path/'kaggle', n=16, n_test=2)
    ext, csv = hpav18(tmp_path/'hpav18')
    m = run_training(d, out=tmp_path/'runs', name='x', external=ext, external_csv=csv, size=32, bs=4, epochs=1, lr=1e-3,
                     arch='resnet18', num_workers=0, tta='none', features=False)
    assert m['data']['external']['n_samples'] == 6 and m['valid']['n'] < 16
