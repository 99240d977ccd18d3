"""Data loading speed, samples/s delivered by a training DataLoader (shuffled, bs 16, no augmentation), at 256² and 512²:
(a) the per-item PNG path: `rgby_dataloaders` (fastai DataBlock, 4 PNG decodes + resize per item), num_workers 0 and 2;
(b) the packed path: `store_dataloaders` over `pack_rgby`'s store (one sorted memmap read per batch), page cache warm
    and (where the OS lets us drop a file's pages) cold.
For each: `uint8` batches, what a GPU would receive (no batch transforms), and, beside it, the in-process
IntToFloatTensor + Normalize figure (on a GPU machine those run on the GPU). Also the time to pack.
Synthetic Kaggle-layout data (`make_synthetic_hpa`, 512² PNGs). Steady state: the first batch of each epoch
(worker start-up, first reads) is excluded. Prints a table and writes bench/results/loader.json.
Target: packed >= 10x PNG at 512² for uint8 delivery (best PNG configuration)."""
import json, os, platform, shutil, sys, tempfile, time, datetime, numpy as np, torch
from pathlib import Path
from hpa_fastai.core import read_labels, N_TRAIN
from hpa_fastai.dataloaders import rgby_dataloaders
from hpa_fastai.store import pack_rgby, open_store, store_dataloaders, IMAGES
from hpa_fastai.synth import make_synthetic_hpa

def rate(dl, epochs:int=1) -> tuple[float, float]:
    "Steady-state samples/s (first batch of each epoch excluded) and whole-epoch samples/s, over `epochs`"
    steady_n = steady_t = tot_n = tot_t = 0
    for _ in range(epochs):
        t0 = time.perf_counter(); t1 = None; n = n1 = 0
        for b in dl:
            k = len(b[0]); n += k
            if t1 is None: t1, n1 = time.perf_counter(), k
        t2 = time.perf_counter()
        steady_n += n - n1; steady_t += t2 - t1; tot_n += n; tot_t += t2 - t0
    return steady_n / steady_t, tot_n / tot_t

def drop_cache(fn) -> bool:
    "Ask the OS to drop `fn`'s pages from the page cache (clean pages only); False where it cannot"
    if not hasattr(os, 'posix_fadvise'): return False
    fd = os.open(fn, os.O_RDONLY)
    try: os.fsync(fd); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED); return True
    finally: os.close(fd)

def main(n:int=320, sizes=(256, 512), bs:int=16, data=None):
    torch.set_num_threads(os.cpu_count() or 1)
    work = Path(tempfile.mkdtemp())
    t = time.perf_counter()
    syn = Path(data) if data else make_synthetic_hpa(work/'syn', n_train=n, n_test=0, size=512, seed=0, n_workers=2, progress=False)
    print(f'synthetic data: {n} samples at 512² in {time.perf_counter() - t:.0f} s', file=sys.stderr)
    df = read_labels(syn/'train.csv'); idx = np.arange(len(df))
    rows, packs = [], []
    for size in sizes:
        dest = work/f'store-{size}'
        t = time.perf_counter(); pack_rgby(syn/'train', dest, size=size, n_workers=2, progress=False); dt = time.perf_counter() - t
        packs.append(dict(size=size, n=len(df), seconds=round(dt, 2), samples_per_s=round(len(df) / dt, 1),
                          kaggle_minutes=round(N_TRAIN / (len(df) / dt) / 60, 1), gb_kaggle=round(N_TRAIN * 4 * size * size / 1e9, 1)))
        for nw in (0, 2):
            dls = rgby_dataloaders(syn, size=size, bs=bs, valid_pct=0, aug=False, num_workers=nw)
            u8 = dls.train.new(after_batch=[])
            rows.append(dict(size=size, path='PNG per item', workers=nw, uint8=rate(u8), float_norm=rate(dls.train)))
        st = open_store(dest, size=size)
        sd = store_dataloaders(st, df, idx, [], bs=bs, aug=False, device='cpu')
        u8 = store_dataloaders(st, df, idx, [], bs=bs, after_batch=[], device='cpu')
        rate(u8.train)                                                   # pages in: the warm-cache figure
        rows.append(dict(size=size, path='packed store (warm)', workers=0, uint8=rate(u8.train, 3), float_norm=rate(sd.train, 2)))
        if drop_cache(dest/IMAGES):
            rows.append(dict(size=size, path='packed store (cold)', workers=0, uint8=rate(u8.train), float_norm=None))
            drop_cache(dest/IMAGES)
            rows[-1]['float_norm'] = rate(sd.train)
    best_png = {s: max(q['uint8'][0] for q in rows if q['size'] == s and q['path'] == 'PNG per item') for s in sizes}
    for r in rows:
        r['speedup_uint8'] = round(r['uint8'][0] / best_png[r['size']], 1)
        r['uint8_epoch'], r['float_norm_epoch'] = round(r['uint8'][1], 1), round(r['float_norm'][1], 1)
        r['uint8'], r['float_norm'] = round(r['uint8'][0], 1), round(r['float_norm'][0], 1)
    print(f'| size | path | workers | uint8 samples/s | × best PNG | float+Normalize samples/s (CPU) |\n|---|---|---|---|---|---|')
    for r in rows: print(f"| {r['size']} | {r['path']} | {r['workers']} | {r['uint8']} | {r['speedup_uint8']}× | {r['float_norm']} |")
    print('\n| size | pack seconds | samples/s | Kaggle train set (31,072): minutes | GB |\n|---|---|---|---|---|')
    for p in packs: print(f"| {p['size']} | {p['seconds']} | {p['samples_per_s']} | {p['kaggle_minutes']} | {p['gb_kaggle']} |")
    res = dict(rows=rows, pack=packs, n=len(df), bs=bs, date=datetime.date.today().isoformat(),
               machine=f'{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads',
               load_average=[round(x, 1) for x in os.getloadavg()])
    out = Path(__file__).parent/'results'; out.mkdir(exist_ok=True)
    (out/'loader.json').write_text(json.dumps(res, indent=1))
    shutil.rmtree(work)
    return res

if __name__ == '__main__': main(*(int(a) for a in sys.argv[1:2]))
