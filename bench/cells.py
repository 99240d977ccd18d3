"""Per-cell benchmark: segmentation + cropping throughput, and cell-level / image-level scores of the inherit-labels
baseline vs multiple-instance pooling on a small synthetic set with per-cell truth (`train_cells.csv`), beside the
whole-image model on the same split. Prints a markdown table, writes bench/results/cells.json.

    python bench/cells.py DATA [--n 160] [--size 32] [--seg-size 256] [--epochs 6]

DATA: a synthetic set written by `make_synthetic_hpa` that has `train_cells.csv` (per-cell truth)."""
import argparse, json, platform, time, sys, os
from pathlib import Path
import numpy as np, pandas as pd, torch
from fastai.vision.all import defaults
from hpa_fastai.core import read_labels, encode_targets
from hpa_fastai.dataloaders import labelled_split
from hpa_fastai.data import open_rgby
from hpa_fastai.files import write_json
from hpa_fastai.cells.all import *

ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
ap.add_argument('data'); ap.add_argument('--n', type=int, default=160); ap.add_argument('--size', type=int, default=32)
ap.add_argument('--seg-size', type=int, default=256); ap.add_argument('--epochs', type=int, default=6)
ap.add_argument('--seed', type=int, default=0); ap.add_argument('--whole-size', type=int, default=128)
ap.add_argument('--pools', default='attention,noisy_or')
a = ap.parse_args()
path = Path(a.data)
if not (path/'train_cells.csv').exists(): sys.exit(f'{path}: no train_cells.csv (per-cell truth); make the set with a generator that writes it')
torch.manual_seed(a.seed); np.random.seed(a.seed)
df, img_dir, tri, vai = labelled_split(path, valid_pct=0.25, seed=42, n=a.n)
ids = list(df.Id)

# 1. throughput of decode + segmentation + cropping, one process
t0 = time.perf_counter(); n_cells = 0
for i in ids[:40]:
    x, lab = field_cells(open_rgby(img_dir, i), a.seg_size); n_cells += len(cell_crops(x, lab, a.size))
dt = time.perf_counter() - t0
speed = dict(images=40, cells=n_cells, seconds=round(dt, 2), images_per_s=round(40 / dt, 1), crops_per_s=round(n_cells / dt, 1))
t0 = time.perf_counter()
sd = pack_cells(img_dir, Path('/tmp')/f'bench-cells-{a.seg_size}-{a.size}-{a.n}', size=a.size, seg_size=a.seg_size, ids=ids, n_workers=defaults.cpus, repack=True)
speed['pack_seconds'] = round(time.perf_counter() - t0, 2)
st = open_cells(sd); speed['pack_cells'] = len(st); speed['pack_crops_per_s'] = round(len(st) / speed['pack_seconds'], 1)

truth = read_cell_truth(path/'train_cells.csv')
mc = match_cells(st, truth[truth.Id.isin([ids[i] for i in vai])])
matched = mc[mc.n_true > 0]
match_info = dict(valid_cells=len(mc), matched=len(matched), merged=int((mc.n_true > 1).sum()),
                  true_cells=int(truth.Id.isin([ids[i] for i in vai]).sum()))

def evaluate(learn):
    cells, cp, ip = cell_predictions(learn, st, [ids[i] for i in vai])
    pos = {c: j for j, c in enumerate(cells.cell_id)}
    rows = [pos[c] for c in matched.cell_id]
    cs = cell_scores(cp[rows], encode_targets(matched.Target))
    im = cell_scores(ip, encode_targets(df.Target.iloc[vai]))
    return dict(cell_f1=cs['macro_f1'], cell_mAP=cs['mAP'], image_f1=im['macro_f1'], image_mAP=im['mAP'])

res = {}
for name, bags, pool in [('inherit', False, None)] + [(f'MIL {p}', True, p) for p in a.pools.split(',')]:
    torch.manual_seed(a.seed)
    dls = cell_dataloaders(st, df, tri, vai, bags=bags, device='cpu', seed=a.seed)
    learn = cell_learner(dls, pool=pool or 'attention')
    t0 = time.perf_counter()
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(a.epochs, 3e-3)
    r = evaluate(learn); r['train_s'] = round(time.perf_counter() - t0, 1); res[name] = r
    print(name, r, flush=True)

# whole-image model on the same split (image-only, ResNet18 from random weights, as the cell models)
from hpa_fastai.dataloaders import hpa_dataloaders
from hpa_fastai.learner import hpa_learner
torch.manual_seed(a.seed)
wd = hpa_dataloaders(path, size=a.whole_size, bs=16, valid_pct=0.25, seed=42, n=a.n, store=False, num_workers=0)
if [Path(s).name for s in wd.valid_ds.items] != [ids[i] for i in vai]: sys.exit('whole-image model: its validation images differ from the cell models\'')
wl = hpa_learner(wd, arch='resnet18', pretrained=False)
t0 = time.perf_counter()
with wl.no_bar(), wl.no_logging(): wl.fit_one_cycle(a.epochs, 3e-3)
with wl.no_bar(): p, t = wl.get_preds()
w = cell_scores(p.numpy(), t.numpy()); res['whole image'] = dict(cell_f1=None, cell_mAP=None, image_f1=w['macro_f1'], image_mAP=w['mAP'],
                                                                 train_s=round(time.perf_counter() - t0, 1))
out = dict(machine=f'{platform.node()} {os.cpu_count()} CPU cores', torch=torch.__version__, date=time.strftime('%Y-%m-%d'),
           args=vars(a), n_train=len(tri), n_valid=len(vai), speed=speed, matching=match_info, scores=res)
write_json(Path(__file__).parent/'results'/'cells.json', out)
print(f"\nsegmentation + cropping: {speed['crops_per_s']} crops/s ({speed['images_per_s']} images/s at {a.seg_size}px, one process); "
      f"pack with {defaults.cpus} workers: {speed['pack_crops_per_s']} crops/s")
print(f"valid cells matched to a true cell: {match_info['matched']} of {match_info['valid_cells']} ({match_info['merged']} holding 2+ centres)\n")
print('| model | cell macro-F1 | cell mAP | image macro-F1 | image mAP | train s |\n|---|---|---|---|---|---|')
f = lambda v: '–' if v is None else f'{v:.3f}'
for k, r in res.items(): print(f"| {k} | {f(r['cell_f1'])} | {f(r['cell_mAP'])} | {f(r['image_f1'])} | {f(r['image_mAP'])} | {r['train_s']} |")
