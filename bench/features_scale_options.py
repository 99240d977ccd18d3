"""Issue 31, item 8: can the features reach ≤ 20 ms a sample (real 512² field, 1 core, PNG decode included) with the
diameter estimated per image *and* the nucleus counts unchanged? The time of each scale choice beside what it does to
the nucleus counts the features see, on the 49 real fields of `bench/features_diameter.py`.

The choices: **now** (nuclei segmented where they span `work_diameter` = 25 px: small-nucleus fields enlarged);
**never enlarge** (fields with nuclei under 25 px worked on at their own size, the segmentation's lengths scaled to their
diameter); **fixed 256²** (every 512² field halved, lengths scaled to its diameter); **first guess** (the diameter from
`estimate_diameter`'s first pass only, without the segmentation that refines it); **never enlarge + first guess**, **fixed 256² + first guess** (the cheapest: a floor for any
choice that keeps these features).
Counts: the nuclei of the blue channel at the choice's scale (the same path as `feature_masks`, which equals "now").
Times: process CPU time, one thread, the mean over the fields: decode, the estimate (or its first pass), the features
at the choice's working shape (`extract_features` given the diameter that yields that shape). Writes
bench/results/features_scale_options.json; `python bench/features_scale_options.py [--rounds 3]`."""
import json, os, sys, tempfile, time, shutil, warnings
os.environ['OMP_NUM_THREADS'] = '1'
from pathlib import Path
import numpy as np, cv2, torch
cv2.setNumThreads(1); torch.set_num_threads(1)
HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from features import compose_real
from hpa_fastai.core import real_hpa_path
from hpa_fastai.data import open_rgby
from hpa_fastai.features import extract_features, feature_masks
from hpa_fastai.segment import estimate_diameter, work_shape, percentile_uint8, _nuclei, _first_guess

def first_guess(b):
    "`estimate_diameter` without its last pass (the segmentation that refines the first guess)"
    u = percentile_uint8(b); g = min(1., 256 / max(u.shape)); d0 = _first_guess(u, g)
    for _ in range(2):
        if g == 1 or (np.isfinite(d0) and d0 * g >= 12): break
        g = min(1., 24 / d0 if np.isfinite(d0) else 4 * g); d0 = _first_guess(u, g)
    return float(np.clip(d0, 6., float(min(b.shape))))

def n_nuclei(x, ws, d):
    "Nuclei of sample `x` resized to `ws`, where they span `d` px, segmented at that size (lengths scaled to `d`)"
    if ws != x.shape[:2]:
        x = cv2.resize(x, ws[::-1], interpolation=cv2.INTER_AREA if ws[0] * ws[1] < x.shape[0] * x.shape[1] else cv2.INTER_LINEAR)
    return int(_nuclei(percentile_uint8(np.ascontiguousarray(x[..., 2])), d, 0.5, work=d).max())

# a choice: the working shape and the nuclei's diameter there, from the sample and its diameter
now = lambda x, d: (work_shape(x.shape, d, 25.), 25.)
never_enlarge = lambda x, d: now(x, d) if d >= 25 else (x.shape[:2], d)
fixed256 = lambda x, d: ((256, 256), d * 256 / x.shape[0])
CHOICES = {'now': (now, 'estimate'), 'never enlarge': (never_enlarge, 'estimate'), 'fixed 256²': (fixed256, 'estimate'),
           'first guess': (now, 'first_guess'), 'never enlarge + first guess': (never_enlarge, 'first_guess'),
           'fixed 256² + first guess': (fixed256, 'first_guess')}

def per_sample(f, n):
    f(0); t = time.process_time()
    for k in range(n): f(k)
    return (time.process_time() - t) / n * 1000

def main(rounds=3):
    warnings.simplefilter('ignore')
    real = real_hpa_path(HERE)
    if real is None: sys.exit('no ../shared/hpa: this benchmark needs the real fields')
    work = Path(tempfile.mkdtemp())
    ids = compose_real(real, work, 48)
    for f in (real/'sample_4ch').glob('*.png'): shutil.copy(f, work/f.name)
    ids += sorted({f.name.rsplit('_', 1)[0] for f in (real/'sample_4ch').glob('*.png')})
    xs = [open_rgby(work, i) for i in ids]; n = len(xs)
    blues = [np.ascontiguousarray(x[..., 2]) for x in xs]
    ds = {'estimate': [estimate_diameter(b) for b in blues], 'first_guess': [first_guess(b) for b in blues]}
    base = [int(feature_masks(x)[0].max()) for x in xs]
    times = {k: [] for k in ('decode', 'estimate', 'first_guess', *CHOICES)}
    for _ in range(rounds):
        times['decode'].append(per_sample(lambda k: open_rgby(work, ids[k]), n))
        times['estimate'].append(per_sample(lambda k: estimate_diameter(blues[k]), n))
        times['first_guess'].append(per_sample(lambda k: first_guess(blues[k]), n))
        for name, (choice, how) in CHOICES.items():
            shapes = [choice(x, d)[0] for x, d in zip(xs, ds[how])]
            # the diameter that makes `extract_features` work at that shape
            given = [x.shape[0] * 25. / s[0] for x, s in zip(xs, shapes)]
            times[name].append(per_sample(lambda k: extract_features(xs[k], diameter=given[k]), n))
    ms = {k: float(np.median(v)) for k, v in times.items()}
    rows = []
    for name, (choice, how) in CHOICES.items():
        counts = [n_nuclei(x, *choice(x, d)) for x, d in zip(xs, ds[how])]
        changed = [i for i, (a, b) in enumerate(zip(counts, base)) if a != b]
        area = np.mean([np.prod(choice(x, d)[0]) / 256**2 for x, d in zip(xs, ds[how])])
        rows.append(dict(choice=name, decode=ms['decode'], diameter=ms[how], features=ms[name],
                         total=ms['decode'] + ms[how] + ms[name], area=float(area), nuclei=int(sum(counts)),
                         fields_changed=len(changed), nuclei_moved=int(sum(abs(counts[i] - base[i]) for i in changed))))
    assert rows[0]['fields_changed'] == 0, 'the "now" path must reproduce feature_masks'
    print(f'{n} real fields, {rounds} rounds, process CPU ms a sample (1 thread); nuclei now: {sum(base)}')
    print('| choice | decode | diameter | features | **total** | mean area / 256² | nuclei | fields changed | nuclei moved |')
    print('|---|---|---|---|---|---|---|---|---|')
    for r in rows:
        print(f"| {r['choice']} | {r['decode']:.1f} | {r['diameter']:.1f} | {r['features']:.1f} | **{r['total']:.1f}** |"
              f" {r['area']:.2f} | {r['nuclei']} | {r['fields_changed']} / {n} | {r['nuclei_moved']} |")
    (HERE/'results').mkdir(exist_ok=True)
    (HERE/'results'/'features_scale_options.json').write_text(json.dumps(dict(rounds=rounds, samples=n, rows=rows), indent=1))
    shutil.rmtree(work)

if __name__ == '__main__':
    main(int(sys.argv[sys.argv.index('--rounds') + 1]) if '--rounds' in sys.argv else 3)
