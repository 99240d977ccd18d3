"Features: always finite, agree with references, cached in whole chunks that survive a kill, bad samples reported by Id."
import numpy as np, pandas as pd, pytest, cv2, torch
from pathlib import Path
from hypothesis import given, settings, strategies as st, HealthCheck
from hypothesis.extra.numpy import arrays
import hpa_fastai.features as F
from hpa_fastai.features import *
from hpa_fastai.data import write_rgby, hpa_dataloaders, open_rgby
from hpa_fastai.core import HpaDataError
from conftest import needs_real, REAL, REAL_SAMPLE_ID

special = st.sampled_from(['zeros', 'const', 'full', 'one_pixel', 'noise', 'stripes', 'one_channel'])

@st.composite
def samples(draw):
    h, w = draw(st.integers(1, 80)), draw(st.integers(1, 80))
    kind = draw(special)
    if kind == 'noise': return draw(arrays(np.uint8, (h, w, 4)))
    x = np.zeros((h, w, 4), np.uint8)
    if kind == 'const': x[:] = draw(st.integers(0, 255))
    elif kind == 'full': x[:] = 255
    elif kind == 'one_pixel': x[draw(st.integers(0, h-1)), draw(st.integers(0, w-1)), draw(st.integers(0, 3))] = 255
    elif kind == 'stripes': x[::2] = 200
    elif kind == 'one_channel': x[..., draw(st.integers(0, 3))] = draw(arrays(np.uint8, (h, w)))
    return x

@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(samples())
def test_always_finite(x):
    f = extract_features(x)
    assert f.shape == (10,) and f.dtype == np.float32 and np.isfinite(f).all()

def test_ranges_on_structured_input():
    x = np.zeros((128, 128, 4), np.uint8)
    b = np.zeros((128, 128), np.uint8); cv2.circle(b, (64, 64), 20, 200, -1); x[..., 2] = b
    g = np.zeros((128, 128), np.uint8); cv2.circle(g, (64, 64), 5, 250, -1); x[..., 1] = g
    f = extract_features(x)
    assert f[0] > 0.95          # all green inside the nucleus
    assert f[9] == 0            # the blob sits in the nucleus
    assert 0.8 < f[6] < 1.3 and 0.9 < f[7] < 1.2   # one round dot

def test_bad_shape():
    with pytest.raises(ValueError, match='H×W×4'): extract_features(np.zeros((10, 10, 3), np.uint8))

def _folder(tmp_path, n=6):
    rng = np.random.default_rng(0); ids = [f's{i}' for i in range(n)]
    for i in ids: write_rgby(tmp_path/'train', i, rng.integers(0, 256, (48, 48, 4), dtype=np.uint8))
    return tmp_path/'train', ids

def test_resume_after_kill(tmp_path, monkeypatch):
    folder, ids = _folder(tmp_path)
    calls = []; orig = F.extract_features
    def flaky(x, params=None):
        calls.append(1)
        if len(calls) == 5: raise KeyboardInterrupt   # killed while computing the 3rd chunk
        return orig(x, params)
    monkeypatch.setattr(F, 'extract_features', flaky)
    with pytest.raises(KeyboardInterrupt): feature_table(folder, ids, n_workers=0, chunk_size=2)
    cdir = next((tmp_path/'features_cache').iterdir())
    assert len(list(cdir.glob('chunk-*.parquet'))) == 2 and not list(cdir.glob('*.tmp*'))
    calls.clear(); monkeypatch.setattr(F, 'extract_features', orig)
    monkeypatch.setattr(F, 'extract_features', lambda x, params=None: (calls.append(1), orig(x, params))[1])
    ft = feature_table(folder, ids, n_workers=0, chunk_size=2)
    assert len(calls) == 2 and list(ft.Id) == ids           # only the missing chunk was computed
    fresh = feature_table(folder, ids, n_workers=0, cache=False)
    assert np.allclose(ft[FEATURE_NAMES].values, fresh[FEATURE_NAMES].values)

def test_corrupt_chunk_recomputed(tmp_path):
    folder, ids = _folder(tmp_path, 4)
    ft = feature_table(folder, ids, n_workers=0, chunk_size=2)
    chunk = sorted(next((tmp_path/'features_cache').iterdir()).glob('chunk-*'))[0]
    chunk.write_bytes(chunk.read_bytes()[:50])
    with pytest.warns(UserWarning, match='unreadable cache chunk'): ft2 = feature_table(folder, ids, n_workers=0, chunk_size=2)
    assert np.allclose(ft[FEATURE_NAMES].values, ft2[FEATURE_NAMES].values)

def test_params_change_invalidates(tmp_path):
    folder, ids = _folder(tmp_path, 2)
    feature_table(folder, ids, n_workers=0); feature_table(folder, ids, n_workers=0, params=dict(sigma=2.0))
    assert len(list((tmp_path/'features_cache').iterdir())) == 2

def test_unreadable_sample_reported(tmp_path):
    folder, ids = _folder(tmp_path, 4)
    (folder/'s1_green.png').write_bytes(b'garbage'); (folder/'s2_blue.png').unlink()
    with pytest.warns(UserWarning, match='2 sample'): ft = feature_table(folder, ids, n_workers=0, chunk_size=2)
    assert list(ft.Id) == ['s0', 's3'] and set(ft.attrs['failed']) == {'s1', 's2'}
    assert 's1_green.png' in ft.attrs['failed']['s1'] and 'blue' in ft.attrs['failed']['s2']
    write_rgby(folder, 's2', np.zeros((48, 48, 4), np.uint8)); write_rgby(folder, 's1', np.zeros((48, 48, 4), np.uint8))
    assert list(feature_table(folder, ids, n_workers=0, chunk_size=2).Id) == ids   # fixed files are retried

def test_parallel_matches_serial(tmp_path):
    folder, ids = _folder(tmp_path, 6)
    a = feature_table(folder, ids, n_workers=2, chunk_size=2, cache=False)
    b = feature_table(folder, ids, n_workers=0, cache=False)
    assert np.allclose(a[FEATURE_NAMES].values, b[FEATURE_NAMES].values)

def test_dataloaders_with_features(tmp_path):
    from conftest import make_fake
    make_fake(tmp_path, n=12, size=48)
    dls = hpa_dataloaders(tmp_path, size=32, bs=4, features=True, num_workers=0, feature_workers=0)
    b = dls.one_batch()
    assert len(b) == 3 and b[0].shape == (4, 4, 32, 32) and b[1].shape == (4, 10) and b[2].shape == (4, 28)
    lk = [t for t in dls.train_ds.tls[1].tfms.fs if isinstance(t, FeatureLookup)][0]
    stem = dls.valid_ds.items[0]; raw = lk.table[Path(stem).name]
    assert np.allclose(dls.valid_ds[0][1].numpy(), lk.norm(raw))
    assert np.allclose(raw, extract_features(open_rgby(Path(stem).parent, Path(stem).name)), atol=1e-6)

def test_norm_fitted_on_train_only(tmp_path):
    "FeatureNorm is fitted on the training split: changing only validation rows' features leaves it unchanged"
    from conftest import make_fake
    make_fake(tmp_path, n=12, size=48)
    ft = feature_table(tmp_path/'train', n_workers=0)
    d1 = hpa_dataloaders(tmp_path, size=32, bs=4, features=ft, num_workers=0, seed=0)
    valid_ids = [Path(s).name for s in d1.valid_ds.items]
    ft2 = ft.copy(); ft2.loc[ft2.Id.isin(valid_ids), FEATURE_NAMES] = 1e6
    d2 = hpa_dataloaders(tmp_path, size=32, bs=4, features=ft2, num_workers=0, seed=0)
    n1, n2 = [[t for t in d.train_ds.tls[1].tfms.fs if isinstance(t, FeatureLookup)][0].norm for d in (d1, d2)]
    assert np.allclose(n1.lo, n2.lo) and np.allclose(n1.hi, n2.hi)

def test_missing_features_named(tmp_path):
    from conftest import make_fake
    make_fake(tmp_path, n=6, size=48)
    ft = feature_table(tmp_path/'train', n_workers=0).iloc[:4]
    with pytest.raises(HpaDataError, match='no features for 2 sample'): hpa_dataloaders(tmp_path, size=32, bs=2, features=ft, num_workers=0)

@needs_real
def test_real_sample_features():
    f = extract_features(open_rgby(REAL/'sample_4ch', REAL_SAMPLE_ID))
    assert np.isfinite(f).all() and f[0] > 0.5     # nuclear bodies: green mostly inside nuclei
