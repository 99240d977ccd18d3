"Thresholds, submission and report: exact against brute force / sklearn, and clear refusals."
import json, numpy as np, pandas as pd, pytest, torch
from sklearn.metrics import f1_score
from hpa_fastai.core import *
from hpa_fastai.inference import *
from hpa_fastai.learner import macro_f1
from conftest import needs_real, REAL

def test_f1_thresholds_are_optimal():
    rng = np.random.default_rng(3)
    P = rng.random((150, 28)); T = rng.random((150, 28)) < P * 0.5
    T[:, 27] = False                                            # a class with no positives keeps the default
    th = fit_thresholds(P, T, 'f1', default=0.7)
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
