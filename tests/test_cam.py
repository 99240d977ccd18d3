"Class maps per cell on tiny drawn fields: pooling inside masks, the dense body, fusion (leak-free), the edge and Negative rules, external label images (API and `hpa-cells pack --masks`)."
import cv2, numpy as np, pandas as pd, pytest, torch, warnings
from pathlib import Path
from hpa_fastai.core import HpaDataError
from hpa_fastai.data import write_rgby
from hpa_fastai.learner import hpa_body
from hpa_fastai.cells.all import *
from hpa_fastai.cells.commands import hpa_cells

LAYOUTS = [[(16, 16), (46, 20), (30, 46)], [(14, 14), (46, 46), (14, 48), (48, 12)], [(32, 32)], [(20, 40), (44, 24)]]

@pytest.fixture(scope='module')
def fields(tmp_path_factory):
    "Four toy fields in the Kaggle layout and their cells as 16-bit label images numbered from 1000 (`masks/`)"
    d = tmp_path_factory.mktemp('camfields'); (d/'masks').mkdir()
    for k, cs in enumerate(LAYOUTS):
        x, _ = toy_field(cs, size=64, green=[[3]] * len(cs), id_=f'f{k}')
        write_rgby(d/'train', f'f{k}', x)
        lab = field_cells(x, None)[1]
        cv2.imwrite(str(d/'masks'/f'f{k}_cellmask.png'), np.where(lab > 0, lab + 999, 0).astype(np.uint16))
    pd.DataFrame({'Id': [f'f{k}' for k in range(len(LAYOUTS))], 'Target': ['3'] * len(LAYOUTS)}).to_csv(d/'train.csv', index=False)
    return d

def test_pool_in_cells_means_and_maxes_inside_each_mask():
    lab = np.zeros((6, 6), int); lab[:3, :3] = 4; lab[3:, :] = 9                    # labels need not be 1..n
    maps = np.zeros((2, 6, 6), np.float32); maps[0, :3, :3] = 2.; maps[0, 0, 0] = 11.; maps[1] = np.arange(36).reshape(6, 6)
    cells, v = pool_in_cells(maps, lab)
    assert cells.tolist() == [4, 9]
    np.testing.assert_allclose(v[:, 0], [(8 * 2 + 11) / 9, 0]); np.testing.assert_allclose(v[:, 1], [7, 26.5])
    np.testing.assert_allclose(pool_in_cells(maps, lab, 'max')[1], [[11, 14], [0, 35]])
    assert (pool_in_cells(maps, lab)[1][:, 0] != 0).sum() == 1                    # background and the other cell do not leak in
    with pytest.raises(ValueError, match="'mean' or 'max'"): pool_in_cells(maps, lab, 'median')
    with pytest.raises(ValueError, match=r'\(C, h, w\)'): pool_in_cells(maps[0], lab)

def test_dense_body_is_the_same_map_at_finer_stride_resnet34():
    body = hpa_body('resnet34', pretrained=False, channels='rgby').eval(); x = torch.randn(1, 4, 64, 64)
    with torch.no_grad(): a, d = body(x), dense_body(body, 2).eval()(x)
    assert d.shape[-1] == 4 * a.shape[-1]
    torch.testing.assert_close(d[..., ::4, ::4], a, atol=1e-4, rtol=1e-4)
    assert sum(p.numel() for p in body.parameters()) == sum(p.numel() for p in dense_body(body).parameters())

def test_fusion_formulas_and_choices_made_on_the_other_images():
    np.testing.assert_allclose(fuse_cell_scores([[0.04]], [[1.0]], 'product', 0.5), [[0.2]])
    np.testing.assert_allclose(fuse_cell_scores([[0.2, 1.]], [[0.6, 0.]], 'mean', 0.25), [[0.5, 0.25]])
    with pytest.raises(ValueError, match='between 0 and 1'): fuse_cell_scores([[0.2]], [[0.6]], 'mean', 1.5)
    rng = np.random.default_rng(1); groups = np.repeat(np.arange(30), 6)
    t = rng.random((180, 28)) < 0.2; cell, image = rng.random((180, 28)), rng.random((180, 28))
    out, chosen = crossfit_fusion(cell, image, t, groups, folds=2, seed=0)
    fold0 = np.array([c['fold'] for c in chosen])
    # what fold 0's cells get is chosen on fold 1's: scrambling fold 0's truth does not change fold 0's choice
    u = np.unique(groups); fold_of = dict(zip(np.random.default_rng(0).permutation(u), np.arange(len(u)) % 2))
    fo = np.array([fold_of[g] for g in groups])                                    # the images dealt to the folds, as documented
    np.testing.assert_allclose(out[fo == 0], fuse_cell_scores(cell[fo == 0], image[fo == 0], chosen[0]['how'], chosen[0]['w']))
    t2 = t.copy(); t2[fo == 0] = rng.random(((fo == 0).sum(), 28)) < 0.5
    assert crossfit_fusion(cell, image, t2, groups, folds=2, seed=0)[1][0] == chosen[0] and len(fold0) == 2
    with pytest.raises(ValueError, match='3 images for 4 folds'): crossfit_fusion(cell[:18], image[:18], t[:18], groups[:18], folds=4)

def test_border_cells_and_rules_on_a_drawn_field():
    lab = np.zeros((10, 10), int); lab[0:3, 4:7] = 1; lab[4:7, 4:7] = 2; lab[7:10, 0:2] = 3
    assert border_cells(lab).tolist() == [1, 3] and border_cells(lab, width=4).tolist() == [1, 2, 3]
    x = np.zeros((10, 10, 4), np.uint8); x[..., 1] = np.where(lab == 2, 2, 40)     # cell 2 barely shows the protein
    tab = pd.DataFrame(dict(Id='a', cell=[1, 2, 3], border=[c in border_cells(lab) for c in (1, 2, 3)],
                            green=[float(x[..., 1][lab == c].mean()) for c in (1, 2, 3)]))
    s = apply_cell_rules(np.full((3, 28), 0.8), tab, border_weight=0.25)
    np.testing.assert_allclose(s[:, 0], [0.2, 0.8, 0.2])
    np.testing.assert_allclose(apply_cell_rules(np.full((3, 28), 0.8), tab, negative_tau=0.5)[:, 5], [0.8, 0.08, 0.8])

def test_external_label_images_via_the_api(fields, tmp_path):
    lab = read_label_image(fields/'masks'/'f1_cellmask.png')
    assert lab.dtype == np.int32 and set(np.unique(lab)) == {0, 1000, 1001, 1002, 1003}
    x, small = field_labels(fields/'train', 'f1', seg_size=32, masks=fields/'masks')
    assert x.shape == (32, 32, 4) and set(np.unique(small)) <= {0, 1000, 1001, 1002, 1003}
    cv2.imwrite(str(tmp_path/'f0.tif'), np.zeros((64, 64, 3), np.uint8) + np.arange(3, dtype=np.uint8))
    with pytest.raises(HpaDataError, match='f0.tif: a label image has one channel'): read_label_image(tmp_path/'f0.tif')
    with pytest.raises(HpaDataError, match='no label image for f9'): find_label_image(fields/'masks', 'f9')

def test_cam_cell_scores_use_the_given_masks(fields):
    from hpa_fastai.dataloaders import hpa_dataloaders
    from hpa_fastai.learner import hpa_learner
    dls = hpa_dataloaders(fields, size=32, bs=2, valid_pct=0.5, seed=0, features=False, num_workers=0, store=False)
    learn = hpa_learner(dls, arch='small_cnn', pretrained=False)
    ids = ['f0', 'f1']
    tab, cp, ip = cam_cell_scores(learn, fields/'train', ids, seg_size=64, masks=fields/'masks')
    assert tab.cell_id.tolist() == ['f0_1000', 'f0_1001', 'f0_1002', 'f1_1000', 'f1_1001', 'f1_1002', 'f1_1003']
    assert cp.shape == (7, 28) and ip.shape == (2, 28) and tab.border.dtype == bool
    seg = cam_cell_scores(learn, fields/'train', ids, seg_size=64)[0]
    assert seg.cell.tolist() == [c - 999 for c in tab.cell]                      # the same cells, segmented: labels 1..n

def test_cli_pack_with_masks(fields, tmp_path, capsys):
    common = ['--size', '16', '--seg-size', '64', '--n-workers', '0', '--cache-dir', str(tmp_path/'cache')]
    with pytest.raises(SystemExit) as e: hpa_cells(['pack', str(fields/'train'), '--masks', str(tmp_path/'nowhere'), *common])
    assert e.value.code == 2 and 'is not a folder' in capsys.readouterr().err
    hpa_cells(['pack', str(fields/'train'), '--masks', str(fields/'masks'), '--dest', str(tmp_path/'store'), *common])
    assert 'cells from the label images in' in capsys.readouterr().out
    st = open_cells(tmp_path/'store')
    assert st.table.cell_id.tolist()[:3] == ['f0_1000', 'f0_1001', 'f0_1002'] and len(st) == sum(map(len, LAYOUTS))
    given = read_label_image(fields/'masks'/'f0_cellmask.png')
    assert (decode_binary_mask(st.table.rle[0], 64, 64) == (given == 1000)).all()   # the given mask, at full size
    bad = tmp_path/'badmasks'; bad.mkdir()
    for k in range(len(LAYOUTS)): cv2.imwrite(str(bad/f'f{k}.png'), cv2.imread(str(fields/'masks'/f'f{k}_cellmask.png'), -1))
    cv2.imwrite(str(bad/'f2.png'), np.zeros((32, 64), np.uint16))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        hpa_cells(['pack', str(fields/'train'), '--masks', str(bad), '--dest', str(tmp_path/'store2'), *common])
    msg = ' '.join(str(x.message) for x in w)
    assert '1 image(s) could not be read' in msg and 'f2.png: the label image is 64×32 px' in msg
    assert open_cells(tmp_path/'store2').ids == ['f0', 'f1', 'f3']                 # the others are kept
