"""The main job, as a user runs it: `hpa-train` with no arguments in a fresh folder (demo seed 0), and the same recipe on
a demo set drawn with another seed (`hpa-synth --seed S` with the demo's sizes, then `hpa-train --path`). Prints one
table row per run — wall time, train loss first → last epoch beside the constant predictor's, test macro-F1 with its
95 % CI, each baseline — and writes them to bench/results/main_job.json (or --out).

    python bench/main_job.py                        # this checkout, demo seeds 0 and 1
    python bench/main_job.py --repo ../old --tag before --seeds 0 1   # another checkout (e.g. the commit before a change)
"""
import argparse, json, os, subprocess, sys, tempfile, time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OLD_DEMO = dict(n_train=500, n_test=100, size=256, freq_power=0.5)     # the demo set before it grew (no DEMO_SET)

def demo_sizes(repo: Path, env) -> dict:
    "The demo set's sizes in `repo` (its `DEMO_SET`, else the earlier fixed sizes)"
    code = ("import json\ntry:\n from hpa_fastai.train import DEMO_SET as d\nexcept ImportError:\n try: from hpa_fastai.cli import DEMO_SET as d\n"
            " except ImportError: d = None\nprint(json.dumps(d))")
    d = json.loads(subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, check=True).stdout)
    return {k: v for k, v in (d or OLD_DEMO).items() if k != 'seed'}

def run_one(repo: Path, seed: int, env, extra=()) -> dict:
    "One main job in a fresh folder; its metrics and wall time"
    work = Path(tempfile.mkdtemp(prefix=f'mainjob-{seed}-'))
    t0 = time.time()
    if seed != 0:
        d = demo_sizes(repo, env)
        subprocess.run(['hpa-synth', '--dest', 'data/synthetic', '--seed', str(seed), '--n-train', str(d['n_train']),
                        '--n-test', str(d['n_test']), '--size', str(d['size']), '--freq-power', str(d['freq_power'])],
                       cwd=work, env=env, check=True, capture_output=True)
    r = subprocess.run(['hpa-train', '--name', 'run', *extra], cwd=work, env=env, capture_output=True, text=True)
    wall = time.time() - t0
    if r.returncode: raise SystemExit(f'hpa-train failed (seed {seed}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}')
    m = json.loads((work/'runs'/'run'/'metrics.json').read_text())
    (work/'runs'/'run'/'log.txt').write_text(r.stdout)
    return dict(demo_seed=seed, wall_s=round(wall, 1), metrics=m, log=r.stdout.splitlines(), args=list(extra))

def row(r: dict) -> dict:
    "The figures the table shows"
    m, t = r['metrics'], r['metrics'].get('test', {})
    h = m.get('history') or []
    b = t.get('baselines', {})
    return dict(demo_seed=r['demo_seed'], args=' '.join(r['args']), wall_s=r['wall_s'], recipe=m.get('recipe', 'one-cycle at lr_find valley'),
                lr=round(m['lr'], 5), features=m['config']['features'],
                train_loss_first=h[0]['train_loss'] if h else None, train_loss_last=h[-1]['train_loss'] if h else None,
                constant_loss=m.get('constant_loss'), test_f1_thresholds=t.get('f1_thresholds'),
                test_ci95=t.get('f1_thresholds_ci95'), test_f1_at_0_5=t.get('f1_at_0_5'), test_f1_tta=t.get('f1_tta_thresholds'),
                all_positive=b.get('all_positive'), frequency=b.get('frequency'), features_only=b.get('features_only'),
                valid_f1_thresholds=m.get('valid', {}).get('f1_thresholds'), n_test=t.get('n'))

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--repo', default=str(ROOT), help='checkout whose hpa_fastai to run (put first on PYTHONPATH)')
    ap.add_argument('--seeds', type=int, nargs='+', default=[0, 1], help='demo seeds (0: the default demo set)')
    ap.add_argument('--tag', default='after', help='label of these runs in the results file')
    ap.add_argument('--out', default=str(ROOT/'bench'/'results'/'main_job.json'))
    ap.add_argument('--train-args', default='', help='extra hpa-train arguments, e.g. "--no-features" for the image-only model')
    a = ap.parse_args()
    repo = Path(a.repo).resolve()
    env = dict(os.environ, PYTHONPATH=str(repo) + os.pathsep + os.environ.get('PYTHONPATH', ''))
    rows = []
    for s in a.seeds:
        r = run_one(repo, s, env, a.train_args.split()); rows.append(row(r))
        print(' | '.join(f'{k} {v}' for k, v in rows[-1].items()), flush=True)
    out = Path(a.out); res = json.loads(out.read_text()) if out.exists() else {}
    res[a.tag] = dict(date=str(date.today()), repo=str(repo), machine=f'{os.cpu_count()} CPU cores, no GPU', runs=rows)
    out.parent.mkdir(parents=True, exist_ok=True); out.write_text(json.dumps(res, indent=1))
    print(f'written {out}')

if __name__ == '__main__': main()
