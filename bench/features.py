"""Feature extraction speed, ms/sample on one core at 512², PNG decoding included:
(a) a paper-faithful reference (NL-means denoising + scikit-image SSIM + watershed, as the authors' scripts for
    K. Liu, Z. Zhang, W. Zhou, student project report on the Kaggle HPA Image Classification challenge, Stanford, 2018;
    code: https://github.com/KuangcongLiu/cs229Project; see nbs/paper.ipynb)
(b) hpa_fastai.features.extract_features (nuclei split by segment_nuclei), and beside it the ten + the extended set
on 4-channel samples composed from the real single-channel PNGs in ../shared/hpa, and on synthetic samples.
Prints a table and writes bench/results/features.json. Target: (b) <= 20 ms/sample and >= 50x faster than (a)."""
import os
os.environ.setdefault('OMP_NUM_THREADS', '1')
import json, platform, shutil, sys, tempfile, time, numpy as np, cv2
cv2.setNumThreads(1)
from pathlib import Path
from skimage.metrics import structural_similarity
from hpa_fastai.core import CHANNELS, real_hpa_path
from hpa_fastai.data import open_rgby
from hpa_fastai.features import extract_features, feature_params, _features
from hpa_fastai.synth import make_synthetic_hpa

def _read_bgr(fn): return cv2.imread(str(fn))                    # the original reads each PNG as 3 identical channels
def _stretch(im): return cv2.normalize(im, None, 0, 255, cv2.NORM_MINMAX)
def _nlm(im, h): return cv2.fastNlMeansDenoising(im, None, h, 7, 21)

def _watershed(gray, seed_frac):
    _, th = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    k = np.ones((1, 1), np.uint8)                                  # the original's 1x1 kernels (no-ops)
    opening = cv2.morphologyEx(th, cv2.MORPH_OPEN, k, iterations=2)
    sure_bg = cv2.dilate(opening, k, iterations=3)
    dist = cv2.distanceTransform(opening, cv2.DIST_L2, 5)
    _, sure_fg = cv2.threshold(dist, seed_frac * dist.max(), 255, 0); sure_fg = sure_fg.astype(np.uint8)
    unknown = cv2.subtract(sure_bg, sure_fg)
    _, markers = cv2.connectedComponents(sure_fg); markers = markers + 1; markers[unknown == 255] = 0
    return cv2.watershed(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), markers)

def paper_features(folder, id_):
    "A paper-faithful reference of the authors' pipeline (bugs kept), for timing"
    ch = {c: cv2.cvtColor(_stretch(_read_bgr(Path(folder)/f'{id_}_{c}.png')), cv2.COLOR_BGR2GRAY) for c in CHANNELS}
    blue6 = _nlm(ch['blue'], 6)
    m = _watershed(blue6, 0.9)
    g = ch['green'].astype(np.float64)
    bg = g[m == 1].sum()
    f1 = g[(m > 1) | (m == -1)].sum() / bg if bg else 50
    gd = _nlm(ch['green'], 8)
    f2, f3, f4 = (structural_similarity(gd, _nlm(ch[c], 8), data_range=255) for c in ('red', 'yellow', 'blue'))
    f5 = ch['green'].sum() / max(ch['yellow'].sum(), 1)
    f6 = (ch['green'] > 0.05 * ch['green'].mean()).sum()
    def blobs(im):
        x = cv2.GaussianBlur(im, (3, 3), 0); x = _nlm(x, 8); x = cv2.GaussianBlur(x, (5, 5), 0); x = _nlm(x, 6)
        x = (2 * x.astype(np.uint16) % 256).astype(np.uint8)     # uint8 wrap-around, as in the original
        mk = _watershed(x, 0.1)
        cs, _ = cv2.findContours((mk > 1).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        return [c for c in cs if 150 < cv2.contourArea(c) < 100000]
    gb, nb = blobs(ch['green']), blobs(ch['blue'])
    comp = [cv2.arcLength(c, True)**2 / (4*np.pi*cv2.contourArea(c)) for c in gb]
    ecc = [(lambda e: e[1][0] / e[1][1])(cv2.fitEllipse(c)) for c in gb if len(c) >= 5]
    box = lambda c: np.array(cv2.boundingRect(c), float)[:2] + np.array(cv2.boundingRect(c), float)[2:] / 2
    ga, na = [cv2.contourArea(c) for c in gb], [cv2.contourArea(c) for c in nb]
    nc = np.array([box(c) for c in nb])
    dist = [np.min(np.hypot(*(nc - box(c)).T)) for c in gb] if len(nc) else []
    return np.array([f1, f2, f3, f4, f5, f6, np.mean(comp) if comp else 0, np.mean(ecc) if ecc else 0,
                     np.mean(ga) / np.mean(na) if ga and na else 0, np.mean(dist) if dist else 0])

def compose_real(real, dest, n):
    "4-channel samples from real single-channel PNGs (each Id has one channel): the i-th file of each channel"
    files = {c: sorted((real/'single_channel').glob(f'*_{c}.png')) for c in CHANNELS}
    n = min(n, *(len(v) for v in files.values()))
    for i in range(n):
        for c in CHANNELS: shutil.copy(files[c][i], dest/f'real{i:03d}_{c}.png')
    return [f'real{i:03d}' for i in range(n)]

def time_per_sample(fn, folder, ids, reps=1):
    fn(folder, ids[0])
    t = time.perf_counter()
    for _ in range(reps):
        for i in ids: fn(folder, i)
    return (time.perf_counter() - t) / (reps * len(ids)) * 1000

def main(n_lib=48, n_ref=4):
    work = Path(tempfile.mkdtemp()); rows = []
    lib = lambda folder, i: extract_features(open_rgby(folder, i))
    p = feature_params()
    ext = lambda folder, i: _features(open_rgby(folder, i), p, extended=True)     # the ten + the extended set, one segmentation
    decode = lambda folder, i: open_rgby(folder, i)
    real = real_hpa_path(Path(__file__).parent)
    sets = []
    if real is not None:
        (work/'real').mkdir(); sets.append(('real PNGs (composed)', work/'real', compose_real(real, work/'real', n_lib)))
    else: print('no ../shared/hpa: real-data rows skipped')
    syn = make_synthetic_hpa(work/'syn', n_train=n_lib, n_test=0, size=512, seed=0, progress=False)
    import pandas as pd
    sets.append(('synthetic 512²', syn/'train', list(pd.read_csv(syn/'train.csv').Id)))
    for name, folder, ids in sets:
        d = time_per_sample(decode, folder, ids, 2)
        b = time_per_sample(lib, folder, ids, 2)
        e = time_per_sample(ext, folder, ids, 1)
        a = time_per_sample(paper_features, folder, ids[:n_ref])
        rows.append(dict(data=name, n=len(ids), decode_ms=round(d, 1), library_ms=round(b, 1), extended_ms=round(e, 1), paper_ms=round(a), speedup=round(a / b)))
    print('| data | samples | PNG decode only ms | (b) library ms (decode incl.) | (b) + extended set ms | (a) paper-faithful ms | (a)/(b) |')
    print('|---|---|---|---|---|---|---|')
    for r in rows: print(f"| {r['data']} | {r['n']} (ref: {n_ref}) | {r['decode_ms']} | {r['library_ms']} | {r['extended_ms']} | {r['paper_ms']} | {r['speedup']}× |")
    out = Path(__file__).parent/'results'; out.mkdir(exist_ok=True)
    (out/'features.json').write_text(json.dumps(dict(rows=rows, machine=f'{platform.machine()}, 1 thread'), indent=1))
    shutil.rmtree(work)
    return rows

if __name__ == '__main__': main()
