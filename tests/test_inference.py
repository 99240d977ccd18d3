"Thresholds, submission and report: exact against brute force / sklearn; clear refusals of bad numbers and files; the two export forms agree."
import json, warnings, numpy as np, pandas as pd, pytest, torch
from pathlib import Path
from types import SimpleNamespace
from fastai.vision.all import resnet18
from hpa_fastai.dataloaders import hpa_dataloaders, add_features
from hpa_fastai.learner import hpa_learner
from hpa_fastai.data import hpa_test_dl, find_ids
from hpa_fastai.test_utils import fake_hpa
from sklearn.metrics import f1_score
from hpa_fastai.all import *
from hpa_fastai.metrics import macro_f1
from conftest import needs_real, REAL

def test_f1_thresholds_are_optimal():
    rng = np.random.default_rng(3)
    P = rng.random((150, 28)); T = rng.random((150, 28)) < P * 0.5
    T[:, 27] = False                                            # a class with no positives keeps the default
    th = fit_thresholds(P, T, 'f1', default=0.7, shrink=0, min_pos=0)   # the unshrunk optimum
    assert th[27] == pytest.approx(0.7)
    for c in range(27):
        best = max(f1_score(T[:, c], P[:, c] > u, zero_division=0) for u in np.r_[P[:, c], -1])
        assert f1_score(T[:, c], P[:, c] > th[c], zero_division=0) == pytest.approx(best)
    assert macro_f1(P, T, th) >= macro_f1(P, T, fit_thresholds(P, T, 'global')) >= macro_f1(P, T, 0.5) - 1e-12

def test_freq_thresholds_match_frequency():
    rng = np.random.default_rng(0); P = rng.random((1000, 28))
    th = fit_thresholds(P, method='freq')
    assert np.allclose((P > th).mean(0), np.array(TRAIN_COUNTS) / N_TRAIN, atol=1e-3)
    with pytest.raises(ValueError, match='needs targets'): fit_thresholds(P, method='f1')
    with pytest.raises(ValueError, match="method"): fit_thresholds(P, P > 0.5, method='best')

def test_predict_labels_keeps_top():
    P = np.full((4, 28), 0.01); P[np.arange(4), [3, 5, 7, 27]] = 0.2
    assert (predict_labels(P, 0.5).sum(1) == 1).all() and (predict_labels(P, 0.5, keep_top=False).sum(1) == 0).all()

def test_thresholds_json(tmp_path):
    th = np.linspace(0.1, 0.9, 28)
    fn = save_thresholds(th, tmp_path/'t.json', method='f1')
    assert np.allclose(load_thresholds(fn), th, atol=1e-6) and json.loads(fn.read_text())['method'] == 'f1'
    (tmp_path/'bad.json').write_text(json.dumps(dict(thresholds=[0.5] * 27)))
    with pytest.raises(HpaDataError, match='28 HPA classes'): load_thresholds(tmp_path/'bad.json')

def test_submission_refusals(tmp_path):
    P = np.random.default_rng(0).random((3, 28))
    ss = pd.DataFrame({'Id': ['a', 'b', 'c']})
    with pytest.raises(HpaDataError, match=r"1 Id\(s\) of the sample submission have no prediction \(e.g. \['c'\]\), 1 predicted Id\(s\) are not in it \(e.g. \['z'\]\)"):
        write_submission(P, ['a', 'b', 'z'], tmp_path/'s.csv', sample_submission=ss)
    with pytest.raises(HpaDataError, match='duplicate'): write_submission(P, ['a', 'a', 'b'], tmp_path/'s.csv')
    with pytest.raises(ValueError, match='2 Ids but 3'): write_submission(P, ['a', 'b'], tmp_path/'s.csv')
    assert not (tmp_path/'s.csv').exists()                     # nothing half-written

@needs_real
def test_real_sample_submission_order(tmp_path):
    ss = pd.read_csv(REAL/'sample_submission.csv', dtype=str)
    ids = ss.Id.sample(frac=1, random_state=0).tolist()        # predictions in another order
    P = np.random.default_rng(1).random((len(ids), 28)) ** 4
    sub = write_submission(P, ids, tmp_path/'submission.csv', fit_thresholds(P, method='freq'), REAL/'sample_submission.csv')
    back = pd.read_csv(tmp_path/'submission.csv', dtype=str, keep_default_na=False)
    assert len(back) == 11702 and back.Id.tolist() == ss.Id.tolist() and list(back.columns) == ['Id', 'Predicted']
    assert (back.Predicted.str.len() > 0).all()
    assert all(0 <= int(t) <= 27 for row in back.Predicted.head(200) for t in row.split())

def test_report_matches_sklearn():
    from sklearn.metrics import precision_recall_fscore_support
    rng = np.random.default_rng(5); P, T = rng.random((80, 28)), rng.random((80, 28)) < 0.15
    th = rng.random(28)
    rep = hpa_report(P, T, th, keep_top=False)
    pr, rc, f, s = precision_recall_fscore_support(T, P > th, zero_division=0)
    assert np.allclose(rep.f1[:28], f) and np.allclose(rep.precision[:28], pr) and np.allclose(rep.recall[:28], rc)
    assert rep.f1.iloc[-1] == pytest.approx(f1_score(T, P > th, average='macro', zero_division=0))

def test_dihedral_tta_invariant_model():
    "A model that only sees per-channel means is dihedral-invariant: TTA equals plain prediction"
    from types import SimpleNamespace
    x = torch.randn(6, 4, 8, 8)
    m = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 28))
    learn = SimpleNamespace(model=m, loss_func=torch.nn.BCEWithLogitsLoss(), dls=SimpleNamespace(n_inp=1))
    learn.loss_func.activation = torch.sigmoid
    p, t = dihedral_tta(learn, dl=[(x, torch.zeros(6, 28))], agg='max')
    assert torch.allclose(p, torch.sigmoid(m(x)), atol=1e-6) and t.shape == (6, 28)

# --- refusing bad numbers ------------------------------------------------------------------------------------------

def test_nan_probs_refused(tmp_path):
    P = np.random.default_rng(0).random((4, 28)); P[2, 7] = np.nan
    with pytest.raises(HpaDataError, match=r"row 2 \(Id 'c'\), class 7 \(Golgi apparatus\).*diverged\? Lower the learning rate"):
        write_submission(P, list('abcd'), tmp_path/'s.csv')
    assert not (tmp_path/'s.csv').exists()
    for method in ('f1', 'freq', 'global'):
        with pytest.raises(HpaDataError, match='NaN or infinite'): fit_thresholds(P, P > 0.5, method)
    with pytest.raises(HpaDataError, match='NaN or infinite'): fit_thresholds(torch.tensor(P), method='freq')
    with pytest.raises(HpaDataError, match='Logits'): write_submission(np.full((4, 28), 3.), list('abcd'), tmp_path/'s.csv')
    with pytest.raises(HpaDataError, match='NaN or infinite'): hpa_report(P, P > 0.5)

def test_thresholds_outside_unit_interval_refused(tmp_path):
    P = np.random.default_rng(0).random((3, 28))
    with pytest.raises(HpaDataError, match=r'outside \[0, 1\], the first 5.0 for class 0'): write_submission(P, list('abc'), tmp_path/'s.csv', 5.)
    assert not (tmp_path/'s.csv').exists()
    learn = SimpleNamespace(loss_func=SimpleNamespace())
    with pytest.raises(HpaDataError, match=r'outside \[0, 1\]'): set_thresholds(learn, 5.)
    th = np.full(28, 0.5); th[3] = -0.1
    with pytest.raises(HpaDataError, match='class 3'): set_thresholds(learn, th)
    assert not hasattr(learn, 'thresholds')
    with pytest.raises(HpaDataError): save_thresholds(5., tmp_path/'t.json')
    assert not (tmp_path/'t.json').exists()
    (tmp_path/'t.json').write_text(json.dumps(dict(classes=HPA_CLASSES, thresholds=[0.5] * 27 + [5.])))
    with pytest.raises(HpaDataError, match=f"{tmp_path/'t.json'}: 1 threshold"): load_thresholds(tmp_path/'t.json')
    with pytest.raises(HpaDataError, match='default threshold'): fit_thresholds(P, P > 0.5, default=5.)
    set_thresholds(learn, 0.3); assert learn.thresholds.shape == (28,) and learn.loss_func.keep_top

def test_freq_thresholds_within_unit_interval():
    rng = np.random.default_rng(1)
    P = rng.random((40, 28)); P[5, 27] = 1.0; P[:, 0] = 0.0               # class 27: target count 0; class 0: every sample
    freq = np.array(TRAIN_COUNTS) / N_TRAIN; freq[0] = 1.0
    th = fit_thresholds(P, method='freq', target_freq=freq)
    assert ((th >= 0) & (th <= 1)).all() and th[27] == 1.0 and th[0] == 0.0
    assert not (P[:, 27] > th[27]).any()                                  # 1.0: never predicted ...
    top = np.zeros((1, 28)); top[0, 27] = 1.0
    assert predict_labels(top, th)[0, 27]                                  # ... unless it is the top class

def test_truncated_thresholds_json_names_file(tmp_path):
    fn = save_thresholds(np.linspace(0, 1, 28), tmp_path/'model.thresholds.json', method='f1')
    fn.write_text(fn.read_text()[:-40])
    with pytest.raises(HpaDataError, match=f'{fn}: thresholds file is not valid JSON'): load_thresholds(fn)
    with pytest.raises(HpaDataError, match='not found'): load_thresholds(tmp_path/'none.json')

# --- export and load -------------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory): return fake_hpa(tmp_path_factory.mktemp('tiny'), n=12, size=32, seed=0, n_test=3)

@pytest.fixture(scope='module', params=[False, True], ids=['images', 'features'])
def tiny_learn(request, tiny_data):
    dls = hpa_dataloaders(tiny_data, size=32, bs=4, features=request.param, num_workers=0, feature_workers=0)
    learn = hpa_learner(dls, arch=resnet18, pretrained=False)
    with learn.no_bar(): learn.fit_one_cycle(1, 1e-3)                     # BatchNorm statistics that are not the defaults
    return learn

def _load_pkl(fn):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore'); return load_hpa(fn)

def _preds(learn, folder):
    with learn.no_bar(): return learn.get_preds(dl=hpa_test_dl(learn.dls, folder, num_workers=0))[0]

def test_export_forms_predict_the_same(tiny_learn, tiny_data, tmp_path):
    th = np.linspace(0.2, 0.8, 28)
    fn = export_hpa(tiny_learn, tmp_path/'model.pkl', th, method='f1', config=dict(path=tmp_path, size=32))
    assert fn == tmp_path/'model.pkl'
    assert sorted(f.name for f in tmp_path.iterdir()) == ['model.json', 'model.pkl', 'model.pth', 'model.thresholds.json']
    cfg = json.loads((tmp_path/'model.json').read_text())
    assert cfg['arch'] == 'resnet18' and cfg['n_features'] == tiny_learn.model.n_features and cfg['vocab'] == HPA_CLASSES
    assert cfg['info']['config']['path'] == str(tmp_path) and (cfg['features'] is not None) == bool(tiny_learn.model.n_features)
    assert json.loads((tmp_path/'model.thresholds.json').read_text())['method'] == 'f1'
    pkl = _load_pkl(fn)
    with warnings.catch_warnings():
        warnings.simplefilter('error')                                     # the safe form warns about nothing
        safe, safe_json = load_hpa(tmp_path/'model.pth', num_workers=0), load_hpa(tmp_path/'model.json', num_workers=0)
    test = tiny_data/'test'
    if tiny_learn.model.n_features: assert len(add_features(safe.dls, test, n_workers=0)) == 3   # what hpa-predict does
    p = _preds(pkl, test)
    assert torch.equal(_preds(safe, test), p) and torch.equal(_preds(safe_json, test), p)
    assert np.allclose(safe.thresholds, th, atol=1e-6) and np.array_equal(safe.thresholds, pkl.thresholds)
    stem = test/find_ids(test)[0]
    with safe.no_bar(), pkl.no_bar(): (n1, d1, p1), (n2, d2, p2) = safe.predict(stem), pkl.predict(stem)
    assert n1 == n2 and torch.equal(d1, d2) and torch.equal(p1, p2)

def test_load_pkl_warns(tiny_learn, tmp_path):
    fn = export_hpa(tiny_learn, tmp_path/'model.pkl', 0.5)
    with pytest.warns(UserWarning, match='you trust'): load_hpa(fn)

def test_text_file_as_model_names_it(tmp_path):
    (tmp_path/'model.pkl').write_text('this is not a model\n')
    with pytest.warns(UserWarning), pytest.raises(HpaDataError, match=f"{tmp_path/'model.pkl'}: cannot be loaded"): load_hpa(tmp_path/'model.pkl')
    (tmp_path/'model.json').write_text('this is not a model\n')
    with pytest.raises(HpaDataError, match=f"{tmp_path/'model.json'}: model description is not valid JSON"): load_hpa(tmp_path/'model.json')
    (tmp_path/'model.json').write_text(json.dumps(dict(format='hpa_fastai.model', format_version=1)))
    (tmp_path/'model.pth').write_text('this is not a model\n')
    with pytest.raises(HpaDataError, match=f"{tmp_path/'model.pth'}: not a weights file"): load_hpa(tmp_path/'model.pth')
    (tmp_path/'model.txt').write_text('this is not a model\n')
    with pytest.raises(HpaDataError, match='unknown model file type'): load_hpa(tmp_path/'model.txt')
    with pytest.raises(HpaDataError, match='model file not found'): load_hpa(tmp_path/'nope.pth')

def test_interrupted_export_leaves_no_half_written_file(tiny_learn, tmp_path, monkeypatch):
    real_save = torch.save
    def failing(suffix):
        def save(obj, f, *args, **kwargs):
            if str(f).endswith(suffix): Path(f).write_bytes(b'half a file'); raise OSError('No space left on device')
            return real_save(obj, f, *args, **kwargs)
        return save
    monkeypatch.setattr(torch, 'save', failing('.pth'))                    # the first file written
    with pytest.raises(OSError, match='No space'): export_hpa(tiny_learn, tmp_path/'a'/'model.pkl', 0.5)
    assert list((tmp_path/'a').iterdir()) == []
    monkeypatch.setattr(torch, 'save', real_save)
    export_hpa(tiny_learn, tmp_path/'b'/'model.pkl', 0.5)                   # a complete export ...
    monkeypatch.setattr(torch, 'save', failing('.pkl'))
    with pytest.raises(OSError, match='No space'): export_hpa(tiny_learn, tmp_path/'b'/'model.pkl', 0.3)   # ... overwritten, failing
    assert sorted(f.name for f in (tmp_path/'b').iterdir()) == ['model.json', 'model.pkl', 'model.pth']   # whole files, no temp file
    with pytest.raises(HpaDataError, match='thresholds file missing'): load_hpa(tmp_path/'b'/'model.pth', num_workers=0)

def test_export_refuses_what_it_cannot_describe(tiny_learn, tmp_path):
    learn = hpa_learner(tiny_learn.dls, arch=resnet18, pretrained=False, loss=torch.nn.BCEWithLogitsLoss())
    with pytest.raises(ValueError, match='safe=False'): export_hpa(learn, tmp_path/'model.pkl')
    assert not tmp_path.exists() or list(tmp_path.iterdir()) == []

def test_crossfit_never_sees_the_scored_fold():
    "Each sample's thresholds come from a fit on the other folds only (and equal that fit)"
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold
    from hpa_fastai.inference import crossfit_thresholds
    rng = np.random.default_rng(3)
    T = (rng.random((60, 28)) < 0.15).astype(np.float32); T[np.arange(60), rng.integers(0, 28, 60)] = 1
    P = np.clip(0.3 * T + 0.7 * rng.random((60, 28)), 0, 1)
    th = crossfit_thresholds(P, T, k=5, seed=7)
    folds = list(MultilabelStratifiedKFold(n_splits=5, shuffle=True, random_state=7).split(np.zeros(60), (T > 0.5).astype(int)))
    assert sorted(np.concatenate([h for _, h in folds]).tolist()) == list(range(60))
    for fit_idx, held in folds:
        assert not set(fit_idx) & set(held)
        np.testing.assert_allclose(th[held], np.broadcast_to(fit_thresholds(P[fit_idx], T[fit_idx]), (len(held), 28)))
    ins = macro_f1(predict_labels(P, fit_thresholds(P, T), keep_top=False), T)
    assert macro_f1(predict_labels(P, th, keep_top=False), T) < ins      # in-sample flatters

def test_keep_top_separated():
    "f1_thresholds never includes keep-top; f1_thresholds_keep_top does"
    from hpa_fastai.train import score
    T = np.zeros((4, 28), np.float32); T[:, 3] = 1
    P = np.full((4, 28), 0.1, np.float32); P[:, 3] = 0.4                 # below 0.5: only keep-top predicts class 3
    s = score(P, T, np.full(28, 0.5))
    assert s['f1_thresholds'] == 0 and s['f1_thresholds_keep_top'] > 0 and s['in_sample'] is False

@pytest.mark.parametrize('dropout_at', ['concat', 'last'])
def test_reloaded_head_keeps_its_dropouts(tiny_learn, tmp_path, dropout_at):
    "Both dropout placements come back with the same layer probabilities (model.json records the layers' own p)"
    learn = hpa_learner(tiny_learn.dls, arch=resnet18, pretrained=False, extra_dropout=0.3, dropout=0.4, dropout_at=dropout_at)
    export_hpa(learn, tmp_path/'model.pkl', 0.5, arch='resnet18')
    back = load_hpa(tmp_path/'model.pth', num_workers=0)
    ps = lambda m: [m.head[0].p, m.head[4].p]
    assert ps(back.model) == ps(learn.model) and ps(learn.model)[0] == (0.3 if dropout_at == 'concat' else 0.)

def test_rebuild_resolves_arch_names():
    from hpa_fastai.inference import _arch_fn
    from hpa_fastai.learner import resolve_arch
    assert _arch_fn('resnet34') is resolve_arch('resnet34')
    for bad in ('not_a_model', 'timm/no_such_model_xyz', 42):
        with pytest.raises(HpaDataError, match='architecture'): _arch_fn(bad)
