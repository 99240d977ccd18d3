"The command-line tools, run as a user would: installed entry points, in a fresh folder."
import json, os, subprocess, sys, numpy as np, pandas as pd, pytest
from pathlib import Path

def run(args, cwd):
    r = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f'{args} failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}'
    return r.stdout + r.stderr

def test_synth_train_predict(tmp_path):
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
    run(['hpa-predict', str(r/'model.pth'), 'data/test', '--sample-submission', 'data/sample_submission.csv', '--out', 'p2.csv', '--pack'], tmp_path)
    assert pd.read_csv(tmp_path/'p2.csv', dtype=str, keep_default_na=False).equals(sub)  # weights-only form, packed test set
    run(['hpa-features', 'data/train', '--out', 'f.csv', '--n-workers', '0'], tmp_path)
    assert len(pd.read_csv(tmp_path/'f.csv')) == 40

def test_train_bad_path(tmp_path):
    r = subprocess.run(['hpa-train', '--path', 'nowhere'], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode != 0 and 'nowhere: no train.csv' in r.stderr

def test_synth_refuses_nonempty(tmp_path):
    (tmp_path/'data').mkdir(); (tmp_path/'data'/'x').write_text('keep')
    r = subprocess.run(['hpa-synth', '--dest', 'data', '--n-train', '2', '--n-test', '1', '--size', '32'], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode != 0 and 'not empty' in r.stderr
