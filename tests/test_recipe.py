"Training that learns: the prior-bias start, the two recipes, threshold shrinkage and the baselines beside every score."
import json, numpy as np, pandas as pd, pytest, torch
from pathlib import Path
from fastai.vision.all import resnet18, BCEWithLogitsLossFlat, set_seed
from hpa_fastai.dataloaders import hpa_dataloaders
from hpa_fastai.learner import hpa_learner, dataset_targets, prior_bias, FeatureSkip
from hpa_fastai.inference import fit_thresholds, threshold_fallbacks, load_hpa_weights
from hpa_fastai.baselines import split_baselines, all_positive_f1, FeaturesOnly
from hpa_fastai.dataloaders import dataset_features
from hpa_fastai.synth import make_synthetic_hpa
from hpa_fastai.train import TrainConfig, run_training, LR_RULES, RECIPES, RECIPE_DEFAULTS

@pytest.fixture(scope='module')
def syn(tmp_path_factory):
    return make_synthetic_hpa(tmp_path_factory.mktemp('syn')/'d', n_train=40, n_test=8, size=64, seed=5, freq_power=0.5, progress=False)

@pytest.fixture(scope='module')
def fdls(syn): return hpa_dataloaders(syn, size=32, bs=8, features=True, num_workers=0, feature_workers=0)

def test_prior_bias_start(fdls):
    "The untrained model predicts the training frequencies: its loss is the constant predictor's, not log 2"
    y = dataset_targets(fdls.train_ds)
    assert y.shape == (len(fdls.train_ds), 28) and set(np.unique(y)) <= {0., 1.}
    learn = hpa_learner(fdls, arch=resnet18, pretrained=False)
    n = len(y); p = np.clip(y.mean(0), 1 / (2 * n), 1 - 1 / (2 * n))
    np.testing.assert_allclose(torch.sigmoid(learn.model.head[-1].bias).detach().numpy(), p, rtol=1e-5)
    zero = hpa_learner(fdls, arch=resnet18, pretrained=False, init_bias=None)
    assert float(zero.model.head[-1].bias.detach().abs().max()) == 0.
    const = float(BCEWithLogitsLossFlat()(prior_bias(y).expand(n, 28), torch.tensor(y)))
    assert const < 0.5 < np.log(2)                                   # the prior's loss is far below the zero-bias start
    with pytest.raises(ValueError, match="init_bias must be"): hpa_learner(fdls, arch=resnet18, pretrained=False, init_bias='mean')

def test_feature_skip_starts_at_zero_and_contains_a_regression(fdls):
    learn = hpa_learner(fdls, arch=resnet18, pretrained=False)
    assert isinstance(learn.model.skip, FeatureSkip) and float(learn.model.skip.lin.weight.detach().abs().sum()) == 0.
    assert any(p is learn.model.skip.lin.weight for p in learn.splitter(learn.model)[-1])   # trained with the head
    paper = hpa_learner(fdls, arch=resnet18, pretrained=False, feature_skip=False)
    assert paper.model.skip is None
    assert set(paper.model.state_dict()) < set(learn.model.state_dict())

def test_warm_start_is_the_features_only_regression(fdls):
    "Warm-started, the untrained fused model predicts as the features-only logistic regression (within float32)"
    learn = hpa_learner(fdls, arch=resnet18, pretrained=False, warm=True)
    fo = FeaturesOnly().fit(dataset_features(fdls), dataset_targets(fdls.train_ds))
    with learn.no_bar(), learn.no_logging(): p, _ = learn.get_preds()
    fit = [m is not None for m in fo.models]                    # classes with positives and negatives in training
    np.testing.assert_allclose(p.numpy()[:, fit], fo.predict(dataset_features(fdls, fdls.valid_ds))[:, fit], atol=0.02)
    assert float(learn.model.head[-1].weight.detach().abs().max()) == 0.          # the image branch starts silent
    with pytest.raises(ValueError, match='warm=True needs'):
        hpa_learner(fdls, arch=resnet18, pretrained=False, warm=True, feature_skip=False)

def test_recipes_by_weights(tmp_path):
    assert TrainConfig().recipe == 'scratch' and TrainConfig(pretrained=True).recipe == 'pretrained'
    (tmp_path/'w.pth').write_bytes(b'')
    assert TrainConfig(weights=str(tmp_path/'w.pth')).recipe == 'pretrained'
    assert LR_RULES['scratch'][0] == 'minimum' and LR_RULES['pretrained'][0] == 'valley' and set(RECIPES) == set(LR_RULES)

def test_recipe_defaults():
    "Settings left at None take their recipe's: small_cnn for 10 epochs from random weights, the ResNet34 for 4 fine-tuning"
    assert set(RECIPE_DEFAULTS) == set(RECIPES)
    assert (TrainConfig().arch, TrainConfig().epochs) == ('small_cnn', 10)
    assert (TrainConfig(pretrained=True).arch, TrainConfig(pretrained=True).epochs) == ('resnet34', 4)
    assert (TrainConfig(arch='resnet18', epochs=2).arch, TrainConfig(arch='resnet18', epochs=2).epochs) == ('resnet18', 2)
    assert TrainConfig(pretrained=True, arch='densenet121').arch == 'densenet121'
    assert 'small_cnn' in RECIPES['scratch'] and 'ResNet34' in RECIPES['pretrained']

def test_threshold_shrinkage():
    "Few positives: a class's F1 cut is pulled towards the cut that matches its frequency, or replaced by it"
    rng = np.random.default_rng(3)
    P, T = rng.random((120, 28)), rng.random((120, 28)) < 0.25
    T[:, 3] = False; T[:1, 3] = True; T[:, 4] = False                  # one positive; none
    q = rng.uniform(0.02, 0.3, 28)
    raw = fit_thresholds(P, T, shrink=0, min_pos=0)
    f = fit_thresholds(P, method='freq', target_freq=q)
    n = T.sum(0); ok = n >= 3
    for k in (1., 10., 50.):
        th = fit_thresholds(P, T, shrink=k, target_freq=q)
        np.testing.assert_allclose(th[ok], (n[ok] * raw[ok] + k * f[ok]) / (n[ok] + k))
        np.testing.assert_allclose(th[~ok], f[~ok])                      # too few positives: the frequency cut
    assert threshold_fallbacks(T) == [3, 4]
    np.testing.assert_allclose(fit_thresholds(P, T, shrink=1e9, target_freq=q), f, atol=1e-6)   # infinite shrinkage
    own = fit_thresholds(P, T, shrink=1e9)                             # default target: the targets' own frequencies
    np.testing.assert_allclose(own, fit_thresholds(P, method='freq', target_freq=T.mean(0)), atol=1e-6)

def test_baselines_of_a_split(fdls):
    yt, yv = dataset_targets(fdls.train_ds), dataset_targets(fdls.valid_ds)
    b = split_baselines(yv, yt)
    assert set(b) == {'all_positive', 'frequency'} and b['all_positive'] == round(all_positive_f1(yv), 4)
    P = FeaturesOnly().fit(dataset_features(fdls), yt).predict(dataset_features(fdls, fdls.valid_ds))
    assert P.shape == yv.shape and ((P >= 0) & (P <= 1)).all()
    assert set(split_baselines(yv, yt, P, 0.3)) == {'all_positive', 'frequency', 'features_only'}

def test_run_reports_baselines(syn, tmp_path, capsys):
    "metrics.json, report.csv and the log carry the baselines beside the scores, for validation and test"
    m = run_training(syn, out=tmp_path/'runs', name='r', size=32, bs=8, epochs=1, lr=1e-3, arch='resnet18', num_workers=0, tta='none')
    out = capsys.readouterr().out
    for split in ('valid', 'test'):
        b = m[split]['baselines']
        assert set(b) == {'all_positive', 'frequency', 'features_only'}, b
        assert all(0 <= v <= 1 for v in b.values())
        assert f'{split} baselines (same samples' in out
    js = json.loads((tmp_path/'runs'/'r'/'metrics.json').read_text())
    assert js['test']['baselines'] == m['test']['baselines'] and 'threshold_fallbacks' in js['valid']
    rep = pd.read_csv(tmp_path/'runs'/'r'/'report.csv')
    assert {'f1_all_positive', 'f1_frequency', 'f1_features_only'} <= set(rep.columns)
    np.testing.assert_allclose(rep.f1_all_positive.iloc[-1], m['valid']['baselines']['all_positive'], atol=1e-4)
    assert 'recipe: scratch' in out and 'model: resnet18 body, 1 epochs' in out
    assert 'packing the 40 training images at 32 px' in out and 'batches read whole from the packed store' in out   # small: packed
    img = run_training(syn, out=tmp_path/'runs', name='i', size=32, bs=8, epochs=1, lr=1e-3, arch='resnet18', num_workers=0,
                       tta='none', features=False)
    assert img['valid']['baselines']['features_only'] is None and 'features-only n/a' in capsys.readouterr().out

def test_pretrained_recipe_is_logged(syn, tmp_path, capsys):
    "With a weights file (written here: no download) the run says it uses fastai's fine_tune recipe"
    torch.save(resnet18(weights=None).state_dict(), tmp_path/'imagenet18.pth')
    run_training(syn, out=tmp_path/'runs', name='p', size=32, bs=8, epochs=1, lr=1e-3, arch='resnet18', num_workers=0, tta='none',
                 features=False, weights=str(tmp_path/'imagenet18.pth'))
    out = capsys.readouterr().out
    assert "recipe: pretrained — ImageNet weights: the paper's ResNet34, fastai's fine_tune" in out
    learn = load_hpa_weights(tmp_path/'runs'/'p'/'model.pth')
    assert learn.model.skip is None and learn.model.n_features == 0
