"""The winners' three moves on a demo set, each against the seed spread: one model vs a k-fold ensemble (test macro-F1;
out-of-fold vs single-split thresholds on the rare classes), averaged vs last weights, training on crops of full-size
images vs shrinking them at equal training compute. Every run is the scratch recipe (small_cnn) with a fixed rate and
dihedral TTA; each configuration runs once per seed (split, initialisation, augmentation). Prints one table and writes
bench/results/recipe_moves.json (rewritten after every run, so an interrupted bench keeps what finished).

    python bench/recipe_moves.py                                   # 600 fields, 3 seeds, 5 folds (~1 h on 2 free cores)
    python bench/recipe_moves.py --n-train 150 --n-test 150 --image-size 128 --size 32 --crop-from 64 --epochs 4 \
        --average 2 --parts ensemble --out ens.json                # the recorded runs' ensembles, as a second process
    python bench/recipe_moves.py --merge singles.json ens.json     # one table of both
"""
import argparse, json, sys, tempfile, time
from datetime import date
from pathlib import Path
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from hpa_fastai.synth import make_synthetic_hpa
from hpa_fastai.train import run_training
from hpa_fastai.ensemble import train_folds, RARE_CLASSES
from hpa_fastai.core import HPA_CLASSES

def configs(a) -> dict:
    "Name → settings of the single-model runs (the ensemble is `a.folds` models of 'shrink')"
    base = dict(size=a.size, bs=16, epochs=a.epochs, lr=3e-3, arch='small_cnn', tta='mean', num_workers=0)
    return {'shrink': base,                                                     # whole fields shrunk to --size
            f'average_{a.average}': dict(base, average=a.average),              # the same, last epochs' weights averaged
            f'crop_{a.size}_of_{a.crop_from}': dict(base, size=a.crop_from, crop=a.size)}  # same pixels per step

def single_row(name, seed, m) -> dict:
    t = m['test']
    return dict(config=name, seed=seed, wall_s=m['wall_s'], test_f1=t['f1_tta_thresholds'], test_f1_plain=t['f1_thresholds'],
                test_ci95=t['f1_thresholds_ci95'], valid_f1=m['valid']['f1_tta_thresholds'],
                baselines=t.get('baselines'))

def ensemble_row(name, seed, m) -> dict:
    t, o = m['test'], m['oof']
    return dict(config=name, seed=seed, wall_s=m['wall_s'], test_f1=t['f1_thresholds'], test_ci95=t['f1_thresholds_ci95'],
                test_f1_single_split_thresholds=t['f1_thresholds_single_split'], rare_classes=t['rare_classes'],
                oof_f1=o['f1_thresholds'], oof_ci95=o['f1_thresholds_ci95'], oof_baselines=o['baselines'],
                baselines=t.get('baselines'), fold_wall_s=[f['wall_s'] for f in m['fold_runs']])

def mean_sd(v):
    v = np.asarray([x for x in v if x is not None], np.float64)
    return (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float('nan'), len(v))

def summary(rows) -> list:
    "One line per configuration: mean ± SD over its seeds of the test macro-F1 (and wall time)"
    out = []
    for c in dict.fromkeys(r['config'] for r in rows):
        rs = [r for r in rows if r['config'] == c]
        line = dict(config=c, seeds=[r['seed'] for r in rs])
        for k in ('test_f1', 'wall_s', 'test_f1_single_split_thresholds', 'oof_f1'):
            if k in rs[0]: line[k] = mean_sd([r[k] for r in rs])
        if 'rare_classes' in rs[0]:
            line['rare_classes'] = {cls: dict(positives=[r['rare_classes'][cls]['positives'] for r in rs],
                                              oof=mean_sd([r['rare_classes'][cls]['oof'] for r in rs]),
                                              single_split=mean_sd([r['rare_classes'][cls]['single_split'] for r in rs]))
                                    for cls in rs[0]['rare_classes']}
        out.append(line)
    return out

def paired(rows, a, b, key='test_f1') -> dict|None:
    "Per-seed difference a − b of `key`: its mean, SD and whether the mean exceeds twice its standard error"
    da = {r['seed']: r[key] for r in rows if r['config'] == a}; db = {r['seed']: r[key] for r in rows if r['config'] == b}
    d = [da[s] - db[s] for s in da if s in db]
    if len(d) < 2: return None
    m, sd, n = mean_sd(d)
    return dict(a=a, b=b, score=key, seeds=n, diff=round(m, 4), sd=round(sd, 4), exceeds_2se=bool(abs(m) > 2 * sd / np.sqrt(n)))

def _summarise(rows, a) -> tuple:
    "The summary lines and the comparisons, each paired by seed"
    summ = summary(rows); cfg = list(configs(a))
    comps = [paired(rows, f'ensemble_{a.folds}_folds', 'shrink'), paired(rows, cfg[1], 'shrink'),
             paired(rows, cfg[2], 'shrink')]
    ens = [r for r in rows if r['config'].startswith('ensemble')]
    if len(ens) >= 2:                               # OOF thresholds vs fold-0's on the same ensemble probabilities
        d = [r['test_f1'] - r['test_f1_single_split_thresholds'] for r in ens]
        m, sd, n = mean_sd(d)
        comps.append(dict(a='OOF thresholds', b='single-split thresholds', score='ensemble test_f1', seeds=n,
                          diff=round(m, 4), sd=round(sd, 4), exceeds_2se=bool(abs(m) > 2 * sd / np.sqrt(n))))
    return summ, comps

def show(summ, comps):
    fmt = lambda t: f'{t[0]:.3f} ± {t[1]:.3f} (n={t[2]})' if t else ''
    print(f'{"config":28} {"test macro-F1":24} {"wall s":18} {"OOF macro-F1":24}')
    for s in summ:
        w = s['wall_s']
        print(f'{s["config"]:28} {fmt(s["test_f1"]):24} {w[0]:6.0f} ± {w[1]:4.0f}      {fmt(s.get("oof_f1")):24}')
        if 'test_f1_single_split_thresholds' in s:
            print(f'{"  same probs, fold-0 thresholds":28} {fmt(s["test_f1_single_split_thresholds"])}')
        for cls, r in s.get('rare_classes', {}).items():
            print(f'    {cls:26} test positives {r["positives"]}: F1 OOF thresholds {fmt(r["oof"])}, '
                  f'one split {fmt(r["single_split"])}')
    for c in comps:
        if c: print(f'{c["a"]} − {c["b"]} ({c["score"]}, paired by seed): {c["diff"]:+.4f} ± {c["sd"]:.4f} SD over {c["seeds"]} '
                    f'seeds; beyond the spread (|mean| > 2 SE): {c["exceeds_2se"]}')

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--n-train', type=int, default=600); ap.add_argument('--n-test', type=int, default=300)
    ap.add_argument('--image-size', type=int, default=256, help='side of the demo images')
    ap.add_argument('--size', type=int, default=64, help='side the network sees (shrunk whole, or the crops)')
    ap.add_argument('--crop-from', type=int, default=128, help='resolution the crops are cut from')
    ap.add_argument('--epochs', type=int, default=6); ap.add_argument('--average', type=int, default=3)
    ap.add_argument('--folds', type=int, default=5); ap.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    ap.add_argument('--work', default=None, help='working folder (default: a new temporary one)')
    ap.add_argument('--out', default=str(ROOT/'bench'/'results'/'recipe_moves.json'))
    ap.add_argument('--parts', nargs='+', default=['singles', 'ensemble'], help='run the single models, the ensembles, or both')
    ap.add_argument('--merge', nargs='+', default=None, help='instead: merge the runs of these results files into --out')
    a = ap.parse_args()
    if a.merge:                                             # e.g. the singles and the ensembles run as two processes
        parts = [json.loads(Path(f).read_text()) for f in a.merge]
        a = argparse.Namespace(**{**vars(a), **{k: v for k, v in parts[0]['settings'].items() if k not in ('out', 'merge', 'parts')}})
        res = dict({k: v for k, v in parts[0].items() if k not in ('runs', 'summary', 'comparisons', 'total_wall_s')},
                   merged_from=[str(f) for f in a.merge], wall_s_each=[p_['total_wall_s'] for p_ in parts])
        rows = [r for p_ in parts for r in p_['runs']]
        summ, comps = _summarise(rows, a)
        Path(a.out).write_text(json.dumps(dict(res, runs=rows, summary=summ, comparisons=comps), indent=1))
        show(summ, comps); return
    work = Path(a.work or tempfile.mkdtemp(prefix='recipe-')); work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    data = work/'demo'
    if not (data/'train.csv').exists():
        make_synthetic_hpa(data, n_train=a.n_train, n_test=a.n_test, size=a.image_size, seed=0, freq_power=0.5,
                           progress=False)
    rows, res = [], dict(date=str(date.today()), machine='CPU, 2 cores shared with other jobs (wall times include the sharing)',
                         demo=dict(n_train=a.n_train, n_test=a.n_test, size=a.image_size, seed=0, freq_power=0.5),
                         settings=vars(a))
    def save():
        summ, comps = _summarise(rows, a)
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(dict(res, runs=rows, summary=summ, comparisons=comps,
                                               total_wall_s=round(time.time() - t0)), indent=1))
        return summ, comps
    for seed in (a.seeds if 'singles' in a.parts else []):   # single models first: cheap, and each seed completes a row
        for name, cfg in configs(a).items():
            print(f'[bench] {name} seed {seed}', flush=True)
            m = run_training(data, out=work/'runs', name=f'{name}-s{seed}', overwrite=True, seed=seed, **cfg)
            rows.append(single_row(name, seed, m)); save()
    for seed in (a.seeds if 'ensemble' in a.parts else []):
        name = f'ensemble_{a.folds}_folds'
        print(f'[bench] {name} seed {seed}', flush=True)
        m = train_folds(data, folds=a.folds, out=work/'runs', name=f'{name}-s{seed}', overwrite=True, seed=seed,
                        **configs(a)['shrink'])
        rows.append(ensemble_row(name, seed, m)); save()
    show(*save())
    print(f'[bench] {time.time() - t0:.0f} s in all; results → {a.out}')

if __name__ == '__main__':
    main()
