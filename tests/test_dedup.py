"Near-duplicate search: each transform found, distinct fields kept apart, groups kept whole by splits and folds, bad input named."
import subprocess, sys, numpy as np, pandas as pd, cv2, pytest
from pathlib import Path
from hpa_fastai.core import HpaDataError, read_labels
from hpa_fastai.data import write_rgby, open_rgby, find_ids, multilabel_kfold, multilabel_split
from hpa_fastai.dataloaders import labelled_split
from hpa_fastai.synth import synth_sample, make_synthetic_hpa
from hpa_fastai.dedup import DIHEDRAL, dihedral_image, find_duplicates, hash_samples, dedup_cache, stem_groups, grouping_fingerprint

SIZE = 128

def field(seed, labels=(0, 5)): return synth_sample(list(labels), size=SIZE, seed=seed)
def jpeg_file(folder, id_, x, q=75):
    folder.mkdir(parents=True, exist_ok=True)
    for i, c in enumerate(('red', 'green', 'blue', 'yellow')): cv2.imwrite(str(folder/f'{id_}_{c}.jpg'), x[..., i], [cv2.IMWRITE_JPEG_QUALITY, q])
def crop(x, side, ox, oy):
    s = x.shape[0]; n = int(round(side * s)); l, t = int(ox * s), int(oy * s)
    return cv2.resize(x[t:t+n, l:l+n], (s, s), interpolation=cv2.INTER_LINEAR)

TRANSFORMS = {
    'png_to_jpeg_q75': None,                                           # written as JPEG files below
    'rescale_x4': lambda x: cv2.resize(x, (4 * SIZE, 4 * SIZE), interpolation=cv2.INTER_CUBIC),
    'rescale_half': lambda x: cv2.resize(x, (SIZE // 2, SIZE // 2), interpolation=cv2.INTER_AREA),
    'brightness_contrast': lambda x: np.clip(x * 1.5 + 20, 0, 255).astype(np.uint8),
    'darker': lambda x: (x * 0.6).astype(np.uint8),
    **{t: (lambda t: lambda x: dihedral_image(x, t))(t) for t in DIHEDRAL[1:]},
    'crop_90_corner': lambda x: crop(x, 0.9, 0., 0.),
    'crop_90_far_corner': lambda x: crop(x, 0.9, 0.1, 0.1),
    'crop_95_flip_jpeg': None,
}

@pytest.mark.parametrize('name', list(TRANSFORMS))
def test_each_transform_found(tmp_path, name):
    x = field(1)
    write_rgby(tmp_path, 'orig', x)
    for k in range(4): write_rgby(tmp_path, f'other{k}', field(100 + k))
    if name == 'png_to_jpeg_q75': jpeg_file(tmp_path, 'copy', x)
    elif name == 'crop_95_flip_jpeg': jpeg_file(tmp_path, 'copy', dihedral_image(crop(x, 0.95, 0.03, 0.05), 'flip_lr'))
    else: write_rgby(tmp_path, 'copy', TRANSFORMS[name](x))
    g = find_duplicates(tmp_path, n_workers=0, cache=False).set_index('Id').group
    assert g['copy'] == g['orig'], name
    assert g.value_counts().max() == 2 and g.nunique() == 5          # the other fields stay alone
    pairs = find_duplicates(tmp_path, n_workers=0, cache=False).attrs['pairs']
    assert len(pairs) == 1 and pairs.distance.iloc[0] <= 10

def test_distinct_fields_never_grouped(tmp_path):
    rng = np.random.default_rng(0)
    for k in range(40): write_rgby(tmp_path, f'f{k}', synth_sample(sorted(rng.choice(28, 2, replace=False).tolist()), size=96, seed=k))
    g = find_duplicates(tmp_path, n_workers=0, cache=False)
    assert g.group.nunique() == 40 and len(g.attrs['pairs']) == 0

def test_black_channels_do_not_match(tmp_path):
    for k in range(3):
        x = field(k); x[..., 1] = 0; write_rgby(tmp_path, f'f{k}', x)       # every green black
    g = find_duplicates(tmp_path, n_workers=0, cache=False)
    assert g.group.nunique() == 3

def _planted(tmp_path, n=40, n_copies=12):
    "A synthetic data set whose train/ holds `n_copies` flipped JPEG copies of training fields under new Ids"
    data = make_synthetic_hpa(tmp_path/'data', n_train=n, n_test=4, size=64, seed=3, freq_power=0.3, progress=False)
    df = read_labels(data/'train.csv'); rows = []
    for k in range(n_copies):
        i = df.Id[k]; x = open_rgby(data/'train', i)
        jpeg_file(data/'train', f'copy-{k}', dihedral_image(x, DIHEDRAL[1 + k % 7]))
        rows.append(dict(Id=f'copy-{k}', Target=' '.join(map(str, df.Target[k]))))
    pd.concat([pd.read_csv(data/'train.csv'), pd.DataFrame(rows)]).to_csv(data/'train.csv', index=False)
    return data

def test_split_keeps_planted_duplicates_together(tmp_path):
    data = _planted(tmp_path)
    df, img_dir, tr, va = labelled_split(data, valid_pct=0.3, seed=0)
    g = find_duplicates(img_dir, df.Id, n_workers=0).set_index('Id').group.loc[df.Id].to_numpy()
    assert pd.Series(g).value_counts().max() == 2 and (pd.Series(g).value_counts() == 2).sum() == 12
    assert not set(g[tr]) & set(g[va])                                  # no group straddles
    _, _, tr0, va0 = labelled_split(data, valid_pct=0.3, seed=0, dedup=False)
    assert set(g[tr0]) & set(g[va0])                                    # ... which the plain split does
    assert abs(len(va) - 0.3 * len(df)) <= 4                            # the share is kept as far as groups allow
    ready = pd.DataFrame(dict(Id=df.Id, group=g))
    assert [list(a) for a in labelled_split(data, valid_pct=0.3, seed=0, dedup=ready)[2:]] == [list(tr), list(va)]

def test_crossfit_folds_keep_groups():
    from hpa_fastai.inference import crossfit_thresholds
    rng = np.random.default_rng(0)
    T = (rng.random((120, 28)) < 0.1).astype(np.float32); T[:, 0] = 1
    groups = np.arange(120); groups[60:] = groups[:60] // 2            # groups of 3 (two samples and a copy) or 1
    T[60:] = T[groups[60:]]                                              # duplicates share their labels
    for fit, held in multilabel_kfold(T, 5, seed=1, groups=groups):
        assert not set(groups[fit]) & set(groups[held])
    P = np.clip(0.4 * T + rng.random(T.shape) * 0.6, 0, 1)
    th = crossfit_thresholds(P, T, seed=1, groups=groups)
    for a in range(60, 120): assert (th[a] == th[groups[a]]).all()      # a copy is held out with its original

def test_external_copies_of_valid_and_test_dropped(tmp_path, capsys):
    data = make_synthetic_hpa(tmp_path/'data', n_train=30, n_test=4, size=64, seed=5, freq_power=0.3, progress=False)
    df0, img_dir, tr, va = labelled_split(data, valid_pct=0.3, seed=0)
    ext = tmp_path/'ext'; te = find_ids(data/'test')
    jpeg_file(ext, 'e-valid', dihedral_image(open_rgby(img_dir, df0.Id[va[0]]), 'rot90'))
    jpeg_file(ext, 'e-test', open_rgby(data/'test', te[0]))
    jpeg_file(ext, 'e-train', open_rgby(img_dir, df0.Id[tr[0]]))
    write_rgby(ext, 'e-new', synth_sample([3], size=64, seed=77))
    pd.DataFrame(dict(Id=['e-valid', 'e-test', 'e-train', 'e-new'], Target=['0', '1', '2', '3'])).to_csv(tmp_path/'ext.csv', index=False)
    capsys.readouterr()
    df, _, tr2, va2 = labelled_split(data, valid_pct=0.3, seed=0, external=ext, external_csv=tmp_path/'ext.csv')
    assert 'left out 2 of 4 external samples' in capsys.readouterr().out
    assert sorted(df.Id[len(df0):]) == ['e-new', 'e-train'] and list(va2) == list(va)
    df3, *_ = labelled_split(data, valid_pct=0.3, seed=0, external=ext, external_csv=tmp_path/'ext.csv', dedup=False)
    assert len(df3) == len(df0) + 4

def test_cache_reused_and_refreshed(tmp_path):
    for k in range(3): write_rgby(tmp_path/'imgs', f's{k}', field(k))
    h = hash_samples(tmp_path/'imgs', n_workers=0)
    cdir = dedup_cache(tmp_path/'imgs'); n0 = len(list(cdir.glob('chunk-*.npz')))
    hash_samples(tmp_path/'imgs', ids=['s1'], n_workers=0)
    assert len(list(cdir.glob('chunk-*.npz'))) == n0                     # a subset: nothing hashed again
    write_rgby(tmp_path/'imgs', 's1', dihedral_image(field(1), 'rot90'))      # a changed file is hashed again
    h2 = hash_samples(tmp_path/'imgs', n_workers=0)
    assert len(list(cdir.glob('chunk-*.npz'))) == n0 + 1 and (h2.q[1] != h.q[1]).any() and (h2.q[0] == h.q[0]).all()

def test_bad_inputs_named(tmp_path):
    for k in range(2): write_rgby(tmp_path/'imgs', f's{k}', field(k))
    (tmp_path/'imgs'/'s1_blue.png').write_bytes(b'\x89PNG broken')
    with pytest.raises(HpaDataError, match='s1_blue.png'): find_duplicates(tmp_path/'imgs', n_workers=0)
    assert len(list(dedup_cache(tmp_path/'imgs').glob('chunk-*.npz'))) == 1     # the good sample is cached
    (tmp_path/'imgs'/'s0_yellow.png').unlink()
    with pytest.raises(HpaDataError, match='s0'): find_duplicates(tmp_path/'imgs', n_workers=0)
    with pytest.raises(HpaDataError, match='nowhere'): find_duplicates(tmp_path/'nowhere')
    with pytest.raises(ValueError, match='groups has 3 labels'): multilabel_split(np.eye(4, 28), 0.5, groups=[0, 1, 2])
    with pytest.raises(HpaDataError, match='not in the duplicate table'):
        data = make_synthetic_hpa(tmp_path/'d', n_train=6, n_test=0, size=32, seed=0, progress=False)
        labelled_split(data, valid_pct=0.5, dedup=pd.DataFrame(dict(Id=['x'], group=[0])))

def _cli(args, cwd):
    "Run `hpa-dedup` as its entry point does (through this interpreter, so the package under test is the one imported)"
    script = Path(cwd)/'hpa_dedup_entry.py'                            # what pip's console-script wrapper holds
    script.write_text('import sys\nfrom hpa_fastai.cli import hpa_dedup\nsys.exit(hpa_dedup())\n')
    return subprocess.run([sys.executable, str(script), *args], cwd=cwd, capture_output=True, text=True, timeout=600)

def test_cli(tmp_path, cli_here):
    data = _planted(tmp_path, n=20, n_copies=3)
    r = _cli(['data', '--out', 'g.csv', '--n-workers', '0', '--valid-pct', '0.3'], tmp_path)
    assert r.returncode == 0, r.stderr
    g = pd.read_csv(tmp_path/'g.csv')
    assert list(g.columns) == ['Id', 'group', 'split', 'folder'] and len(g) == 27
    assert (g.groupby('group').split.nunique() == 1).all()              # every group on one side
    assert len(pd.read_csv(tmp_path/'g_pairs.csv')) == 3 and (tmp_path/'g.png').exists()
    assert '3 groups of two or more hold 6 samples' in r.stdout and '\r' not in r.stdout
    assert (tmp_path/'g_report.txt').read_text().splitlines()[0] in r.stdout
    bad = cli_here(['hpa-dedup', 'nowhere'], tmp_path)
    assert bad.returncode == 1 and 'hpa-dedup: error: nowhere: folder not found' in bad.stderr

def test_fingerprint_records_grouping(tmp_path, cli_here):
    from hpa_fastai.train import data_fingerprint, TrainConfig
    from hpa_fastai.dedup import stem_duplicates
    data = _planted(tmp_path, n=12, n_copies=2)
    df = read_labels(data/'train.csv'); stems = [data/'train'/i for i in df.Id]
    fp = data_fingerprint(data, df.Id, groups=stem_duplicates(stems, n_workers=0))
    assert fp['grouping']['n_groups'] == 12 and fp['grouping']['n_in_groups'] == 4 and len(fp['grouping']['hash']) == 16
    assert 'grouping' not in data_fingerprint(data, df.Id)
    assert TrainConfig().dedup is True and TrainConfig(dedup=False).check().dedup is False
    r = cli_here(['hpa-train', '--help'], tmp_path)
    assert r.returncode == 0 and '--no-dedup' in r.stdout
