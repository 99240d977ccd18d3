"Per-cell tools on toy fields: crops and masks, the COCO RLE format, the cell store, bags and their pooling, the per-cell file, hpa-cells."
import base64, json, zlib, numpy as np, pandas as pd, pytest, torch
from pathlib import Path
from hpa_fastai.core import HpaConfigError, HpaDataError, encode_targets
from hpa_fastai.data import write_rgby
from hpa_fastai.cells.all import *
from hpa_fastai.cells.commands import hpa_cells

LAYOUTS = [[(16, 16), (46, 20), (30, 46)], [(14, 14), (46, 46), (14, 48), (48, 12)], [(32, 32)], [(20, 40), (44, 24)],
           [(16, 16), (48, 48)], [(30, 14), (30, 48), (12, 30)], [(40, 40)], [(16, 44), (44, 16), (44, 46)]]

@pytest.fixture(scope='module')
def toyset(tmp_path_factory):
    "Eight toy fields in the Kaggle layout, with image labels and per-cell truth (class 3 in some cells, 5 in others)"
    d = tmp_path_factory.mktemp('toycells'); truths, labels = [], []
    for k, cs in enumerate(LAYOUTS):
        green = [[3] if (k + j) % 2 else ([5] if k % 3 == 0 else []) for j in range(len(cs))]
        x, t = toy_field(cs, size=64, green=green, id_=f'img{k}')
        write_rgby(d/'train', f'img{k}', x); truths.append(t)
        labels.append(' '.join(map(str, sorted({c for g in green for c in g}))) or '0')
    pd.DataFrame({'Id': [f'img{k}' for k in range(len(LAYOUTS))], 'Target': labels}).to_csv(d/'train.csv', index=False)
    pd.concat(truths).to_csv(d/'train_cells.csv', index=False)
    return d

def test_crops_masks_boxes():
    x, _ = toy_field(LAYOUTS[0], size=64, green=[[3], [], [3]])
    xs, lab = field_cells(x, None)
    assert lab.max() == 3
    cc = cell_crops(xs, lab, size=20, masked=True)
    assert cc.crops.shape == (3, 4, 20, 20) and cc.masks.shape == (3, 20, 20)
    assert cc.crops.transpose(1, 0, 2, 3)[:, ~cc.masks].max() == 0
    assert cc.crops[0, 1].max() > 100 and cc.crops[1, 1].max() == 0          # green only in the labelled cells
    for (x0, y0, x1, y1), k in zip(cc.boxes, cc.labels):
        ys, xs_ = np.nonzero(lab == k)
        assert (x0, y0, x1, y1) == (xs_.min(), ys.min(), xs_.max() + 1, ys.max() + 1)
    wins = cc.windows
    assert ((wins[:, 2] - wins[:, 0]) == (wins[:, 3] - wins[:, 1])).all()   # square windows
    cut = cell_crops(xs, lab, size=20, masked=False)
    assert (cut.crops * cut.masks[:, None] == cc.crops).all()                  # masked = context × mask

def test_edge_cell_padded():
    x, _ = toy_field([(3, 30), (40, 30)], size=64, r_nucleus=5, r_cell=10)
    xs, lab = field_cells(x, None)
    cc = cell_crops(xs, lab, size=16, margin=0.2)
    assert cc.windows[:, 0].min() < 0 and len(cc) == lab.max()

def test_rle_pycocotools_strings_and_round_trip():
    sq = np.zeros((5, 6), bool); sq[1:4, 2:5] = True
    assert rle_to_string(coco_rle(sq)) == ';320004'                            # pycocotools 2.0.11
    m2 = np.zeros((7, 5), bool); m2[0, 0] = True; m2[2:7, 1] = True; m2[6, 4] = True
    assert rle_to_string(coco_rle(m2)) == '0184<L'
    rng = np.random.default_rng(1)
    for shape in [(1, 1), (9, 4), (40, 33)]:
        m = rng.random(shape) > 0.5
        s = encode_binary_mask(m)
        assert zlib.decompress(base64.b64decode(s)).decode() == rle_to_string(coco_rle(m))
        assert (decode_binary_mask(s, *shape) == m).all()
    with pytest.raises(ValueError, match='not a base64'): decode_binary_mask('@@@', 2, 2)

def test_bag_pool():
    z = torch.tensor([[1., -2.], [-1., 0.], [3., 3.]]); bag = torch.tensor([0, 0, 1])
    p = torch.sigmoid(z)
    assert torch.allclose(torch.sigmoid(bag_pool(z, bag, 'noisy_or'))[0], 1 - (1 - p[0]) * (1 - p[1]), atol=1e-5)
    assert torch.allclose(bag_pool(z, bag, 'max')[0], torch.tensor([1., 0.]))
    assert torch.allclose(bag_pool(z, bag, 'mean')[0], z[:2].mean(0))
    att = torch.tensor([[20., -20.], [-20., 20.], [0., 0.]])
    assert torch.allclose(bag_pool(z, bag, 'attention', att=att)[0], torch.tensor([1., 0.]), atol=1e-4)
    for how in POOLS: assert torch.allclose(bag_pool(z, bag, how, att=att)[1], z[2], atol=1e-4)
    assert torch.allclose(bag_softmax(att, bag, 2)[:2].sum(0), torch.ones(2))
    zz = z.clone().requires_grad_(); bag_pool(zz, bag, 'noisy_or').sum().backward(); assert torch.isfinite(zz.grad).all()

def test_store_dataloaders_match_submission(toyset, tmp_path):
    sd = pack_cells(toyset/'train', tmp_path/'st', size=16, seg_size=64, n_workers=0, chunk_size=3)
    st = open_cells(sd, folder=toyset/'train')
    assert len(st) == sum(map(len, LAYOUTS)) and st.table.cell_id[0] == 'img0_1'
    df = pd.read_csv(toyset/'train.csv')
    dls = cell_dataloaders(st, df, [0, 1, 2, 3, 4, 5], [6, 7], bs=4, aug=False, device='cpu')
    train_imgs = {c.rsplit('_', 1)[0] for c in st.table.cell_id.iloc[dls.train_ds.rows_flat]}
    valid_imgs = {c.rsplit('_', 1)[0] for c in st.table.cell_id.iloc[dls.valid_ds.rows_flat]}
    assert train_imgs == {f'img{k}' for k in range(6)} and valid_imgs == {'img6', 'img7'}
    bdl = cell_dataloaders(st, df, [0, 1, 2, 3, 4, 5], [6, 7], bags=True, bs=3, aug=False, device='cpu')
    x, bag, y = bdl.valid.one_batch()
    assert x.shape[0] == len(bag) == 4 and bag.tolist() == [0, 1, 1, 1] and y.shape == (2, 28)
    mc = match_cells(st, read_cell_truth(toyset/'train_cells.csv'))
    assert (mc.n_true == 1).all() and len(mc) == len(st)
    truth = read_cell_truth(toyset/'train_cells.csv')
    for r, tg in zip(mc.row, mc.Target):                                        # each cell matched to the true cell at its centre
        c = st.table.iloc[r]; g = truth[truth.Id == c.Id]
        near = np.argmin(np.hypot(g.x - (c.x0 + c.x1) / 2, g.y - (c.y0 + c.y1) / 2))
        assert g.Target.iloc[near] == tg
    t = encode_targets(mc.Target)
    assert cell_scores(t * 0.9, t)['mAP'] == 1.
    fn = cell_submission(tmp_path/'sub.csv', st.table, t * 0.9 + 0.05, min_conf=0.5)
    back = read_cell_submission(fn)
    assert len(back) == int(t.sum()) and set(back.label) == {3, 5}
    first = back.iloc[0]; assert first.ImageID == 'img0' and first['mask'].shape == (64, 64)

def test_cli_pack_train_predict(toyset, tmp_path, capsys):
    common = ['--size', '16', '--seg-size', '64', '--n-workers', '0', '--cache-dir', str(tmp_path/'cache')]
    with pytest.raises(SystemExit) as e: hpa_cells(['train', str(toyset), '--epochs', '0', *common])
    assert e.value.code == 2 and 'epochs' in capsys.readouterr().err
    with pytest.raises(SystemExit) as e: hpa_cells(['pack', str(tmp_path/'missing'), *common])
    assert e.value.code == 1
    hpa_cells(['pack', str(toyset/'train'), *common])
    assert '[hpa] cell store' in capsys.readouterr().out
    hpa_cells(['train', str(toyset), '--epochs', '1', '--out', str(tmp_path/'runs'), '--name', 'r', '--bs', '4', '--valid-pct', '0.25', '--n-hidden', '16', *common])
    out = capsys.readouterr().out
    assert 'validation images: macro-F1' in out and 'cells: macro-F1' in out and '\r' not in out
    run = tmp_path/'runs'/'r'
    assert {'model.pth', 'config.json', 'metrics.json'} <= {p.name for p in run.iterdir()}
    hpa_cells(['predict', str(run), str(toyset/'train'), '--out', str(tmp_path/'sub.csv'), '--n-workers', '0', '--cache-dir', str(tmp_path/'cache')])
    sub = pd.read_csv(tmp_path/'sub.csv', keep_default_na=False)
    assert len(sub) == len(LAYOUTS) and len(sub.PredictionString[0].split()) == 3 * 28 * len(LAYOUTS[0])
    with pytest.raises(SystemExit) as e: hpa_cells(['predict', str(tmp_path), str(toyset/'train')])
    assert e.value.code == 1
    tab = pd.read_csv(run/'cells.csv', keep_default_na=False)                  # the per-cell table, beside the submission
    assert len(tab) == sum(map(len, LAYOUTS)) and {'Id', 'cell', 'x', 'y', 'x0', 'y1', 'area', 'rle'} <= set(tab.columns)
    _stacks_predict(toyset, tmp_path, run, capsys)

def _stacks_predict(toyset, tmp_path, run, capsys):
    "A user's 16-bit, 2.5x magnified, non-square OME-TIFF stacks through `hpa-cells predict`: a table per cell, not a silent empty result"
    import tifffile, cv2
    from hpa_fastai.data import open_rgby
    (tmp_path/'mine').mkdir()
    for k in range(3):
        x = open_rgby(toyset/'train', f'img{k}')
        big = cv2.resize(x, (200, 160), interpolation=cv2.INTER_LINEAR).astype(np.uint16) * 200        # 16-bit, nuclei ~25 px
        tifffile.imwrite(tmp_path/'mine'/f'm{k}.ome.tif', big.transpose(2, 0, 1), metadata={'axes': 'CYX'})
    hpa_cells(['predict', str(run), str(tmp_path/'mine'), '--out', str(tmp_path/'msub.csv'), '--table', str(tmp_path/'mine.parquet'),
               '--features', '--n-workers', '0', '--cache-dir', str(tmp_path/'cache')])
    tab = pd.read_parquet(tmp_path/'mine.parquet')
    assert len(tab) == sum(map(len, LAYOUTS[:3])) and tab.x1.max() <= 200 and tab.y1.max() <= 160 and 'green_in_nucleus' in tab
    assert 'warning: no cell' not in capsys.readouterr().out
    pytest.importorskip('anndata')
    import anndata
    hpa_cells(['predict', str(run), str(tmp_path/'mine'), '--out', str(tmp_path/'msub.csv'), '--table', str(tmp_path/'mine.h5ad'),
               '--n-workers', '0', '--cache-dir', str(tmp_path/'cache')])
    ad = anndata.read_h5ad(tmp_path/'mine.h5ad')
    assert ad.shape == (len(tab), 28) and ad.obs.Id.nunique() == 3 and ad.obsm['spatial'].shape == (len(tab), 2)

def test_finish_streams_chunks(toyset, tmp_path):
    "The chunks are gathered one at a time: peak RAM of `_finish_cells` does not grow with the number of chunks"
    import shutil, tracemalloc
    from hpa_fastai.cells.store import _pack_cells_chunk, _finish_cells, CELL_STORE_FORMAT
    ids, s = [f'img{k}' for k in range(len(LAYOUTS))], 64
    src = tmp_path/'src'; src.mkdir()
    for k, i in enumerate(ids): _pack_cells_chunk((toyset/'train', src/f'{k:06d}.npz', [i], s, 64, 0.1, False))
    plan = dict(format=CELL_STORE_FORMAT, folder=str(toyset/'train'), size=s, seg_size=64, margin=0.1, rle=False, chunk_size=1, ids=ids, fingerprints=[])
    def finish(times):                                                           # the chunks gathered `times` over: a store `times` as large
        dest = tmp_path/f'st{times}'; shutil.copytree(src, dest/'chunks')
        fns = sorted((dest/'chunks').glob('*.npz')) * times
        tracemalloc.start()
        try: _finish_cells(dest, plan, fns); return dest, tracemalloc.get_traced_memory()[1]
        finally: tracemalloc.stop()
    (d1, p1), (d6, p6) = finish(1), finish(6)
    n = sum(map(len, LAYOUTS))
    assert p6 < 1.5 * p1 and p6 < 6 * n * 5 * s * s / 4, (p1, p6)             # loading every chunk would take 6× the arrays
    st, st6 = CellStore(d1), CellStore(d6)
    assert len(st) == n and len(st6) == 6 * n and (st6.crops[n:2 * n] == st.crops).all() and (st6.masks[-n:] == st.masks).all()
    ref = open_cells(pack_cells(toyset/'train', tmp_path/'ref', size=s, seg_size=64, n_workers=0, chunk_size=8, rle=False))
    assert (st.crops == ref.crops).all() and (st.masks == ref.masks).all() and st.table.cell_id.tolist() == ref.table.cell_id.tolist()
    assert st.sizes == {i: (64, 64) for i in ids} and not (d1/'chunks').exists()

def test_old_store_refused(toyset, tmp_path):
    import json
    sd = pack_cells(toyset/'train', tmp_path/'st', size=16, seg_size=64, n_workers=0, ids=['img0', 'img1'])
    index = json.loads((sd/'index.json').read_text()); index['format'] = 'hpa_fastai.cells/1'; index.pop('sizes')
    (sd/'index.json').write_text(json.dumps(index))
    with pytest.raises(HpaDataError, match='repack'): open_cells(sd)
    with pytest.raises(HpaDataError, match='repack'): pack_cells(toyset/'train', sd, size=16, seg_size=64, n_workers=0, ids=['img0', 'img1'])

def test_dataloaders_split_on_ids(toyset, tmp_path):
    sd = pack_cells(toyset/'train', tmp_path/'st', size=16, seg_size=64, n_workers=0)
    st = open_cells(sd)
    df = pd.read_csv(toyset/'train.csv')
    dup = pd.concat([df, df.iloc[[2]]], ignore_index=True)                       # img2 twice: rows 2 and 8
    with pytest.raises(HpaDataError, match="Id 'img2'"): cell_dataloaders(st, dup, [0, 1, 2, 3, 4, 5], [6, 7, 8], device='cpu')
    with pytest.raises(HpaDataError, match=r"'img2' is on rows \[2, 8\]"): cell_dataloaders(st, dup, [0, 1, 2, 3, 4, 5, 8], [6, 7], device='cpu')
    with pytest.raises(HpaDataError, match="Id 'img1'"): cell_dataloaders(st, df, [0, 1], [1, 2], device='cpu')

def test_match_cells_non_square(tmp_path):
    "A 128×64 field is squashed to 128×128 for segmentation: true centres must be scaled by width in x and by height in y"
    x, truth = toy_field([(32, 44), (96, 44)], size=128, r_nucleus=6, r_cell=14, green=[[3], [5]], id_='wide')
    write_rgby(tmp_path/'img', 'wide', x[:64])
    st = open_cells(pack_cells(tmp_path/'img', tmp_path/'st', size=32, seg_size=128, n_workers=0))
    assert len(st) == 2 and st.sizes == {'wide': (128, 64)} and (st.table.height == 64).all()
    mc = match_cells(st, truth.assign(Target=[[3], [5]]))
    assert mc.n_true.tolist() == [1, 1] and sorted(map(tuple, mc.Target)) == [(3,), (5,)]

def test_cli_predict_sizes(toyset, tmp_path, capsys):
    "predict: an explicit --size other than the run's is refused, and an image without cells gets its own width and height"
    import shutil
    common = ['--size', '16', '--seg-size', '64', '--n-workers', '0', '--cache-dir', str(tmp_path/'cache')]
    hpa_cells(['train', str(toyset), '--epochs', '1', '--out', str(tmp_path/'runs'), '--name', 'r', '--bs', '4', '--valid-pct', '0.25',
               '--n-hidden', '16', '--mode', 'inherit', '--n', '6', *common])
    run, test = tmp_path/'runs'/'r', tmp_path/'test'
    shutil.copytree(toyset/'train', test); write_rgby(test, 'blank', np.zeros((40, 56, 4), np.uint8))
    capsys.readouterr()
    with pytest.raises(SystemExit) as e: hpa_cells(['predict', str(run), str(test), '--size', '48', '--seg-size', '512', '--cache-dir', str(tmp_path/'cache')])
    assert e.value.code == 2 and 'trained on' in capsys.readouterr().err
    hpa_cells(['predict', str(run), str(test), '--out', str(tmp_path/'sub.csv'), '--n-workers', '0', '--cache-dir', str(tmp_path/'cache')])
    sub = pd.read_csv(tmp_path/'sub.csv', keep_default_na=False).set_index('ImageID')
    assert len(sub) == len(LAYOUTS) + 1 and sub.loc['blank', 'PredictionString'] == ''
    assert tuple(sub.loc['blank', ['ImageWidth', 'ImageHeight']]) == (56, 40) and tuple(sub.loc['img0', ['ImageWidth', 'ImageHeight']]) == (64, 64)

def test_train_predict_from_python(toyset, tmp_path):
    "`train_cells` and `predict_cells` with keyword arguments: the run folder and its scores, the submission and the table"
    run = train_cells(toyset, out=tmp_path/'runs', mode='inherit', epochs=1, bs=4, valid_pct=0.25, n_hidden=16, size=16,
                      seg_size=64, n_workers=0, cache_dir=tmp_path/'cache')
    assert run == tmp_path/'runs'/'inherit-16px'
    cfg = json.loads((run/'config.json').read_text())
    assert cfg['pool'] is None and cfg['size'] == 16 and cfg['mode'] == 'inherit'
    assert {'image', 'cell', 'n_valid_images'} <= set(json.loads((run/'metrics.json').read_text()))
    sub, tab = predict_cells(run, toyset/'train', out=tmp_path/'sub.csv', table=tmp_path/'cells.parquet', min_conf=0.5,
                             n_workers=0, cache_dir=tmp_path/'cache')
    assert sub == tmp_path/'sub.csv' and len(pd.read_csv(sub)) == len(LAYOUTS)
    assert len(pd.read_parquet(tab)) == sum(map(len, LAYOUTS))
    with pytest.raises(HpaConfigError, match='epochs must be at least 1'): train_cells(toyset, epochs=0)
    with pytest.raises(HpaConfigError, match='a trained run is there'):
        train_cells(toyset, out=tmp_path/'runs', mode='inherit', size=16, seg_size=64)
    with pytest.raises(HpaConfigError, match='trained on'): predict_cells(run, toyset/'train', size=32)
    with pytest.raises(HpaDataError, match='no model.pth'): predict_cells(tmp_path, toyset/'train')

def test_cli_subcommands(capsys):
    "`hpa-cells --help` lists the sub-commands; an unknown one or none exits 2 naming them; each has its own --help"
    hpa_cells(['--help']); out = capsys.readouterr().out
    assert all(k in out for k in ('pack', 'train', 'predict'))
    for argv in (['fit'], []):
        with pytest.raises(SystemExit) as e: hpa_cells(argv)
        assert e.value.code == 2 and 'choose one of pack, train, predict' in capsys.readouterr().err
    with pytest.raises(SystemExit) as e: hpa_cells(['predict', '--help'])
    assert e.value.code == 0 and '--min-conf' in capsys.readouterr().out
