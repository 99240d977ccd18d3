"Features: always finite, agree with references, cached in whole chunks keyed by their files that survive a kill, bad samples and tables reported by Id, no orphaned workers."
import ctypes, multiprocessing, os, signal, sys, time
import numpy as np, pandas as pd, pytest, cv2, torch
from pathlib import Path
from hypothesis import given, settings, strategies as st, HealthCheck
from hypothesis.extra.numpy import arrays
from hpa_fastai.all import *
import hpa_fastai.features as F
from hpa_fastai.data import write_rgby, open_rgby
from hpa_fastai.dataloaders import hpa_dataloaders
from hpa_fastai.core import HpaDataError
import hpa_fastai.files as hfiles
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
    g = np.zeros((128, 128), np.uint8); cv2.circle(g, (64, 64), 8, 250, -1); x[..., 1] = g
    f = extract_features(x)
    assert f[0] > 0.95          # all green inside the nucleus
    assert f[9] == 0            # the blob sits in the nucleus
    assert 0.8 < f[6] < 1.3 and 0.9 < f[7] < 1.2   # one round dot (a third of its nucleus across: above the smallest blob at this scale)

def test_bad_shape():
    with pytest.raises(ValueError, match='H×W×4'): extract_features(np.zeros((10, 10, 3), np.uint8))

def _folder(tmp_path, n=6):
    rng = np.random.default_rng(0); ids = [f's{i}' for i in range(n)]
    for i in ids: write_rgby(tmp_path/'train', i, rng.integers(0, 256, (48, 48, 4), dtype=np.uint8))
    return tmp_path/'train', ids

def test_resume_after_kill(tmp_path, monkeypatch):
    folder, ids = _folder(tmp_path)
    calls = []; orig = F._features
    def flaky(x, params, extended=False):
        calls.append(1)
        if len(calls) == 5: raise KeyboardInterrupt   # killed while computing the 3rd chunk
        return orig(x, params, extended)
    monkeypatch.setattr(F, '_features', flaky)
    with pytest.raises(KeyboardInterrupt): feature_table(folder, ids, n_workers=0, chunk_size=2)
    cdir = next((tmp_path/'features_cache').iterdir())
    assert len(list(cdir.glob('chunk-*.parquet'))) == 2 and not list(cdir.glob('*.tmp*'))
    calls.clear(); monkeypatch.setattr(F, '_features', orig)
    monkeypatch.setattr(F, '_features', lambda x, params, extended=False: (calls.append(1), orig(x, params, extended))[1])
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

# --- Reliability: caches keyed by content, checked chunks, NaN/empty input, read-only data, no orphaned workers

def _counting(monkeypatch):
    "Count feature computations (serial runs only)"
    calls, orig = [], F._features
    monkeypatch.setattr(F, '_features', lambda x, params, extended=False: (calls.append(1), orig(x, params, extended))[1])
    return calls

def test_regenerated_image_recomputed(tmp_path, monkeypatch):
    folder, ids = _folder(tmp_path, 4)
    ft = feature_table(folder, ids, n_workers=0, chunk_size=2)
    new = np.zeros((48, 48, 4), np.uint8); new[10:20, 10:20] = 200
    write_rgby(folder, 's1', new)                                   # same Id, new pixels
    calls = _counting(monkeypatch)
    ft2 = feature_table(folder, ids, n_workers=0, chunk_size=2)
    assert len(calls) == 2                                           # only the chunk of s0, s1
    assert np.allclose(ft2.iloc[1, 1:].values.astype(float), extract_features(new))
    assert not np.allclose(ft2.iloc[1, 1:].values.astype(float), ft.iloc[1, 1:].values.astype(float))
    assert np.allclose(ft2.drop(index=1)[FEATURE_NAMES].values, ft.drop(index=1)[FEATURE_NAMES].values)
    calls.clear(); feature_table(folder, ids, n_workers=0, chunk_size=2); assert not calls   # and now cached

def _damage(df, how):
    if how == 'dropped column': return df.drop(columns='ssim_green_red'), "missing column(s) ['ssim_green_red']"
    if how == 'other Ids': return df.assign(Id=['x0', 'x1']), 'its Ids are not those of the chunk'
    if how == 'text features': return df.assign(green_area=['a', 'b']), "non-numeric column(s) ['green_area']"
    if how == 'NaN feature': return df.assign(green_area=[np.nan, 0.5]), 'NaN or infinite features'

@pytest.mark.parametrize('how', ['dropped column', 'other Ids', 'text features', 'NaN feature'])
def test_mismatched_chunk_recomputed(tmp_path, monkeypatch, how):
    folder, ids = _folder(tmp_path, 4)
    ft = feature_table(folder, ids, n_workers=0, chunk_size=2)
    chunk = next(f for f in next((tmp_path/'features_cache').iterdir()).glob('chunk-*.parquet')
                 if pd.read_parquet(f).Id.iloc[0] == 's0')
    bad, msg = _damage(pd.read_parquet(chunk), how)
    bad.to_parquet(chunk, index=False)                                # a valid parquet file, the wrong table
    calls = _counting(monkeypatch)
    with pytest.warns(UserWarning) as rec: ft2 = feature_table(folder, ids, n_workers=0, chunk_size=2)
    text = [str(w.message) for w in rec if 'cache chunk' in str(w.message)]
    assert len(text) == 1 and str(chunk) in text[0] and msg in text[0]
    assert len(calls) == 2 and ft2[FEATURE_NAMES].notna().all().all()
    assert np.allclose(ft[FEATURE_NAMES].values, ft2[FEATURE_NAMES].values)
    assert not F._chunk_problem(pd.read_parquet(chunk), ['s0', 's1'])   # rewritten whole

def test_nan_rows_refused(tmp_path):
    from conftest import make_fake
    make_fake(tmp_path, n=8, size=32)
    ft = feature_table(tmp_path/'train', n_workers=0)
    bad = ft.copy(); bad.loc[[1, 6], 'ssim_green_blue'] = [np.nan, -np.inf]
    with pytest.raises(HpaDataError, match=rf"2 row\(s\) with NaN or infinite features, e.g. Ids \['{ft.Id[1]}', '{ft.Id[6]}'\]"):
        FeatureNorm.fit(bad)
    with pytest.raises(HpaDataError, match=r'rows \[1, 6\]'): FeatureNorm.fit(bad[FEATURE_NAMES].values)
    with pytest.raises(HpaDataError, match=ft.Id[6]):               # checked before fitting, validation rows too
        hpa_dataloaders(tmp_path, size=32, bs=4, features=bad, num_workers=0)

@settings(max_examples=200, deadline=None)
@given(arrays(np.float64, (6, 10), elements=st.floats(allow_nan=False, allow_infinity=False)),
       arrays(np.float64, (3, 10), elements=st.floats(allow_nan=False, allow_infinity=False)))
def test_norm_finite_for_finite_input(train, x):
    z = FeatureNorm.fit(train)(x)
    assert z.dtype == np.float32 and np.isfinite(z).all() and (z >= 0).all() and (z <= np.array(FEATURE_WEIGHTS) + 1e-6).all()

def test_empty_input_named(tmp_path):
    (tmp_path/'empty').mkdir()
    with pytest.raises(HpaDataError, match=f'{tmp_path/"empty"}: no samples'): feature_table(tmp_path/'empty')
    folder, ids = _folder(tmp_path, 2)
    with pytest.raises(HpaDataError, match=str(folder)): feature_table(folder, ids=[])
    with pytest.raises(HpaDataError, match='image folder not found'): feature_table(tmp_path/'nowhere', ['s0'])
    assert not (tmp_path/'features_cache').exists()                 # nothing written for nothing

def test_cache_elsewhere_when_data_read_only(tmp_path, monkeypatch):
    "`cache_root`'s choice, with the data folder pretended read-only (as root every folder is writable)"
    folder, ids = _folder(tmp_path/'data', 3)
    monkeypatch.setattr(hfiles, 'is_writable', lambda p: False)
    monkeypatch.setenv('HPA_CACHE', str(tmp_path/'user'))
    ft = feature_table(folder, ids, n_workers=0, chunk_size=2)
    assert list(ft.Id) == ids and not (tmp_path/'data'/'features_cache').exists()
    assert len(list((tmp_path/'user').glob('*/train-*/chunk-*.parquet'))) == 2

def test_cache_dir_threaded(tmp_path):
    from conftest import make_fake
    make_fake(tmp_path/'d', n=8, size=32, n_test=2)
    dls = hpa_dataloaders(tmp_path/'d', size=32, bs=4, features=True, num_workers=0, feature_workers=0,
                          feature_cache_dir=tmp_path/'c1')
    add_features(dls, tmp_path/'d'/'test', n_workers=0, cache_dir=tmp_path/'c2')
    assert not (tmp_path/'d'/'features_cache').exists()
    assert len(list((tmp_path/'c1').glob('train-*/chunk-*'))) == 1 and len(list((tmp_path/'c2').glob('test-*/chunk-*'))) == 1

class _CapHeader(ctypes.Structure): _fields_ = [('version', ctypes.c_uint32), ('pid', ctypes.c_int)]
class _CapData(ctypes.Structure): _fields_ = [('effective', ctypes.c_uint32), ('permitted', ctypes.c_uint32), ('inheritable', ctypes.c_uint32)]

def _drop_dac_override():
    "Drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from this (single-threaded, forked) process: root then obeys file modes"
    libc = ctypes.CDLL(None, use_errno=True)
    hdr, data = _CapHeader(0x20080522, 0), (_CapData * 2)()      # _LINUX_CAPABILITY_VERSION_3
    if libc.capget(ctypes.byref(hdr), data): raise OSError(ctypes.get_errno(), 'capget')
    data[0].effective &= ~0b110; data[0].permitted &= ~0b110
    if libc.capset(ctypes.byref(hdr), data): raise OSError(ctypes.get_errno(), 'capset')

def _read_only_run(folder, cache, conn):
    try: _drop_dac_override()
    except (OSError, AttributeError) as e: return conn.send(('skip', f'cannot drop CAP_DAC_OVERRIDE ({e})'))
    if hfiles.is_writable(folder.parent): return conn.send(('skip', 'the data folder is still writable'))
    os.environ['HPA_CACHE'] = str(cache)
    try: conn.send(('ok', list(feature_table(folder, n_workers=0, chunk_size=2).Id)))
    except BaseException as e: conn.send(('error', repr(e)))

@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='capabilities are Linux-only')
def test_read_only_data_folder(tmp_path):
    "A truly read-only data folder (chmod -R a-w, and no CAP_DAC_OVERRIDE, in a forked child): the cache goes per-user"
    folder, ids = _folder(tmp_path/'ro', 3)
    os.chmod(folder.parent, 0o555); os.chmod(folder, 0o555)
    for f in folder.iterdir(): os.chmod(f, 0o444)
    try:
        if os.geteuid() != 0 and hfiles.is_writable(folder.parent): pytest.skip('cannot make the data folder read-only')
        ctx = multiprocessing.get_context('fork'); a, b = ctx.Pipe()
        p = ctx.Process(target=_read_only_run, args=(folder, tmp_path/'user', b)); p.start()
        res = a.recv() if a.poll(60) else ('error', 'no answer'); p.join(10)
    finally:
        os.chmod(folder.parent, 0o755); os.chmod(folder, 0o755)
    if res[0] == 'skip': pytest.skip(res[1])
    assert res == ('ok', ids)
    assert not (tmp_path/'ro'/'features_cache').exists()
    assert len(list((tmp_path/'user').glob('ro-*/train-*/chunk-*.parquet'))) == 2

def _children(pid) -> set[int]:
    kids = set()
    for f in Path(f'/proc/{pid}/task').glob('*/children'):
        try: kids |= {int(k) for k in f.read_text().split()}
        except OSError: pass
    return kids

def _alive(pid) -> bool:
    "Whether `pid` runs (a zombie, dead but not yet reaped, does not count)"
    try: os.kill(pid, 0)
    except ProcessLookupError: return False
    try: return Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError: return False

def _slow_features(folder):
    feature_table(folder, n_workers=2, chunk_size=1, cache=False, params=dict(diameter=6, work_diameter=200))   # ~0.4 s a sample at 1067²

@pytest.mark.skipif(not Path('/proc/self/task').exists() or not list(Path('/proc/self/task').glob('*/children')),
                    reason='needs Linux /proc/<pid>/task/*/children')
def test_killed_parent_leaves_no_workers(tmp_path):
    "SIGKILL the process running `feature_table` while its workers compute: they must not outlive it"
    rng = np.random.default_rng(0)
    for i in range(12): write_rgby(tmp_path/'train', f's{i}', rng.integers(0, 256, (32, 32, 4), dtype=np.uint8))
    p = multiprocessing.get_context('fork').Process(target=_slow_features, args=(tmp_path/'train',)); p.start()
    kids = set()
    try:
        t = time.monotonic()
        while len(kids) < 2 and p.is_alive() and time.monotonic() - t < 10: kids = _children(p.pid); time.sleep(0.05)
        assert len(kids) >= 2 and p.is_alive(), 'the workers did not start'
        time.sleep(0.3)                                              # they are computing
        p.kill(); p.join()
        t = time.monotonic()
        while any(map(_alive, kids)) and time.monotonic() - t < 3: time.sleep(0.05)
        assert not [k for k in kids if _alive(k)], 'workers outlived their killed parent'
    finally:
        if p.is_alive(): p.kill(); p.join()
        for k in kids:
            try: os.kill(k, signal.SIGKILL)
            except ProcessLookupError: pass

# --- one scale, any bit depth (issue 21) ---
from hpa_fastai.features import feature_params, feature_params_key, feature_masks
from hpa_fastai.test_utils import drawn_nuclei

def _drawn_sample(diameter=24, seed=0):
    blue, truth = drawn_nuclei(diameter, n=16, seed=seed, touching=0.2)
    cyto = cv2.dilate((truth > 0).astype(np.uint8) * 110, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (int(diameter) | 1,) * 2))
    green = ((truth % 3 == 0) & (truth > 0)).astype(np.uint8) * 180
    return np.stack([cyto, green, blue, cyto], -1)

def test_scale_in_params_and_cache_key():
    assert FEATURE_PARAMS['diameter'] is None and FEATURE_PARAMS['work_diameter'] == 25
    assert feature_params_key(feature_params(diameter=30)) != feature_params_key(feature_params())
    assert feature_params(dict(sigma=2.), diameter=12)['diameter'] == 12.

def test_features_any_bit_depth():
    x = _drawn_sample()
    f8 = extract_features(x)
    np.testing.assert_allclose(extract_features(x.astype(np.uint16) * 16), f8, rtol=1e-2, atol=1e-3)     # 12-bit: the same up to rounding
    np.testing.assert_allclose(extract_features(x.astype(np.uint16) * 257), f8, rtol=1e-5, atol=1e-6)    # full-range 16-bit

def test_features_follow_the_nuclei_not_the_side():
    "The same field at 2x magnification: measured at the same working scale, so the features barely move"
    x = _drawn_sample(20, seed=1)
    big = cv2.resize(x, None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR)
    f, fb = extract_features(x), extract_features(big)
    assert feature_masks(big)[0].shape == feature_masks(x)[0].shape or abs(feature_masks(big)[0].shape[0] - feature_masks(x)[0].shape[0]) <= 8
    np.testing.assert_allclose(fb[[0, 5, 8]], f[[0, 5, 8]], rtol=0.15, atol=0.02)   # green in nuclei, green area, blob / nucleus area
    given = extract_features(big, diameter=40)
    assert np.isfinite(given).all()

def test_non_square_sample():
    x = _drawn_sample(20, seed=2); wide = np.ascontiguousarray(np.concatenate([x, x[:, ::-1]], 1))   # twice as wide as high
    nlab, blab, g = feature_masks(wide)
    assert abs(nlab.shape[1] / nlab.shape[0] - 2) < 0.05                   # kept in shape, not squashed to a square
    assert np.isfinite(extract_features(wide)).all()

def test_no_nucleus_warns_naming_the_range():
    x = np.zeros((64, 64, 4), np.uint8)
    b = x[..., 2].copy(); cv2.circle(b, (32, 32), 3, 90, -1); x[..., 2] = b          # a 7-px nucleus, said to be 200 px across
    with pytest.warns(UserWarning, match=r'blue values 0–90 \(8-bit\) at a nucleus diameter of 200.0 px \(given\)'):
        extract_features(x, diameter=200)
