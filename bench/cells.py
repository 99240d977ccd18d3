"""Per-cell ranking on the synthetic per-cell truth. Methods: the cell classifiers (`inherit`: crops with their image's
labels; `mil_attention`); an image model read inside each cell — its head on the cell's pooled map (`region`) or its
class activation maps averaged in the mask (`cam`); `image`: every cell its image's probabilities; fusions with the
image's probability chosen out of fold (`fused` = region × image, `cam_fused`, `inherit_fused`, `inherit_region`); the
edge (`+border`) and Negative (`+negative`) rules. Cell mAP with a bootstrap 95 % CI over images and of the difference
from `inherit`, cell and image macro-F1 (an image's score: the max over its cells). Prints a markdown table per seed
and writes bench/results/cells.json.

    python bench/cells.py [--n 800] [--seeds 0] [--img-size 128] [--epochs 8] [--cell-epochs 6]

With no arguments it makes (once, cached under /tmp) 800 synthetic 256-px fields with per-cell truth and runs seed 0;
about 12 minutes on 2 CPU cores."""
import argparse, json, os, platform, sys, time, warnings
from pathlib import Path
import numpy as np, pandas as pd, torch
from fastai.vision.all import defaults, set_seed
from hpa_fastai.core import encode_targets
from hpa_fastai.files import write_json
from hpa_fastai.synth import make_synthetic_hpa
from hpa_fastai.dataloaders import labelled_split, hpa_dataloaders
from hpa_fastai.learner import hpa_learner
from hpa_fastai.cells.all import *

warnings.filterwarnings('ignore', category=FutureWarning)
ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
ap.add_argument('--data', default=None, help='a synthetic set with train_cells.csv (default: made under /tmp)')
ap.add_argument('--n', type=int, default=800, help='fields of the synthetic set')
ap.add_argument('--field', type=int, default=256, help='side of the synthetic fields')
ap.add_argument('--seg-size', type=int, default=256, help='side the fields are segmented at')
ap.add_argument('--crop', type=int, default=32, help='side of the cell crops')
ap.add_argument('--img-size', type=int, default=128, help='input side of the image model')
ap.add_argument('--epochs', type=int, default=8, help='epochs of the image model')
ap.add_argument('--arch', default='small_cnn', help='body of the image model (e.g. resnet34)')
ap.add_argument('--pretrained', action='store_true', help='start the image model from ImageNet weights')
ap.add_argument('--cell-epochs', type=int, default=6, help='epochs of the cell classifiers')
ap.add_argument('--seeds', default='0', help='comma-separated seeds of the weights (the split is fixed)')
ap.add_argument('--boot', type=int, default=200, help='bootstrap resamples of the validation images')
ap.add_argument('--out', default=str(Path(__file__).parent/'results'/'cells.json'))
ap.add_argument('--tile-consistency', action='store_true', help='train the image model with TileConsistency (Puzzle-CAM)')
ap.add_argument('--dump', default=None, help='also save every score table here (.npz) for analysis')
a = ap.parse_args()
T0 = time.perf_counter()
def stamp(msg): print(f'[{time.perf_counter() - T0:6.0f} s] {msg}', flush=True)

path = Path(a.data) if a.data else Path('/tmp/hpa-bench')/f'cells-syn-{a.n}-{a.field}'
if not (path/'train_cells.csv').exists():
    if a.data: sys.exit(f'{path}: no train_cells.csv (per-cell truth); make the set with make_synthetic_hpa')
    make_synthetic_hpa(path, n_train=a.n, n_test=0, size=a.field, seed=0, freq_power=0.5, progress=False, n_workers=defaults.cpus)
stamp(f'data: {path}')
df, img_dir, tri, vai = labelled_split(path, valid_pct=0.25, seed=42)
vids = [df.Id.iloc[i] for i in vai]
st = open_cells(pack_cells(img_dir, Path('/tmp/hpa-bench')/f'cells-store-{a.n}-{a.seg_size}-{a.crop}', size=a.crop,
                           seg_size=a.seg_size, ids=list(df.Id), n_workers=defaults.cpus))
truth = read_cell_truth(path/'train_cells.csv')
matched = match_cells(st, truth[truth.Id.isin(vids)]); matched = matched[matched.n_true > 0].reset_index(drop=True)
T = encode_targets(matched.Target).astype(np.float32)
img_of = matched.cell_id.str.rsplit('_', n=1).str[0].to_numpy()
stamp(f'cell store: {len(st)} cells of {len(st.ids)} fields; {len(matched)} validation cells matched to a true cell')
img_t = encode_targets(df.Target.iloc[vai])

def rows_for(cell_ids, table_ids) -> np.ndarray:
    "Positions in `table_ids` of `cell_ids` (every one must be there)"
    pos = {c: i for i, c in enumerate(table_ids)}
    missing = [c for c in cell_ids if c not in pos]
    if missing: sys.exit(f'{len(missing)} matched cells are missing from a score table, e.g. {missing[:3]}')
    return np.array([pos[c] for c in cell_ids])

def image_probs(scores) -> np.ndarray:
    "Each validation image's probabilities: the max over its matched cells (0 for an image without one)"
    out = np.zeros((len(vids), scores.shape[1]))
    for j, i in enumerate(vids):
        m = img_of == i
        if m.any(): out[j] = scores[m].max(0)
    return out

def boot_ci(scores:dict, ref:str) -> dict:
    "Per method: 95 % percentile CI of cell mAP and of its difference from `ref`, resampling validation images"
    rng = np.random.default_rng(0); rows = {i: np.flatnonzero(img_of == i) for i in vids}
    draws = {k: [] for k in scores}; diffs = {k: [] for k in scores}
    for _ in range(a.boot):
        idx = np.concatenate([rows[i] for i in rng.choice(vids, len(vids))])
        r = cell_map(scores[ref][idx], T[idx])
        for k, s in scores.items():
            v = cell_map(s[idx], T[idx]); draws[k].append(v); diffs[k].append(v - r)
    q = lambda v: [round(float(x), 4) for x in np.nanpercentile(v, [2.5, 97.5])]
    return {k: dict(ci=q(draws[k]), diff_ci=q(diffs[k])) for k in scores}

runs = {}
for seed in [int(s) for s in a.seeds.split(',')]:
    scores, times = {}, {}
    # 1. the cell classifiers: inherit (each crop its image's labels) and MIL attention (bags pooled to the image)
    for name, bags in [('inherit', False), ('mil_attention', True)]:
        set_seed(seed); t0 = time.perf_counter()
        dls = cell_dataloaders(st, df, tri, vai, bags=bags, device='cpu', seed=seed)
        learn = cell_learner(dls, arch='small_cnn', pool='attention')
        with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(a.cell_epochs, 3e-3)
        cells, cp, _ = cell_predictions(learn, st, vids)
        scores[name] = cp[rows_for(matched.cell_id, cells.cell_id)].astype(np.float64)
        times[name] = round(time.perf_counter() - t0, 1); stamp(f'seed {seed} {name}: {times[name]} s')
    # 2. the image model (image-only, the scratch recipe's body) and its maps inside each cell
    set_seed(seed); t0 = time.perf_counter()
    wd = hpa_dataloaders(path, size=a.img_size, bs=16, valid_pct=0.25, seed=42, features=False, num_workers=0)
    if [Path(s).name for s in wd.valid_ds.items] != vids: sys.exit("the image model's validation images differ from the cells'")
    wl = hpa_learner(wd, arch=a.arch, pretrained=a.pretrained)
    with wl.no_bar(), wl.no_logging(): wl.fit_one_cycle(a.epochs, 3e-3, cbs=[TileConsistency()] if a.tile_consistency else None)
    times['image model'] = round(time.perf_counter() - t0, 1); stamp(f'seed {seed} image model: {times["image model"]} s')
    t0 = time.perf_counter()
    tab, region, ip = cam_cell_scores(wl, img_dir, vids, seg_size=a.seg_size, how='region', dense=2)
    r = rows_for(matched.cell_id, tab.cell_id); region = region[r].astype(np.float64)
    negw = negative_weight(tab, 0.5)[r][:, None]         # each field's median green over all its cells, not the matched ones
    tab = tab.iloc[r].reset_index(drop=True)
    tc, cam, _ = cam_cell_scores(wl, img_dir, vids, seg_size=a.seg_size, how='cam', dense=2)
    cam = cam[rows_for(matched.cell_id, tc.cell_id)].astype(np.float64)
    image = ip[[vids.index(i) for i in img_of]].astype(np.float64)
    times['maps'] = round(time.perf_counter() - t0, 1); stamp(f'seed {seed} maps in {len(tab)} cells: {times["maps"]} s')
    # 3. the image's own probabilities, the maps, their fusions (chosen out of fold) and the rules
    scores['image'] = image; scores['cam'] = cam; scores['region'] = region
    scores['cam_fused'], _ = crossfit_fusion(cam, image, T, img_of, seed=seed)
    scores['fused'], fchoice = crossfit_fusion(region, image, T, img_of, seed=seed)
    scores['inherit_region'], rchoice = crossfit_fusion(scores['inherit'], region, T, img_of, seed=seed)
    scores['inherit_fused'], ichoice = crossfit_fusion(scores['inherit'], image, T, img_of, seed=seed)
    scores['image+negative'] = image * negw
    scores['fused+negative'] = scores['fused'] * negw
    scores['region+border'] = apply_cell_rules(region, tab, border_weight=0.5)
    scores['inherit+negative'] = scores['inherit'] * negw
    scores['inherit_fused+negative'] = scores['inherit_fused'] * negw
    if a.dump: np.savez_compressed(f'{a.dump}-{seed}.npz', T=T, img_of=img_of, border=tab.border.to_numpy(),
                                   green=tab.green.to_numpy(), ip=ip, **{k.replace('+', '_P_'): v for k, v in scores.items()})
    ci = boot_ci(scores, 'inherit')
    res = {}
    for k, s in scores.items():
        cs = cell_scores(s, T)
        im = cell_scores(ip if k == 'image' else image_probs(s), img_t)
        res[k] = dict(cell_map=round(cell_map(s, T), 4), cell_map_ci95=ci[k]['ci'], vs_inherit_ci95=ci[k]['diff_ci'],
                      cell_f1=round(cs['macro_f1'], 4), image_f1=round(im['macro_f1'], 4))
    runs[seed] = dict(methods=res, seconds=times, fusion_choices=dict(fused=fchoice, inherit_fused=ichoice, inherit_region=rchoice))
    print(f'\nseed {seed}: {len(matched)} cells of {len(vids)} validation fields; CI: bootstrap over fields ({a.boot})')
    print('| method | cell mAP | 95 % CI | − inherit (95 % CI) | cell macro-F1 | image macro-F1 |\n|---|---|---|---|---|---|')
    for k, v in sorted(res.items(), key=lambda kv: -kv[1]['cell_map']):
        lo, hi = v['vs_inherit_ci95']; clear = ' ✓' if lo > 0 else ''
        print(f"| {k} | {v['cell_map']:.3f} | {v['cell_map_ci95'][0]:.3f}–{v['cell_map_ci95'][1]:.3f} | "
              f"{lo:+.3f}…{hi:+.3f}{clear} | {v['cell_f1']:.3f} | {v['image_f1']:.3f} |")
    print(f'fusion chosen per fold: fused {fchoice}; inherit_fused {ichoice}; inherit_region {rchoice}', flush=True)

first = runs[min(runs)]
spread = {k: [runs[s]['methods'][k]['cell_map'] for s in runs] for k in first['methods']}
out = dict(machine=f'{platform.node()} {os.cpu_count()} CPU cores', torch=torch.__version__, date=time.strftime('%Y-%m-%d'),
           args=vars(a), data=dict(fields=a.n, n_train=len(tri), n_valid=len(vai), store_cells=len(st),
                                   matched_valid_cells=len(matched)),
           methods=first['methods'], seeds={str(s): r for s, r in runs.items()},
           cell_map_by_seed=spread, seconds=round(time.perf_counter() - T0, 1))
write_json(Path(a.out), out)
stamp(f'wrote {a.out}')
