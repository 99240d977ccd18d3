"""Segmentation benchmark: F1 at IoU 0.5 and speed of `segment_nuclei` per scale and bit depth on drawn fields (the
diameter given, estimated, and the former fixed-scale behaviour), and on the real blue channels: the count at 512² and
at 2048² (the same fields enlarged 4x), and the time per field. Prints markdown tables, writes bench/results/segment.json.

    python bench/segment.py [--seeds 3] [--side 384]"""
import argparse, json, os, platform, time, warnings
from pathlib import Path
import numpy as np, cv2
from hpa_fastai.data import as_uint8
from hpa_fastai.files import write_json
from hpa_fastai.segment import segment_nuclei, estimate_diameter, segmentation_f1, _nuclei, default_diameter
from hpa_fastai.test_utils import drawn_nuclei, real_data, real_sample

ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
ap.add_argument('--seeds', type=int, default=3); ap.add_argument('--side', type=int, default=384)
ap.add_argument('--diameters', default='10,16,24,40,60,80'); ap.add_argument('--bits', default='8,12,16')
a = ap.parse_args()
cv2.setNumThreads(1); warnings.simplefilter('ignore')

def former(b):
    "The former behaviour: lengths from the side (a Kaggle field of view), 16-bit ÷ 257 (as in nbs/01c_segment.ipynb)"
    b = ((b.astype(np.uint32) + 128) // 257).astype(np.uint8) if b.dtype == np.uint16 else as_uint8(b)
    return _nuclei(b, default_diameter(b.shape))

def timed(f, *args, **kw):
    t = time.perf_counter(); r = f(*args, **kw); return r, (time.perf_counter() - t) * 1000

rows = []
for d in map(int, a.diameters.split(',')):
    for bits in map(int, a.bits.split(',')):
        for s in range(a.seeds):
            blue, truth = drawn_nuclei(d, n=40, size=a.side, bits=bits, seed=1000 * s + 10 * d + bits)
            given, t_given = timed(segment_nuclei, blue, diameter=d)
            est, t_est = timed(segment_nuclei, blue)
            rows.append(dict(diameter=d, bits=bits, seed=s, nuclei=int(truth.max()), estimate=round(estimate_diameter(blue), 1),
                             f1_given=segmentation_f1(given, truth)['f1'], f1_estimated=segmentation_f1(est, truth)['f1'],
                             f1_former=segmentation_f1(former(blue), truth)['f1'], ms_given=t_given, ms_estimated=t_est))
per_scale = {}
for d in sorted({r['diameter'] for r in rows}):
    rs = [r for r in rows if r['diameter'] == d]
    per_scale[d] = {k: round(float(np.mean([r[k] for r in rs])), 3) for k in ('f1_given', 'f1_estimated', 'f1_former', 'ms_given', 'ms_estimated')}
    per_scale[d].update(f1_given_min=round(min(r['f1_given'] for r in rs), 3), f1_estimated_min=round(min(r['f1_estimated'] for r in rs), 3),
                        estimate_ratio=round(float(np.median([r['estimate'] / d for r in rs])), 3), fields=len(rs))

real = real_data(quiet=True); real_res = None
if real is not None:
    fs = sorted((real/'single_channel').glob('*_blue.png')) + [real_sample(real).parent/f'{real_sample(real).name}_blue.png']
    counts, big_counts, ms, ms_big = [], [], [], []
    for f in fs:
        b = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
        lab, t = timed(segment_nuclei, b); counts.append(int(lab.max())); ms.append(t)
        lb, t = timed(segment_nuclei, cv2.resize(b, (2048, 2048), interpolation=cv2.INTER_LINEAR)); big_counts.append(int(lb.max())); ms_big.append(t)
    c, cb = np.array(counts), np.array(big_counts)
    real_res = dict(fields=len(fs), real_sample_nuclei=counts[-1], real_sample_nuclei_2048=big_counts[-1],
                    median_nuclei=float(np.median(c)), same_count_2048=round(float((c == cb).mean()), 3),
                    max_count_diff_2048=int(np.abs(c - cb).max()), ms_512=round(float(np.median(ms)), 1), ms_2048=round(float(np.median(ms_big)), 1))

out = dict(machine=f'{platform.node()} {os.cpu_count()} CPU cores (a VM shared with other agents: timings vary with their load)',
           date=time.strftime('%Y-%m-%d'), args=vars(a), per_scale=per_scale, real=real_res, fields=rows)
write_json(Path(__file__).parent/'results'/'segment.json', out)
print(f'drawn {a.side}² fields, {a.seeds} seeds x {len(a.bits.split(","))} bit depths per diameter; F1 at IoU 0.5 (mean, min)\n')
print('| nucleus diameter px | F1 given | min | F1 estimated | min | estimate / true | F1 former | ms given | ms estimated |\n|---|---|---|---|---|---|---|---|---|')
for d, r in per_scale.items():
    print(f"| {d} | {r['f1_given']:.3f} | {r['f1_given_min']:.3f} | {r['f1_estimated']:.3f} | {r['f1_estimated_min']:.3f} | {r['estimate_ratio']:.2f} | "
          f"{r['f1_former']:.3f} | {r['ms_given']:.1f} | {r['ms_estimated']:.1f} |")
if real_res: print('\nreal blue channels:', json.dumps(real_res))
