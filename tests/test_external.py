"External training data (HPAv18 layout: one colour JPEG per channel, other sizes): training split only, validation stays Kaggle."
import json, os, shutil, subprocess, cv2, numpy as np, pandas as pd, pytest
from pathlib import Path
from hpa_fastai.core import HpaDataError
from hpa_fastai.dataloaders import hpa_dataloaders
from hpa_fastai.train import run_training
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

# --- external samples on the packed path: their own store, read beside the Kaggle one

from hpa_fastai.data import open_rgby, find_ids
from hpa_fastai.store import store_path, open_store, StoreDataLoader, INDEX
from hpa_fastai.core import encode_targets, read_labels
from hpa_fastai.test_utils import real_data

def _flat(dl, k):
    "Input `k` of every batch of an unshuffled copy of `dl`, concatenated"
    import torch
    return torch.cat([b[k].cpu() for b in dl.new(shuffle=False, drop_last=False)])

def test_external_store_equals_per_item(tmp_path):
    d = fake_hpa(tmp_path/'kaggle', n=12)
    ext, csv = hpav18(tmp_path/'hpav18', size=40)
    kw = dict(size=32, bs=4, num_workers=0, external=ext, external_csv=csv, features=True, feature_workers=0, aug=False)
    sdls = hpa_dataloaders(d, store=True, **kw)                       # packs both folders, each into its own default store
    for f in (d/'train', ext): assert (store_path(f, 32)/INDEX).exists()
    assert isinstance(sdls.train, StoreDataLoader)
    va, tr = sdls.valid_ds.ids, sdls.train_ds.ids
    ext_ids = list(pd.read_csv(csv).Id)
    assert tr[-6:] == ext_ids and not set(va) & set(ext_ids) and len(tr) + len(va) == 18
    assert [Path(s).parent for s in sdls.train_ds.items[-6:]] == [ext.absolute()] * 6
    pdls = hpa_dataloaders(d, store=False, **kw)
    assert [Path(s).name for s in pdls.train_ds.items] == tr and [Path(s).name for s in pdls.valid_ds.items] == va
    for k in range(3):                                                # images, features, targets: equal to the per-item path's
        np.testing.assert_array_equal(_flat(sdls.train, k).numpy(), _flat(pdls.train, k).numpy())
        np.testing.assert_array_equal(_flat(sdls.valid, k).numpy(), _flat(pdls.valid, k).numpy())
    raw = sdls.train_ds.batch(np.arange(len(tr)))[0].numpy()          # the uint8 rows the device receives
    for j, i in enumerate(tr):
        np.testing.assert_array_equal(raw[j], open_rgby(ext if i in ext_ids else d/'train', i, size=32).transpose(2, 0, 1))
    auto = hpa_dataloaders(d, **kw)                                   # store=None: complete default stores are used
    assert isinstance(auto.train, StoreDataLoader) and auto.train_ds.ids == tr
    shutil.rmtree(store_path(ext, 32))                                # the external folder not packed: the per-item path
    assert not isinstance(hpa_dataloaders(d, **kw).train, StoreDataLoader)
    with pytest.raises(HpaDataError, match='no packed store'): hpa_dataloaders(d, store=store_path(d/'train', 32), **kw)

def test_external_store_refused_when_changed(tmp_path):
    d = fake_hpa(tmp_path/'kaggle', n=12)
    ext, csv = hpav18(tmp_path/'hpav18')
    kw = dict(size=32, bs=4, num_workers=0, external=ext, external_csv=csv)
    hpa_dataloaders(d, store=True, **kw)
    fn = ext/f'{pd.read_csv(csv).Id[2]}_blue.jpg'
    cv2.imwrite(str(fn), np.full((40, 40, 3), 200, np.uint8)); os.utime(fn, ns=(fn.stat().st_atime_ns, fn.stat().st_mtime_ns + 10**9))
    for store in (None, True):
        with pytest.raises(HpaDataError, match=r'changed since it was packed.*hpa-pack \.\.\. --repack'): hpa_dataloaders(d, store=store, **kw)
    with pytest.raises(HpaDataError, match='packed at 32px'): hpa_dataloaders(d, store=[store_path(d/'train', 32), store_path(ext, 32)], **{**kw, 'size': 48})
    twin = tmp_path/'other'/'train'; shutil.copytree(ext, twin)       # same folder name under one explicit cache folder
    with pytest.raises(HpaDataError, match='same name'):
        hpa_dataloaders(d, store=True, feature_cache_dir=tmp_path/'cache', **{**kw, 'external': twin})

def test_external_store_bad_sizes(tmp_path):
    "Different sizes of JPEG per sample and channel are resized as the opener does"
    d = fake_hpa(tmp_path/'kaggle', n=12)
    ext, csv = hpav18(tmp_path/'hpav18', n=3, size=90)
    for c, s in (('green', 50), ('yellow', 17)):                     # one sample's channels at other sizes
        fn = ext/f'{pd.read_csv(csv).Id[1]}_{c}.jpg'; cv2.imwrite(str(fn), cv2.resize(cv2.imread(str(fn)), (s, s)))
    dls = hpa_dataloaders(d, size=32, bs=4, num_workers=0, external=ext, external_csv=csv, store=True, aug=False)
    st = dls.train_ds.store
    for i in pd.read_csv(csv).Id: np.testing.assert_array_equal(st.read([i])[0], open_rgby(ext, i, size=32).transpose(2, 0, 1))

def test_real_hpav18_labels_on_store(tmp_path):
    "The real HPAv18 labels file: its first Ids, with tiny fabricated JPEGs, train from the store with their real targets"
    real = real_data(quiet=True)
    if real is None: pytest.skip('real HPA files not found: ../shared/hpa is absent')
    labels = read_labels(real/'HPAv18RBGY_wodpl.csv').iloc[:5]
    ext, _ = hpav18(tmp_path/'hpav18', n=5)
    for j, i in enumerate(labels.Id):                                 # rename the fabricated samples to the real Ids
        for c in ('red', 'green', 'blue', 'yellow'): (ext/f'{pd.read_csv(_).Id[j]}_{c}.jpg').rename(ext/f'{i}_{c}.jpg')
    csv = tmp_path/'v18.csv'; pd.read_csv(real/'HPAv18RBGY_wodpl.csv', dtype=str, nrows=5).to_csv(csv, index=False)
    d = fake_hpa(tmp_path/'kaggle', n=12)
    dls = hpa_dataloaders(d, size=32, bs=4, num_workers=0, external=ext, external_csv=csv, store=True, aug=False)
    pos = [dls.train_ds.ids.index(i) for i in labels.Id]
    np.testing.assert_array_equal(dls.train_ds.y[pos], encode_targets(labels.Target))

def test_pack_cli_then_train_external(tmp_path, cli_here):
    "hpa-pack packs the external folder (and the Kaggle one); hpa-train --external reads both stores without --pack"
    d = fake_hpa(tmp_path/'kaggle', n=16, n_test=2)
    ext, csv = hpav18(tmp_path/'hpav18')
    for f in (d/'train', ext):                   # the installed command in its own process once, then in this one
        argv = ['hpa-pack', str(f), '--size', '32', '--n-workers', '0']
        r = subprocess.run(argv, capture_output=True, text=True, timeout=300) if f != ext else cli_here(argv, tmp_path)
        assert r.returncode == 0, r.stderr
        assert str(store_path(f, 32)) in r.stdout and len(open_store(store_path(f, 32))) == (16 if f != ext else 6)
    r = cli_here(['hpa-train', '--path', str(d), '--external', str(ext), '--external-csv', str(csv), '--size', '32', '--bs', '4',
                  '--epochs', '1', '--lr', '1e-3', '--arch', 'resnet18', '--num-workers', '0', '--tta', 'none', '--no-features',
                  '--out', str(tmp_path/'runs'), '--name', 'x'], tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert f'packed stores {store_path(d/"train", 32)}, {store_path(ext, 32)}' in r.stdout
    m = json.loads((tmp_path/'runs'/'x'/'metrics.json').read_text())
    assert m['data']['external']['n_samples'] == 6 and (tmp_path/'runs'/'x'/'submission.csv').exists()
