"""Near-duplicate search (hpa_fastai.dedup): hashing rate, search time, false-positive and false-negative rates.

(1) Hashing rate: `hash_samples` on synthetic 512 px 4-channel PNG samples (decode included, no cache), on 1 process
    and on all cores; and on 2048 px JPEG samples (HPAv18's size and format).
(2) False positives: `N_DISTINCT` distinct synthetic fields (256 px, every class mix), all pairs searched: near pairs
    found among them, and the distribution of the nearest-neighbour distance (brute force over a subset).
(3) False negatives per transform: `N_BASE` fields, each copied under every transform below; a copy is missed when it
    does not land in its field's group (fn_rate; a copy may join through another copy of the same field), or is not
    itself a near pair of its field (direct_fn_rate). Direct misses are split into "too far" (its exact distance >
    max_dist) and "search missed" (near enough, but no hash table brought the pair together).
(4) Search time at scale: near_pairs on the distinct fields, and on 120,000 samples of random codes (uniform bits),
    with how often the hashes of distinct synthetic fields meet in the tables compared with random codes.
Prints tables and writes bench/results/dedup.json."""
import os
os.environ.setdefault('OMP_NUM_THREADS', '1')
import json, platform, shutil, sys, tempfile, time, numpy as np, cv2, pandas as pd
cv2.setNumThreads(1)
from pathlib import Path
from fastcore.parallel import parallel
from hpa_fastai.data import write_rgby
from hpa_fastai.synth import synth_sample
from hpa_fastai.dedup import (DIHEDRAL, dihedral_image, sample_hashes, hash_samples, near_pairs, group_labels, _pair_distances,
                              _entry_pairs, _table_keys)

N_DISTINCT = int(os.environ.get('N_DISTINCT', 3000))
N_BASE = int(os.environ.get('N_BASE', 200))
N_RATE = int(os.environ.get('N_RATE', 256))
MAX_DIST = 10.
CPUS = os.cpu_count()

def jpeg(x, q=75): return np.stack([cv2.imdecode(cv2.imencode('.jpg', x[..., c], [cv2.IMWRITE_JPEG_QUALITY, q])[1], 0) for c in range(x.shape[-1])], -1)
def crop(x, side, ox, oy):
    s = x.shape[0]; n = int(round(side * s)); l, t = int(ox * s), int(oy * s)
    return cv2.resize(x[t:t+n, l:l+n], (s, s), interpolation=cv2.INTER_LINEAR)

def transforms(rng):
    "name → function of a field (a fresh random crop offset per call)"
    def rcrop(side, flip=None, q=None):
        def f(x):
            ox, oy = rng.uniform(0, 1 - side, 2); y = crop(x, side, ox, oy)
            if flip: y = dihedral_image(y, flip)
            return jpeg(y, q) if q else y
        return f
    return {
        'jpeg_q75': lambda x: jpeg(x, 75),
        'jpeg_q50': lambda x: jpeg(x, 50),
        'upscale_x4': lambda x: cv2.resize(x, (4 * x.shape[1], 4 * x.shape[0]), interpolation=cv2.INTER_CUBIC),
        'upscale_x4_jpeg_q75': lambda x: jpeg(cv2.resize(x, (4 * x.shape[1], 4 * x.shape[0]), interpolation=cv2.INTER_CUBIC), 75),
        'downscale_half': lambda x: cv2.resize(x, (x.shape[1] // 2, x.shape[0] // 2), interpolation=cv2.INTER_AREA),
        'brightness_contrast': lambda x: np.clip(x * rng.uniform(0.6, 1.6) + rng.uniform(-10, 25), 0, 255).astype(np.uint8),
        'gamma_0.7': lambda x: (255 * (x / 255.) ** 0.7).astype(np.uint8),
        **{t: (lambda t: lambda x: dihedral_image(x, t))(t) for t in DIHEDRAL[1:]},
        'crop_95pct_side': rcrop(0.95),
        'crop_90pct_side (81% area)': rcrop(0.90),
        'crop_90pct_rot90_jpeg': rcrop(0.90, 'rot90', 75),
        'crop_85pct_side (72% area, beyond design)': rcrop(0.85),
    }

def _field(seed, size=256):
    rng = np.random.default_rng(seed)
    labels = sorted(set(rng.choice(28, rng.integers(1, 4), replace=False).tolist()))
    return synth_sample(labels, size=size, seed=int(seed))

def _hash_field(seed): return sample_hashes(_field(seed))

def _write(job):
    folder, i, size, ext = job
    x = _field(10_000 + i, size)
    if ext == '.jpg': x = cv2.resize(x, (2048, 2048), interpolation=cv2.INTER_CUBIC)
    write_rgby(folder, f'f{i:05d}', x, ext=ext)

def rate(tmp):
    res = []
    for size, ext, n in ((512, '.png', N_RATE), (512, '.jpg-2048', max(16, N_RATE // 8))):
        folder = tmp/f'rate-{ext}'
        e = '.jpg' if ext.startswith('.jpg') else ext
        parallel(_write, [(folder, i, size, e) for i in range(n)], n_workers=CPUS, threadpool=False, progress=False)
        for nw in sorted({0, CPUS}):
            t = time.time(); hash_samples(folder, n_workers=nw, cache=False, chunk_size=32, progress=False); dt = time.time() - t
            res.append(dict(files='512 px PNG' if e == '.png' else '2048 px JPEG q95', n=n, processes=max(nw, 1), seconds=round(dt, 2),
                            samples_per_s=round(n / dt, 1)))
            print(f"hashing {res[-1]['files']:18s} {n:5d} samples, {max(nw, 1)} process(es): {res[-1]['samples_per_s']:7.1f} samples/s")
    return res

def main():
    tmp = Path(tempfile.mkdtemp())
    try:
        out = dict(machine=f'{platform.machine()}, {CPUS} cores ({platform.processor() or "cpu"}), shared with other agents',
                   date=time.strftime('%Y-%m-%d'), max_dist=MAX_DIST)
        out['hashing'] = rate(tmp)
        # (2) distinct fields
        t = time.time()
        hs = parallel(_hash_field, list(range(N_DISTINCT)), n_workers=CPUS, threadpool=False, progress=False, chunksize=64)
        q, w, ok = (np.stack(a) for a in zip(*hs))
        gen_s = time.time() - t
        t = time.time(); pairs = near_pairs(q, w, ok, MAX_DIST); search_s = time.time() - t
        n_pairs = N_DISTINCT * (N_DISTINCT - 1) // 2
        grouped = len(set(pairs.a) | set(pairs.b))
        sub = min(N_DISTINCT, 1000); a, b = np.triu_indices(sub, 1)
        d1, _ = _pair_distances(q, w, ok, a, b); d2, _ = _pair_distances(q, w, ok, b, a); d = np.minimum(d1, d2)
        out['false_positives'] = dict(n_fields=N_DISTINCT, pairs_compared=n_pairs, near_pairs_found=len(pairs),
                                      pair_fp_rate=len(pairs) / n_pairs, fields_wrongly_grouped=grouped,
                                      field_fp_rate=grouped / N_DISTINCT, search_s=round(search_s, 2),
                                      brute_force_subset=sub, min_distance=float(d.min()), p0_1_distance=float(np.percentile(d, 0.1)),
                                      median_distance=float(np.median(d)), brute_pairs_within_max_dist=int((d <= MAX_DIST).sum()))
        print(f"false positives: {len(pairs)} near pairs among {N_DISTINCT} distinct fields ({n_pairs:,} pairs); "
              f"{grouped} fields wrongly grouped; nearest distinct pair (brute force, {sub} fields) {d.min():.1f} bits, "
              f"0.1th percentile {np.percentile(d, 0.1):.1f}, median {np.median(d):.1f} (hashing {N_DISTINCT / gen_s:.0f} fields/s incl. drawing)")
        # (3) false negatives per transform
        rng = np.random.default_rng(0); tfs = transforms(rng)
        rows, names = [], list(tfs)
        base = list(range(N_BASE))                               # the first N_BASE distinct fields
        cq, cw, cok, src, kind = [], [], [], [], []
        for i in base:
            x = _field(i)
            for k, name in enumerate(names):
                h = sample_hashes(tfs[name](x)); cq.append(h[0]); cw.append(h[1]); cok.append(h[2]); src.append(i); kind.append(k)
        Q, W, OK = np.concatenate([q, np.stack(cq)]), np.concatenate([w, np.stack(cw)]), np.concatenate([ok, np.stack(cok)])
        t = time.time(); p_all = near_pairs(Q, W, OK, MAX_DIST); search_all_s = time.time() - t
        g = group_labels(len(Q), p_all)
        src, kind = np.array(src), np.array(kind); idx = N_DISTINCT + np.arange(len(src))
        found = g[idx] == g[src]
        de1, _ = _pair_distances(Q, W, OK, src, idx); de2, _ = _pair_distances(Q, W, OK, idx, src); de = np.minimum(de1, de2)
        # a pair found only through other copies still counts as found (groups are connected components); a direct miss:
        direct = set(zip(p_all.a, p_all.b))
        direct_found = np.array([(min(s, j), max(s, j)) in direct for s, j in zip(src, idx)])
        for k, name in enumerate(names):
            m = kind == k
            rows.append(dict(transform=name, n=int(m.sum()), fn_rate=float(1 - found[m].mean()), direct_fn_rate=float(1 - direct_found[m].mean()),
                             too_far=int((m & (de > MAX_DIST)).sum()), search_missed=int((m & (de <= MAX_DIST) & ~direct_found).sum()),
                             median_distance=float(np.median(de[m])), p95_distance=float(np.percentile(de[m], 95))))
        out['false_negatives'] = rows
        out['false_positives']['with_copies'] = dict(n=len(Q), near_pairs=len(p_all), search_s=round(search_all_s, 2),
            distinct_wrongly_grouped=int(len(set(g[:N_DISTINCT][np.bincount(g)[g[:N_DISTINCT]] > 1]) - set(g[src]))))
        print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f'{v:.3f}'))
        # (4) search at scale: random codes (uniform bits) at 120,000; real hashes' meeting rate to extrapolate
        nbig = int(os.environ.get('N_BIG', 120_000)); rr = np.random.default_rng(1)
        rq = rr.integers(0, 2**63, (nbig, 8, 4), dtype=np.int64).astype(np.uint64)
        rw = rr.integers(0, 2**63, (nbig, W.shape[1], 4), dtype=np.int64).astype(np.uint64); rok = np.ones((nbig, 4), bool)
        t = time.time(); near_pairs(rq, rw, rok, MAX_DIST); big_s = time.time() - t
        rng2 = np.random.default_rng(0); allpos = np.array([(c, b) for c in range(4) for b in range(63)])
        C = q.shape[2]
        def meetings(Q_, W_):
            "meetings of hashes of two different samples in the 48 tables of `near_pairs`"
            return sum(int((qi // 8 != wi // W_.shape[1]).sum()) for p in (allpos[rng2.choice(len(allpos), 20, replace=False)] for _ in range(48))
                       for qi, wi in _entry_pairs(_table_keys(Q_.reshape(-1, C), p), _table_keys(W_.reshape(-1, C), p)))
        real_rate = meetings(q, w) / N_DISTINCT ** 2
        rand_rate = meetings(rq[:N_DISTINCT], rw[:N_DISTINCT]) / N_DISTINCT ** 2
        out['search_at_scale'] = dict(n=nbig, random_codes_s=round(big_s, 1), meetings_per_pair_real=real_rate,
                                      meetings_per_pair_random=rand_rate,
                                      est_s_at_n_real_hashes=round(big_s * real_rate / max(rand_rate, 1e-12), 1))
        print(f'search: {N_DISTINCT} real fields {search_s:.2f} s; {nbig:,} random codes {big_s:.1f} s; real hashes meet in the tables '
              f'{real_rate / max(rand_rate, 1e-12):.1f}x as often as random ones -> about {big_s * real_rate / max(rand_rate, 1e-12):.0f} s '
              f'for {nbig:,} real samples (if the search time scales with the meetings)')
        Path('bench/results').mkdir(parents=True, exist_ok=True)
        Path('bench/results/dedup.json').write_text(json.dumps(out, indent=1))
        print('wrote bench/results/dedup.json')
    finally: shutil.rmtree(tmp, ignore_errors=True)

if __name__ == '__main__': main()
