"Packed store: exactly the opener's values, resumable, corrupt samples named and left out, stale stores refused, batches equal to the per-item path's."
import os, shutil, warnings, json, numpy as np, pandas as pd, pytest, cv2, torch
from pathlib import Path
from types import SimpleNamespace
from torch import nn
from fastai.vision.all import Learner, BCEWithLogitsLossFlat, Resize, TensorMultiCategory, IntToFloatTensor
from hpa_fastai.all import *
import hpa_fastai.store as S
from hpa_fastai.core import HpaDataError, CHANNELS, HPA_CLASSES, read_labels, encode_targets
from hpa_fastai.data import open_rgby, read_channel, find_ids, multilabel_split, RGBYImage, rgby_opener, write_rgby
from hpa_fastai.dataloaders import rgby_dataloaders
from conftest import needs_real, REAL, REAL_SAMPLE_ID, make_fake

def _pack(folder, dest, **kw): return pack_rgby(folder, dest, **{'n_workers': 0, **kw})

@pytest.fixture
def fake12(tmp_path): return make_fake(tmp_path/'hpa', n=12, size=32)

@pytest.mark.parametrize('size', [24, 32, 48])
def test_values_equal_opener(fake12, tmp_path, size):
    folder = fake12/'train'
    st = open_store(_pack(folder, tmp_path/'st', size=size, chunk_size=5), folder=folder, size=size)
    ids = find_ids(folder)
    assert st.ids == ids and st.array.shape == (12, 4, size, size) and isinstance(st.array, np.memmap)
    for i in ids: np.testing.assert_array_equal(st.read([i])[0], open_rgby(folder, i, size=size).transpose(2, 0, 1))

def test_parallel_workers_and_channels(fake12, tmp_path):
    folder = fake12/'train'; ids = find_ids(folder)
    st = open_store(pack_rgby(folder, tmp_path/'st', size=40, n_workers=2, chunk_size=3, channels='gb'))
    assert st.channels == ('green', 'blue')
    np.testing.assert_array_equal(st.read(ids), np.stack([open_rgby(folder, i, size=40, channels=('green', 'blue')).transpose(2, 0, 1) for i in ids]))

def test_no_progress_text_off_terminal(fake12, tmp_path, capsys):
    pack_rgby(fake12/'train', tmp_path/'st', size=32, n_workers=2, chunk_size=2)
    out = capsys.readouterr()
    assert out.out == '' and '%' not in out.err

def test_default_dest(fake12):
    dest = pack_rgby(fake12/'train', size=32, n_workers=0)
    assert dest == fake12/'features_cache'/'store-train-32' and (dest/INDEX).exists()

def test_hpav18_colour_jpegs(tmp_path):
    "External HPAv18 samples: one colour JPEG per channel, reduced and resized exactly as `open_rgby` does"
    rng = np.random.default_rng(0); folder = tmp_path/'ext'; folder.mkdir()
    for k in range(3):
        for c in CHANNELS: cv2.imwrite(str(folder/f'1058{k}_1610_C1_1_{c}.jpg'), rng.integers(0, 256, (70, 70, 3), dtype=np.uint8))
    st = open_store(_pack(folder, tmp_path/'st', size=32))
    for i in find_ids(folder): np.testing.assert_array_equal(st.read([i])[0], open_rgby(folder, i, size=32).transpose(2, 0, 1))

@needs_real
def test_real_sample_and_pngs(tmp_path):
    for s in (512, 256):
        st = open_store(_pack(REAL/'sample_4ch', tmp_path/f'r{s}', size=s), folder=REAL/'sample_4ch', size=s)
        np.testing.assert_array_equal(st.read([REAL_SAMPLE_ID])[0], open_rgby(REAL/'sample_4ch', REAL_SAMPLE_ID, size=s).transpose(2, 0, 1))
    pngs = sorted((REAL/'single_channel').glob('*.png'))[:12]          # one channel per Id there: composed into 3 samples
    comp = tmp_path/'comp'; comp.mkdir()
    for k in range(3):
        for c, src in zip(CHANNELS, pngs[4*k:4*k+4]): shutil.copy(src, comp/f'real{k}_{c}.png')
    st = open_store(_pack(comp, tmp_path/'rc', size=512))
    for k in range(3):
        for ci, src in enumerate(pngs[4*k:4*k+4]): np.testing.assert_array_equal(st.read([f'real{k}'])[0, ci], read_channel(src))
    st256 = open_store(_pack(comp, tmp_path/'rc256', size=256))
    np.testing.assert_array_equal(st256.read(['real1'])[0], open_rgby(comp, 'real1', size=256).transpose(2, 0, 1))

def _counting(monkeypatch, fail_at=None, fail_ids=()):
    calls, orig = [], open_rgby
    def f(folder, i, size=None, channels=CHANNELS):
        calls.append(i)
        if len(calls) == fail_at: raise KeyboardInterrupt
        if i in fail_ids: raise RuntimeError('worker died')
        return orig(folder, i, size=size, channels=channels)
    monkeypatch.setattr(S, 'open_rgby', f)
    return calls

def test_resume_after_kill(fake12, tmp_path, monkeypatch):
    folder, dest = fake12/'train', tmp_path/'st'
    calls = _counting(monkeypatch, fail_at=8)                       # killed on the 3rd sample of the 2nd chunk of 5
    with pytest.raises(KeyboardInterrupt): pack_rgby(folder, dest, size=32, n_workers=0, chunk_size=5)
    assert not (dest/INDEX).exists() and len(list((dest/DONE).glob('*.json'))) == 1
    with pytest.raises(HpaDataError, match='interrupted'): open_store(dest)
    assert list_stores(tmp_path).chunks_done.tolist() == ['1/3']
    calls = _counting(monkeypatch)
    pack_rgby(folder, dest, size=32, n_workers=0, chunk_size=5)
    assert len(calls) == 7 and calls == find_ids(folder)[5:]       # only the two chunks not done
    assert sorted(p.name for p in dest.iterdir()) == [IMAGES, INDEX]
    monkeypatch.setattr(S, 'open_rgby', open_rgby)
    st = open_store(dest, folder=folder)
    np.testing.assert_array_equal(st.read(st.ids), np.stack([open_rgby(folder, i, size=32).transpose(2, 0, 1) for i in st.ids]))

def test_resume_after_worker_process_dies(fake12, tmp_path, monkeypatch):
    "A worker process raising in one chunk (the patched decoder is inherited by the forked workers): the rerun packs that chunk only"
    folder, dest = fake12/'train', tmp_path/'st'; ids = find_ids(folder)
    _counting(monkeypatch, fail_ids={ids[7]})
    with pytest.raises(RuntimeError, match='worker died'): pack_rgby(folder, dest, size=32, n_workers=2, chunk_size=3)
    assert len(list((dest/DONE).glob('*.json'))) == 3 and not (dest/INDEX).exists()
    calls = _counting(monkeypatch)
    pack_rgby(folder, dest, size=32, n_workers=0, chunk_size=3)
    assert calls == ids[6:9]

def test_killed_while_finishing(fake12, tmp_path, monkeypatch):
    "Killed after the array was renamed but before the index was written: the rerun finishes without decoding"
    folder, dest = fake12/'train', tmp_path/'st'
    orig = S.write_json
    def dying(fn, obj):
        if Path(fn).name == INDEX: raise KeyboardInterrupt
        return orig(fn, obj)
    monkeypatch.setattr(S, 'write_json', dying)
    with pytest.raises(KeyboardInterrupt): _pack(folder, dest, size=32)
    assert (dest/IMAGES).exists() and not (dest/INDEX).exists()
    with pytest.raises(HpaDataError, match='interrupted'): open_store(dest)
    monkeypatch.setattr(S, 'write_json', orig)
    calls = _counting(monkeypatch)
    _pack(folder, dest, size=32)
    assert calls == [] and len(open_store(dest, folder=folder)) == 12

def test_other_plan_discards_partial(fake12, tmp_path, monkeypatch):
    folder, dest = fake12/'train', tmp_path/'st'
    _counting(monkeypatch, fail_at=3)
    with pytest.raises(KeyboardInterrupt): pack_rgby(folder, dest, size=32, n_workers=0, chunk_size=2)
    calls = _counting(monkeypatch)
    pack_rgby(folder, dest, size=32, n_workers=0, chunk_size=2, ids=find_ids(folder)[:6])    # other Ids: start over
    assert len(calls) == 6 and len(open_store(dest)) == 6

def test_corrupt_image_reported_and_left_out(fake12, tmp_path):
    folder = fake12/'train'; ids = find_ids(folder); bid = ids[4]
    fn = folder/f'{bid}_blue.png'; fn.write_bytes(fn.read_bytes()[:50])
    (folder/f'{ids[7]}_yellow.png').unlink()
    with pytest.warns(UserWarning, match='2 sample') as w: dest = _pack(folder, tmp_path/'st', size=32, chunk_size=4)
    msg = str(w[0].message)
    assert bid in msg and f'{bid}_blue.png' in msg and ids[7] in msg and 'yellow' in msg
    st = open_store(dest, folder=folder)
    assert set(st.failed) == {bid, ids[7]} and bid not in st and len(st) == 10
    np.testing.assert_array_equal(st.read([ids[5]])[0], open_rgby(folder, ids[5], size=32).transpose(2, 0, 1))
    with pytest.raises(HpaDataError, match=f'{bid}_blue.png'): open_store(dest, ids=ids)
    with pytest.raises(HpaDataError, match='could not be read'): st.rows([bid])
    df = read_labels(fake12/'train.csv')
    with pytest.raises(HpaDataError, match='could not be read when packed'): store_dataloaders(st, df, [0, 1], [2])
    with warnings.catch_warnings(): warnings.simplefilter('error'); assert _pack(folder, dest, size=32, chunk_size=4) == dest   # reused: unchanged

def test_refuses_other_size_ids_channels(fake12, tmp_path):
    folder = fake12/'train'; ids = find_ids(folder)
    dest = _pack(folder, tmp_path/'st', size=32, ids=ids[:8])
    with pytest.raises(HpaDataError, match=r'packed at 32px.*repack=True'): open_store(dest, size=64)
    with pytest.raises(HpaDataError, match='4 of the 12 asked Ids are not in it'): open_store(dest, ids=ids)
    with pytest.raises(HpaDataError, match='channels'): open_store(dest, channels='rgb')
    with pytest.raises(HpaDataError, match='not in it'): _pack(folder, dest, size=32)
    _pack(folder, dest, size=32, repack=True)
    assert len(open_store(dest, ids=ids, size=32)) == 12

def test_refuses_changed_files(fake12, tmp_path):
    folder = fake12/'train'; ids = find_ids(folder)
    dest = _pack(folder, tmp_path/'st', size=32)
    fn = folder/f'{ids[3]}_red.png'
    img = 255 - read_channel(fn); cv2.imwrite(str(fn), img)
    os.utime(fn, ns=(fn.stat().st_atime_ns, fn.stat().st_mtime_ns + 10**9))
    with pytest.raises(HpaDataError, match=r'changed since it was packed.*repack=True'): open_store(dest, folder=folder)
    with pytest.raises(HpaDataError, match='changed since it was packed'): _pack(folder, dest, size=32)
    open_store(dest, folder=folder, ids=ids[:3])                        # only the asked Ids' files are checked
    fn.unlink()
    with pytest.raises(HpaDataError, match='changed'): open_store(dest, folder=folder)
    cv2.imwrite(str(fn), img)
    st = open_store(_pack(folder, dest, size=32, repack=True), folder=folder)
    np.testing.assert_array_equal(st.read([ids[3]])[0, 0], img)

def test_disk_space_refused(fake12, tmp_path, monkeypatch):
    monkeypatch.setattr(S.shutil, 'disk_usage', lambda p: SimpleNamespace(total=10**12, used=10**12 - 1000, free=1000))
    with pytest.raises(HpaDataError, match='packing needs .* but only .* is free'): _pack(fake12/'train', tmp_path/'st', size=32)
    assert not (tmp_path/'st').exists()

def test_not_a_store_folder(fake12, tmp_path):
    (tmp_path/'x').mkdir(); (tmp_path/'x'/'notes.txt').write_text('mine')
    with pytest.raises(HpaDataError, match='not a store'): _pack(fake12/'train', tmp_path/'x', size=32)
    with pytest.raises(HpaDataError, match='no packed store'): open_store(tmp_path/'x')
    assert prune_stores(tmp_path, sizes='all') == [] and (tmp_path/'x'/'notes.txt').exists()

def test_truncated_array_refused(fake12, tmp_path):
    dest = _pack(fake12/'train', tmp_path/'st', size=32)
    with open(dest/IMAGES, 'r+b') as f: f.truncate(1000)
    with pytest.raises(HpaDataError, match='cannot be read.*repack'): open_store(dest)

def test_in_memory(fake12, tmp_path):
    dest = _pack(fake12/'train', tmp_path/'st', size=32)
    a, b = open_store(dest).array, open_store(dest, in_memory=True).array
    assert isinstance(a, np.memmap) and not isinstance(b, np.memmap)
    np.testing.assert_array_equal(a, b)

def test_list_and_prune(fake12, tmp_path, monkeypatch):
    folder = fake12/'train'
    for s in (24, 32): _pack(folder, tmp_path/'stores'/f's{s}', size=s)
    _counting(monkeypatch, fail_at=2)
    with pytest.raises(KeyboardInterrupt): pack_rgby(folder, tmp_path/'stores'/'half', size=32, n_workers=0, chunk_size=4)
    ls = list_stores(tmp_path)
    assert len(ls) == 3 and ls.set_index('path').complete.to_dict() == {tmp_path/'stores'/'half': False, tmp_path/'stores'/'s24': True, tmp_path/'stores'/'s32': True}
    assert (ls.gb >= 0).all() and ls.set_index('path').loc[tmp_path/'stores'/'s24', 'n'] == 12
    assert prune_stores(tmp_path, dry_run=True) == [tmp_path/'stores'/'half'] and (tmp_path/'stores'/'half').exists()
    assert prune_stores(tmp_path) == [tmp_path/'stores'/'half'] and not (tmp_path/'stores'/'half').exists()
    f = folder/f'{find_ids(folder)[0]}_green.png'; os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    assert prune_stores(tmp_path, stale=True, keep=[tmp_path/'stores'/'s32']) == [tmp_path/'stores'/'s24']
    assert prune_stores(tmp_path, sizes='all') == [tmp_path/'stores'/'s32'] and list_stores(tmp_path).empty

# --- the batch loader

def _split(fake):
    df = read_labels(fake/'train.csv')
    return df, *multilabel_split(df, 0.25, seed=0)

def test_batches_equal_per_item_path(fake12, tmp_path):
    folder = fake12/'train'; df, tr, va = _split(fake12)
    st = open_store(_pack(folder, tmp_path/'st', size=48))
    dls = store_dataloaders(st, df, tr, va, bs=3, aug=False)
    ref = rgby_dataloaders(fake12, size=48, bs=3, valid_pct=0.25, seed=0, aug=False, num_workers=0)
    assert [p.name for p in ref.valid_ds.items] == list(df.Id.iloc[va]) and dls.valid_ds.ids == list(df.Id.iloc[va])
    n = 0
    for (x, y), (rx, ry) in zip(dls.valid, ref.valid):
        assert type(x) is RGBYImage and x.dtype == torch.float32 and type(y) is TensorMultiCategory and y.shape[1] == 28
        torch.testing.assert_close(x, rx, rtol=0, atol=0); torch.testing.assert_close(y.float(), ry.float(), rtol=0, atol=0)
        n += len(x)
    assert n == len(va)
    # the train loader on the same Ids (unshuffled copies of both), after Normalize
    a, b = dls.train.new(shuffle=False, drop_last=False), ref.train.new(shuffle=False, drop_last=False)
    torch.testing.assert_close(torch.cat([x for x, _ in a]), torch.cat([x for x, _ in b]), rtol=0, atol=0)

def test_uint8_delivery_and_sorted_reads(fake12, tmp_path):
    df, tr, va = _split(fake12)
    st = open_store(_pack(fake12/'train', tmp_path/'st', size=32, ids=list(df.Id)[::-1]))     # store rows in reverse label order
    dls = store_dataloaders(st, df, tr, va, bs=4, after_batch=[])
    x, y = dls.train.one_batch()
    assert x.dtype == torch.uint8 and type(x) is RGBYImage and x.shape == (4, 4, 32, 32)
    ds = dls.train_ds
    idxs = [0, 5, 2, 7]
    xs, ys = ds.batch(idxs, keep_order=False)                       # shuffled batches come back in row order
    order = sorted(idxs, key=lambda i: ds.rows[i])
    np.testing.assert_array_equal(xs.numpy(), st.read([ds.ids[i] for i in order]))
    np.testing.assert_array_equal(ys.numpy(), ds.y[order])
    xk, yk = ds.batch(idxs)                                          # unshuffled: the asked order
    np.testing.assert_array_equal(xk.numpy(), st.read([ds.ids[i] for i in idxs]))
    np.testing.assert_array_equal(yk.numpy(), encode_targets(df.Target.iloc[tr[idxs]]))
    seen = []
    for xb, yb in dls.train: seen.append(len(xb))
    assert seen == [4] * (len(tr) // 4)                             # drop_last on the training split

def test_item_tfms_refused(fake12, tmp_path):
    df, tr, va = _split(fake12)
    st = open_store(_pack(fake12/'train', tmp_path/'st', size=32))
    with pytest.raises(ValueError, match='item_tfms.*cannot run on a packed store'): store_dataloaders(st, df, tr, va, item_tfms=Resize(16))
    with pytest.raises(ValueError, match='after_item'): StoreDataLoader(StoreDataset(st, df.Id), after_item=[Resize(16)])

def test_missing_ids_refused(fake12, tmp_path):
    df, tr, va = _split(fake12)
    st = open_store(_pack(fake12/'train', tmp_path/'st', size=32, ids=list(df.Id[:6])))
    with pytest.raises(HpaDataError, match=r'6 labelled Id\(s\) are not in the store.*repack'): store_dataloaders(st, df, tr, va)

def test_learner_one_epoch(fake12, tmp_path):
    df, tr, va = _split(fake12)
    dls = store_dataloaders(_pack(fake12/'train', tmp_path/'st', size=32), df, tr, va, bs=4)     # a path works too
    net = nn.Sequential(nn.Conv2d(4, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 28))
    learn = Learner(dls, net, loss_func=BCEWithLogitsLossFlat())
    with learn.no_bar(), learn.no_logging():
        learn.fit(1, 1e-2)
        train_loss = learn.recorder.values[-1][0]                    # read before get_preds resets the Recorder
        preds, targs = learn.get_preds()
    assert np.isfinite(train_loss) and preds.shape == (len(va), 28)
    np.testing.assert_array_equal(targs.numpy(), encode_targets(df.Target.iloc[va]))
    learn.export(tmp_path/'m.pkl')                                  # the dls are emptied for export: no memmap pickled
    assert (tmp_path/'m.pkl').stat().st_size < 5e6

def test_hpa_learner_on_store(fake12, tmp_path):
    from hpa_fastai.learner import hpa_learner
    from fastai.vision.all import resnet18
    df, tr, va = _split(fake12)
    dls = store_dataloaders(_pack(fake12/'train', tmp_path/'st', size=32), df, tr, va, bs=4)
    assert rgby_opener(dls).size == 32 and len(dls.vocab) == 28
    learn = hpa_learner(dls, arch=resnet18, pretrained=False)          # the library's learner takes the store's dls as they are
    x, y = dls.valid.one_batch()
    with torch.no_grad(): assert learn.model.eval()(x).shape == (len(x), 28)

def test_show_batch_and_results(fake12, tmp_path):
    import matplotlib.pyplot as plt
    df, tr, va = _split(fake12)
    dls = store_dataloaders(_pack(fake12/'train', tmp_path/'st', size=32), df, tr, va, bs=4)
    x, y, its = dls.valid.show_batch(max_n=2, show=False)
    assert type(its[0][0]) is RGBYImage and list(its[0][1]) == [HPA_CLASSES[i] for i in df.Target.iloc[va[0]]]
    dls.show_batch(max_n=2)
    net = nn.Sequential(nn.Conv2d(4, 8, 3, stride=2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 28))
    learn = Learner(dls, net, loss_func=BCEWithLogitsLossFlat())
    with learn.no_bar(): learn.show_results(max_n=2)
    plt.close('all')

def test_features_second_input(fake12, tmp_path):
    from hpa_fastai.features import feature_table, FeatureNorm, FeatureTensor, FEATURE_NAMES
    folder = fake12/'train'; df, tr, va = _split(fake12)
    ft = feature_table(folder, n_workers=0, cache=False)
    norm = FeatureNorm.fit(ft.set_index('Id').loc[df.Id.iloc[tr]])
    dls = store_dataloaders(_pack(folder, tmp_path/'st', size=32), df, tr, va, bs=4, aug=False, features=ft,
                            feature_norm=norm, feature_type=FeatureTensor)
    x, f, y = dls.valid.one_batch()
    assert dls.n_inp == 2 and type(f) is FeatureTensor and f.shape == (len(va), 10) and y.shape == (len(va), 28)
    np.testing.assert_allclose(f.numpy(), norm(ft.set_index('Id').loc[df.Id.iloc[va], FEATURE_NAMES].to_numpy(np.float32)), atol=1e-6)
    with pytest.raises(HpaDataError, match='no features for'): store_dataloaders(open_store(tmp_path/'st'), df, tr, va, features=ft.iloc[:5])

def test_device_cache(fake12, tmp_path, capsys):
    df, tr, va = _split(fake12)
    st = open_store(_pack(fake12/'train', tmp_path/'st', size=32))
    dls = store_dataloaders(st, df, tr, va, bs=4, aug=False, device_cache=True, device='cpu')
    assert 'no CUDA device' in capsys.readouterr().out and dls.valid_ds._src is None
    rows = st.rows(df.Id)
    cache, remap = S._device_cache(st, rows, 'cpu')           # the copy itself, on the CPU
    np.testing.assert_array_equal(cache[torch.as_tensor(remap)].numpy(), st.array[rows])
    ds = StoreDataset(st, df.Id.iloc[va], encode_targets(df.Target.iloc[va]), src=cache, rows=remap[va])
    np.testing.assert_array_equal(ds.batch(np.arange(len(va)))[0].numpy(), st.read(df.Id.iloc[va]))

@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_pinned_and_device_cache(fake12, tmp_path):
    df, tr, va = _split(fake12)
    st = open_store(_pack(fake12/'train', tmp_path/'st', size=32))
    dls = store_dataloaders(st, df, tr, va, bs=4, after_batch=[])
    assert next(dls.valid.create_batches(iter(range(2))))[0].is_pinned()
    x = dls.valid.one_batch()[0]; assert x.is_cuda and x.dtype == torch.uint8
    g = store_dataloaders(st, df, tr, va, bs=4, aug=False, device_cache=True)
    assert g.valid_ds.src.is_cuda
    torch.testing.assert_close(g.valid.one_batch()[0], store_dataloaders(st, df, tr, va, bs=4, aug=False).valid.one_batch()[0], rtol=0, atol=0)

def test_num_workers(fake12, tmp_path):
    "Process workers are ignored, with a warning: a packed store is read a whole batch at a time, in this process"
    df, tr, va = _split(fake12)
    st = open_store(_pack(fake12/'train', tmp_path/'st', size=32))
    with pytest.warns(UserWarning, match='num_workers=2 ignored'):
        a = store_dataloaders(st, df, tr, va, bs=2, aug=False, num_workers=2)
    assert a.train.fake_l.num_workers == 0 and a.valid.fake_l.num_workers == 0
    with pytest.warns(UserWarning, match='num_workers=3 ignored'): StoreDataLoader(a.train.dataset, bs=2, num_workers=3)
    b = store_dataloaders(st, df, tr, va, bs=2, aug=False)
    torch.testing.assert_close(torch.cat([x for x, _ in a.valid]), torch.cat([x for x, _ in b.valid]), rtol=0, atol=0)

# --- several stores read as one (Kaggle + external)

def test_union_reads_each_store(fake12, tmp_path):
    folder = fake12/'train'; ids = find_ids(folder); df, tr, va = _split(fake12)
    a, b = (open_store(_pack(folder, tmp_path/n, size=32, ids=part)) for n, part in (('a', ids[7:]), ('b', ids[:7])))
    u = StoreUnion([a, b])
    assert len(u) == 12 and u.rows([ids[7], ids[0]]).tolist() == [0, 5] and u.item_shape == (4, 32, 32)
    order = [ids[3], ids[9], ids[0], ids[11], ids[3]]                  # both stores, repeated, out of order
    ref = np.stack([open_rgby(folder, i, size=32).transpose(2, 0, 1) for i in order])
    np.testing.assert_array_equal(u.read(order), ref)
    rows = u.rows(order)
    np.testing.assert_array_equal(u.read_rows(rows, keep_order=False), ref[np.argsort(rows, kind='stable')])
    np.testing.assert_array_equal(u.read(ids[7:9]), a.read(ids[7:9]))   # all from one store
    cache, remap = S._device_cache(u, rows, 'cpu')
    np.testing.assert_array_equal(cache[torch.as_tensor(remap)].numpy(), ref)
    dls = store_dataloaders([tmp_path/'a', tmp_path/'b'], df, tr, va, bs=3, aug=False)   # a list of paths: read as one
    one = store_dataloaders(_pack(folder, tmp_path/'all', size=32), df, tr, va, bs=3, aug=False)
    for x, y in ((dls.valid, one.valid), (dls.train.new(shuffle=False, drop_last=False), one.train.new(shuffle=False, drop_last=False))):
        torch.testing.assert_close(torch.cat([o[0] for o in x]), torch.cat([o[0] for o in y]), rtol=0, atol=0)
    assert dls.train_ds.items == one.train_ds.items
    with pytest.raises(HpaDataError, match='a sample must come from one store'): StoreUnion([a, open_store(tmp_path/'all')])
    with pytest.raises(HpaDataError, match='pack both folders at one size'): StoreUnion([a, open_store(_pack(folder, tmp_path/'c', size=24, ids=ids[:7]))])
    with pytest.raises(HpaDataError, match="'nope' is not in this store"): u.rows(['nope'])

def test_union_names_failed_sample(fake12, tmp_path):
    folder = fake12/'train'; ids = find_ids(folder)
    fn = folder/f'{ids[2]}_red.png'; fn.write_bytes(fn.read_bytes()[:40])
    a = open_store(_pack(folder, tmp_path/'a', size=32, ids=ids[6:]))
    with pytest.warns(UserWarning): b = open_store(_pack(folder, tmp_path/'b', size=32, ids=ids[:6]))
    u = StoreUnion([a, b])
    assert ids[2] in u.failed and ids[2] not in u
    with pytest.raises(HpaDataError, match=f'{ids[2]}.*could not be read when packed'): u.rows([ids[2]])
