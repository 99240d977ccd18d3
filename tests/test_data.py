"Bad images and folders: clear errors naming the Id, channel or file; the DataLoaders' shapes."
import numpy as np, pandas as pd, pytest, cv2, torch
from pathlib import Path
from hpa_fastai.all import *
from hpa_fastai.data import *
from hpa_fastai.dataloaders import hpa_dataloaders
from conftest import make_fake, needs_real, REAL, REAL_SAMPLE_ID

def test_missing_channel(fake):
    (fake/'train'/'00000003-fake_yellow.png').unlink()
    with pytest.raises(HpaDataError, match=r"00000003-fake.*yellow"): open_rgby(fake/'train', '00000003-fake')
    with pytest.raises(HpaDataError, match=r"1 channel file\(s\) missing, e.g. 00000003-fake \(yellow\)"):
        hpa_dataloaders(fake, size=32, bs=4, num_workers=0)

def test_corrupt_file(fake):
    fn = fake/'train'/'00000002-fake_green.png'; fn.write_bytes(b'not a png at all')
    with pytest.raises(HpaDataError, match='00000002-fake_green.png: cannot be decoded'): open_rgby(fake/'train', '00000002-fake')

def test_colour_16bit_and_sizes(tmp_path):
    g = np.full((40, 40), 100, np.uint8)
    cv2.imwrite(str(tmp_path/'s_red.png'), np.stack([g*0, g*0, g], -1))          # colour PNG: red in the R plane
    cv2.imwrite(str(tmp_path/'s_green.png'), (g.astype(np.uint16)*257))          # 16-bit
    cv2.imwrite(str(tmp_path/'s_blue.jpg'), np.stack([g, g*0, g*0], -1))          # JPEG, blue in B
    cv2.imwrite(str(tmp_path/'s_yellow.png'), cv2.resize(g, (80, 80)))            # another size
    with pytest.raises(HpaDataError, match='channel sizes differ'): open_rgby(tmp_path, 's')
    x = open_rgby(tmp_path, 's', size=20)
    assert x.shape == (20, 20, 4) and x.dtype == np.uint8
    assert np.allclose(x.reshape(-1, 4).mean(0), [100, 100, 100, 100], atol=3)

def test_external_layout_jpeg(tmp_path):
    "HPAv18: one colour JPEG per channel; yellow is the mean of the R and G planes"
    im = np.zeros((64, 64, 3), np.uint8); im[..., 2] = 180; im[..., 1] = 60   # R=180, G=60
    for c in CHANNELS: cv2.imwrite(str(tmp_path/f'10580_1610_C1_1_{c}.jpg'), im)
    x = open_rgby(tmp_path, '10580_1610_C1_1')
    assert abs(x[..., 0].mean() - 180) < 3 and abs(x[..., 1].mean() - 60) < 3 and abs(x[..., 3].mean() - 120) < 3

def test_dataloaders_shapes(fake):
    dls = hpa_dataloaders(fake, size=32, bs=4, num_workers=0, seed=1)
    xb, yb = dls.one_batch()
    assert xb.shape == (4, 4, 32, 32) and yb.shape == (4, 28)
    assert set(yb.unique().tolist()) <= {0., 1.}
    assert len(dls.train_ds) + len(dls.valid_ds) == 12 and len(dls.valid_ds) > 0
    x, y = dls.train_ds[0]
    assert isinstance(x, RGBYImage) and y.shape == (28,)

def test_test_dl(fake, tmp_path):
    dls = hpa_dataloaders(fake, size=32, bs=4, num_workers=0)
    tdl = hpa_test_dl(dls, fake/'train', ids=['00000001-fake', '00000000-fake'])
    assert [Path(i).name for i in tdl.items] == ['00000001-fake', '00000000-fake']
    assert tdl.one_batch()[0].shape == (2, 4, 32, 32)
    with pytest.raises(HpaDataError, match='missing'): hpa_test_dl(dls, fake/'train', ids=['ghost'])
    (tmp_path/'empty').mkdir()
    with pytest.raises(HpaDataError, match='no samples'): hpa_test_dl(dls, tmp_path/'empty')

def test_labels_without_images(fake):
    with open(fake/'train.csv', 'a') as f: f.write('ghost-id,3\n')
    with pytest.raises(HpaDataError, match='ghost-id'): hpa_dataloaders(fake, size=32, bs=4, num_workers=0)

def test_show_batch_titles(fake):
    import matplotlib; matplotlib.use('Agg')
    dls = hpa_dataloaders(fake, size=32, bs=4, num_workers=0)
    axs = dls.show_batch(max_n=2, show=True)
    import matplotlib.pyplot as plt
    titles = [a.get_title() for a in plt.gcf().axes if a.get_title()]
    assert titles and all(any(c in t for c in HPA_CLASSES) for t in titles)
    plt.close('all')

def test_split_keeps_pairs():
    rng = np.random.default_rng(0)
    y = (rng.random((200, 28)) < 0.05).astype(np.float32); y[:, 0] = 1
    y[:, 27] = 0; y[[10, 150], 27] = 1
    tr, va = multilabel_split(y, 0.2, seed=3)
    assert sorted([*tr, *va]) == list(range(200))
    for c in np.flatnonzero(y.sum(0) >= 2): assert y[tr, c].sum() > 0 and y[va, c].sum() > 0, c

@needs_real
def test_real_split_every_class():
    df = read_labels(REAL/'train.csv')
    tr, va = multilabel_split(df, 0.2, seed=0)
    Y = encode_targets(df.Target)
    assert (Y[tr].sum(0) > 0).all() and (Y[va].sum(0) > 0).all()
    assert abs(len(va)/len(Y) - 0.2) < 0.01

@needs_real
def test_real_sample_opens():
    x = RGBYImage.create(REAL/'sample_4ch'/REAL_SAMPLE_ID)
    assert x.shape == (4, 512, 512) and x.dtype == torch.uint8
    assert abs(x[1].float().mean().item() - 1.2) < 0.1   # the dim green channel README describes

def test_csv_is_relative_to_path(fake, tmp_path, monkeypatch):
    "A train.csv in the working directory must not shadow path/train.csv"
    other = tmp_path/'elsewhere'; other.mkdir()
    (other/'train.csv').write_text('Id,Target\nnot-here,1\n')
    monkeypatch.chdir(other)
    dls = hpa_dataloaders(fake, size=32, bs=4, num_workers=0)
    assert len(dls.train_ds) + len(dls.valid_ds) == 12
