"The command-line tools, run as a user would: installed entry points, in a fresh folder."
import json, os, subprocess, sys, numpy as np, pandas as pd, pytest
from pathlib import Path

def run(args, cwd):
    r = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f'{args} failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}'
    return r.stdout + r.stderr

def test_synth_train_predict(tmp_path, cli_here):
    "Each command once in its own process (the installed entry points), their other uses from the same scripts in this one"
    run(['hpa-synth', '--dest', 'data', '--n-train', '40', '--n-test', '6', '--size', '96', '--freq-power', '0.5'], tmp_path)
    assert (tmp_path/'data'/'train.csv').exists() and len(list((tmp_path/'data'/'test').glob('*.png'))) == 24
    out = run(['hpa-train', '--path', 'data', '--size', '32', '--bs', '8', '--epochs', '1', '--lr', '1e-3', '--arch', 'resnet18',
               '--name', 'r1', '--num-workers', '0'], tmp_path)
    assert 'random initialisation' in out and 'test macro-F1' in out
    assert '\r' not in out and '█' not in out               # plain lines in a log: no progress bars
    r = tmp_path/'runs'/'r1'
    m = json.loads((r/'metrics.json').read_text())
    assert {'valid', 'test', 'wall_s', 'config'} <= set(m) and m['config']['features'] is True
    sub = pd.read_csv(r/'submission.csv', dtype=str, keep_default_na=False)
    assert sub.Id.tolist() == pd.read_csv(tmp_path/'data'/'sample_submission.csv', dtype=str).Id.tolist()
    run(['hpa-predict', str(r/'model.pkl'), 'data/test', '--sample-submission', 'data/sample_submission.csv', '--out', 'p.csv', '--tta', 'mean'], tmp_path)
    assert pd.read_csv(tmp_path/'p.csv', dtype=str, keep_default_na=False).equals(sub)   # same model, thresholds and TTA
    here(cli_here, ['hpa-predict', str(r/'model.pth'), 'data/test', '--sample-submission', 'data/sample_submission.csv', '--out', 'p2.csv', '--pack'], tmp_path)
    assert pd.read_csv(tmp_path/'p2.csv', dtype=str, keep_default_na=False).equals(sub)  # weights-only form, packed test set
    here(cli_here, ['hpa-features', 'data/train', '--out', 'f.csv', '--n-workers', '0'], tmp_path)   # (own process: test_inputs)
    assert len(pd.read_csv(tmp_path/'f.csv')) == 40
    _your_microscope(tmp_path, r, cli_here)

def here(cli_here, args, cwd):
    "`run`, in this process"
    r = cli_here(args, cwd)
    assert r.returncode == 0, f'{args} failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}'
    return r.stdout + r.stderr

def _your_microscope(tmp_path, r, cli_here):
    "A user's folder: 12-bit OME-TIFF stacks, non-square, nuclei twice HPA's size, no CSV -> one row per image"
    import tifffile, cv2
    from hpa_fastai.data import open_rgby, find_ids
    (tmp_path/'mine').mkdir()
    for i in find_ids(tmp_path/'data'/'test')[:3]:
        x = open_rgby(tmp_path/'data'/'test', i)
        big = cv2.resize(x, (2 * x.shape[1], int(1.5 * x.shape[0])), interpolation=cv2.INTER_LINEAR)          # 192 x 144
        tifffile.imwrite(tmp_path/'mine'/f'{i}.ome.tif', (big.transpose(2, 0, 1).astype(np.uint16) * 16), metadata={'axes': 'CYX'})
    out = here(cli_here, ['hpa-predict', str(r/'model.pth'), 'mine', '--out', 'mine.csv', '--diameter', '40'], tmp_path)
    pr = pd.read_csv(tmp_path/'mine.csv', keep_default_na=False)
    assert len(pr) == 3 and list(pr.columns[:2]) == ['Id', 'Predicted'] and pr.shape[1] == 30
    assert ((pr.iloc[:, 2:] >= 0) & (pr.iloc[:, 2:] <= 1)).all().all()
    here(cli_here, ['hpa-features', 'mine', '--out', 'mf.parquet', '--n-workers', '0'], tmp_path)
    assert len(pd.read_parquet(tmp_path/'mf.parquet')) == 3
    bad = cli_here(['hpa-predict', str(r/'model.pth'), 'mine', '--channel-order', 'rgb'], tmp_path)
    assert bad.returncode != 0 and "4 channels, but the channel order 'rgb' names 3" in bad.stderr     # names the file

def test_train_bad_path(tmp_path, cli_here):
    r = cli_here(['hpa-train', '--path', 'nowhere'], tmp_path)
    assert r.returncode != 0 and 'nowhere: no train.csv' in r.stderr

def test_synth_refuses_nonempty(tmp_path, cli_here):
    (tmp_path/'data').mkdir(); (tmp_path/'data'/'x').write_text('keep')
    r = cli_here(['hpa-synth', '--dest', 'data', '--n-train', '2', '--n-test', '1', '--size', '32'], tmp_path)
    assert r.returncode == 2 and 'not empty' in r.stderr and 'Traceback' not in r.stderr, r.stderr

# --- several seeds: one run each, then the mean and SD of every score

def test_seeds_mean_and_sd(tmp_path, cli_here):
    from hpa_fastai.test_utils import fake_hpa
    fake_hpa(tmp_path/'data', n=16, n_test=2)
    out = here(cli_here, ['hpa-train', '--path', 'data', '--seeds', '0', '1', '--size', '32', '--bs', '4', '--epochs', '1', '--lr', '1e-3',
               '--arch', 'resnet18', '--num-workers', '0', '--tta', 'none', '--no-features', '--name', 's'], tmp_path)
    r = tmp_path/'runs'/'s'
    ms = {s: json.loads((r/f'seed-{s}'/'metrics.json').read_text()) for s in (0, 1)}
    assert [ms[s]['config']['seed'] for s in (0, 1)] == [0, 1] and (r/'seed-1'/'submission.csv').exists()
    assert not (r/'submission.csv').exists() and 'no submission for the series' in out
    tab = pd.read_csv(r/'seeds.csv').set_index('score')
    for k in ('f1_at_0_5', 'f1_thresholds', 'f1_thresholds_keep_top'):
        v = [ms[s]['valid'][k] for s in (0, 1)]
        np.testing.assert_allclose(tab.loc[f'valid.{k}', ['mean', 'sd', 'seed_0', 'seed_1']].to_numpy(float), [np.mean(v), np.std(v, ddof=1), *v])
        assert 'validation, ' in tab.loc[f'valid.{k}', 'scored_on'] and f'valid.{k}: ' in out and '(mean ± SD over 2 seeds' in out
    assert 'wall_s' in tab.index and not any('ci95' in s for s in tab.index)
    js = json.loads((r/'seeds.json').read_text())
    assert js['status'] == 'done' and js['seeds'] == [0, 1] and js['runs'] == {'0': 'seed-0', '1': 'seed-1'} and js['submission'].startswith('none')
    assert len(js['scores']) == len(tab)

def test_seeds_refused_before_any_work(tmp_path, cli_here):
    "The first refusal from the installed command in its own process, the others from the same script in this one"
    for i, (args, msg) in enumerate(((['--seed', '3', '--seeds', '0', '1'], 'contradict'), (['--seeds', '5'], 'two or more'),
                                     (['--seeds', '0', '0'], 'must all differ'),
                                     (['--seeds', '0', '1', '--resume'], '--seeds starts new runs'))):
        argv = ['hpa-train', '--path', 'nowhere', *args]
        r = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True) if i == 0 else cli_here(argv, tmp_path)
        assert r.returncode == 2 and msg in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == []                             # no data built, no run folder

def test_failed_seed_exits_nonzero_unsummarised(tmp_path, monkeypatch, capsys):
    "A seed that diverges stops the series: exit 1, seeds.json says which seed failed and holds no mean or SD"
    import hpa_fastai.cli as C, hpa_fastai.experiments as E
    from hpa_fastai.callbacks import TrainingDiverged
    from hpa_fastai.test_utils import fake_hpa
    d = fake_hpa(tmp_path/'data', n=16); calls = []
    def fake_run(path, out, name, seed, **kw):
        calls.append(seed); (Path(out)/name).mkdir()
        if seed == 1: raise TrainingDiverged('the training loss became nan at epoch 1, batch 2')
        return dict(valid=dict(f1_thresholds=0.3, n=4, in_sample=False), wall_s=1.)
    monkeypatch.setattr(E, 'run_training', fake_run)       # what train_seeds calls
    with pytest.raises(SystemExit) as e: C.hpa_train(path=str(d), seeds=[0, 1, 2], out=str(tmp_path/'runs'), name='f')
    assert e.value.code == 1 and calls == [0, 1] and 'became nan' in capsys.readouterr().err
    js = json.loads((tmp_path/'runs'/'f'/'seeds.json').read_text())
    assert js['status'] == 'failed' and js['failed']['seed'] == 1 and 'TrainingDiverged' in js['failed']['error']
    assert 'scores' not in js and not (tmp_path/'runs'/'f'/'seeds.csv').exists()
    C.hpa_train(path=str(d), seeds=[0, 2], out=str(tmp_path/'runs'), name='f', overwrite=True)    # a failed series is replaced
    assert json.loads((tmp_path/'runs'/'f'/'seeds.json').read_text())['status'] == 'done'
