"""Realism of the synthetic generator: per-channel statistics of real HPA fields (the held-out half of the real
PNGs in ../shared/hpa, split by `split_real_files`: odd positions in name order) against a fresh synthetic set drawn
at 512²: real median and IQR, synthetic median, and whether it lies inside the real IQR (the calibration target).
Also: the rank correlation of the number of labels with green's mean (real data: about 0.2), and how strongly green
follows its landmark for Microtubules (red) and ER (yellow). Prints markdown tables, writes bench/results/realism.json.
Usage: python bench/realism.py [--half 1] [--n 60]"""
import os
os.environ.setdefault('OMP_NUM_THREADS', '1')
import argparse, json, platform, sys, time, numpy as np, cv2
cv2.setNumThreads(1)
from pathlib import Path
from scipy.stats import spearmanr
from hpa_fastai.core import HPA_CLASSES, real_hpa_path
from hpa_fastai.files import write_json
from hpa_fastai.synth import synth_sample, sample_label_sets, realism_table, split_real_files

def coloc(name, ch, n=12, size=256):
    "Median correlation of green with channel `ch` over `n` fields that show only class `name`"
    c = HPA_CLASSES.index(name)
    return float(np.median([np.corrcoef(x[..., 1].ravel(), x[..., ch].ravel())[0, 1]
                            for x in (synth_sample([c], size, seed=900 + j) for j in range(n))]))

def main(half=1, n=60, seed=2026, size=512):
    real = real_hpa_path()
    if real is None: sys.exit('bench/realism.py needs the real PNGs in ../shared/hpa (or HPA_REAL_DATA); not found')
    files = split_real_files(list((real/'single_channel').glob('*.png')) + list((real/'sample_4ch').glob('*.png')), half)
    sets = sample_label_sets(n, seed=seed)
    t0 = time.perf_counter(); xs = [synth_sample(t, size, seed=seed * 1000 + i) for i, t in enumerate(sets)]
    table = realism_table(files, xs)
    sets2 = sample_label_sets(300, seed=seed + 1)
    rho = spearmanr([len(t) for t in sets2], [synth_sample(t, 256, seed=i)[..., 1].mean() for i, t in enumerate(sets2)]).statistic
    res = dict(half={0: 'calibration', 1: 'held-out'}[half], n_real=len(files), n_synth=n, size=size, seed=seed,
               inside=int(table.inside.sum()), rows=len(table), spearman_labels_green_mean=round(float(rho), 3),
               coloc_microtubules_green_red=round(coloc('Microtubules', 0), 3), coloc_er_green_yellow=round(coloc('Endoplasmic reticulum', 3), 3),
               seconds=round(time.perf_counter() - t0, 1), machine=f'{platform.processor() or platform.machine()}, 1 thread',
               table=table.round(5).to_dict(orient='records'))
    fmt = lambda v: f'{v:.3g}' if isinstance(v, float) else str(v)
    print(f"Real ({res['half']} half, {len(files)} channel PNGs) vs {n} synthetic {size}² fields: "
          f"{res['inside']} of {res['rows']} synthetic medians inside the real IQR\n")
    print('| channel | statistic | real median | real IQR | synthetic median | inside |\n|---|---|---|---|---|---|')
    for r in table.itertuples():
        print(f'| {r.channel} | {r.stat} | {fmt(r.real_median)} | {fmt(r.real_q25)}–{fmt(r.real_q75)} | {fmt(r.synth_median)} | {"yes" if r.inside else "**no**"} |')
    print(f"\nSpearman(number of labels, green mean) over 300 fields: {res['spearman_labels_green_mean']}; "
          f"median corr(green, red) for Microtubules {res['coloc_microtubules_green_red']}, corr(green, yellow) for ER {res['coloc_er_green_yellow']}")
    out = Path(__file__).parent/'results'; out.mkdir(exist_ok=True)
    write_json(out/('realism.json' if half == 1 else 'realism_calibration.json'), res)
    return res

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--half', type=int, default=1, choices=[0, 1], help='real half: 0 calibration, 1 held out (default)')
    p.add_argument('--n', type=int, default=60, help='synthetic fields (default 60)')
    a = p.parse_args(); main(a.half, a.n)
