"""End-to-end training throughput on the fast path, against the model alone, in one run (made for a GPU; dry-runs on a CPU).

Both rates are training samples per second of training time, same batch size and precision:
- model only: the fused ResNet34 (+ ten features) on random tensors already on the device, eager and `torch.compile`d;
- end to end: `fit_one_cycle` on a packed store (`hpa_dataloaders(store=...)`, features on), eager and compiled, timed per
  epoch from `before_train` to `after_train`; the first epoch (compile warm-up) and validation are reported separately.
Targets on one H100 at 512²: end to end ≥ 2,000 samples/s (needs --compile) and ≥ 90 % of the model-only rate.
Run: python bench/gpu_train.py [--size 512 --bs 128 --n 2048 --epochs 4]. Dry run on a CPU: python bench/gpu_train.py --dry-run
Writes bench/results/gpu_train_{gpu|cpu}.json and prints a Markdown table."""
import argparse, json, platform, sys, tempfile, time, warnings, torch, torch.nn as nn
from pathlib import Path
from fastai.vision.all import resnet34, resnet18, Callback, defaults
from hpa_fastai.learner import HpaModel, hpa_body, hpa_learner
from hpa_fastai.synth import make_synthetic_hpa
from hpa_fastai.store import pack_rgby, store_path
from hpa_fastai.dataloaders import hpa_dataloaders
from hpa_fastai.train import TrainConfig, use_gpu_speedups

def sync(dev):
    if dev == 'cuda': torch.cuda.synchronize()

def model_only(arch, size, bs, iters, dev, compile_):
    "Training samples/s of the fused model alone: bf16 autocast (CUDA), channels-last, AdamW; (rate, warm-up seconds)"
    m = HpaModel(hpa_body(arch, pretrained=False), n_features=10).to(dev)
    x = torch.randn(bs, 4, size, size, device=dev); f = torch.rand(bs, 10, device=dev); y = (torch.rand(bs, 28, device=dev) > 0.9).float()
    if dev == 'cuda': m, x = m.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    if compile_: m.compile()
    opt, lf = torch.optim.AdamW(m.parameters(), 1e-4), nn.BCEWithLogitsLoss()
    dt = torch.bfloat16 if dev == 'cuda' and torch.cuda.is_bf16_supported() else torch.float16
    def step():
        with torch.autocast(dev, dtype=dt, enabled=dev == 'cuda'):
            loss = lf(m(x, f).float(), y)
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
    t = time.perf_counter(); step(); step(); sync(dev); warm = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(iters): step()
    sync(dev)
    return bs * iters / (time.perf_counter() - t), warm

class EpochTimes(Callback):
    "Seconds of each epoch's training and validation phases"
    order = 200
    def before_fit(self): self.train_s, self.valid_s = [], []
    def before_train(self): sync(self.dls.device.type); self.t = time.perf_counter()
    def after_train(self): sync(self.dls.device.type); self.train_s.append(time.perf_counter() - self.t)
    def before_validate(self): self.t = time.perf_counter()
    def after_validate(self): sync(self.dls.device.type); self.valid_s.append(time.perf_counter() - self.t)

def end_to_end(data, arch, size, bs, epochs, dev, compile_, num_workers):
    "fit_one_cycle on the packed store, features on: (training samples/s after the first epoch, first epoch s, validation s per epoch)"
    dls = hpa_dataloaders(data, features=True, size=size, bs=bs, store=True, num_workers=num_workers, feature_workers=defaults.cpus)
    learn = hpa_learner(dls, arch=arch, pretrained=False)
    use_gpu_speedups(learn, TrainConfig(compile=compile_))
    times = EpochTimes()
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(epochs, 1e-3, cbs=times)
    n = len(dls.train) * bs                                   # samples trained per epoch (drop_last)
    later = times.train_s[1:] or times.train_s
    return n * len(later) / sum(later), times.train_s[0], sum(times.valid_s) / len(times.valid_s), len(dls.train_ds)

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--size', type=int, default=512); p.add_argument('--bs', type=int, default=128)
    p.add_argument('--n', type=int, default=2048, help='synthetic training samples'); p.add_argument('--epochs', type=int, default=4)
    p.add_argument('--iters', type=int, default=30); p.add_argument('--num-workers', type=int, default=0)
    p.add_argument('--data', default=None, help='a Kaggle-layout folder to use instead of synthetic data')
    p.add_argument('--dry-run', action='store_true', help='tiny sizes, resnet18, to check the script on a CPU')
    a = p.parse_args()
    dev = 'cuda' if torch.cuda.is_available() else 'cpu'
    arch = resnet34
    if a.dry_run: a.size, a.bs, a.n, a.epochs, a.iters, arch = 64, 8, 48, 2, 2, resnet18
    t0 = time.perf_counter()
    data = Path(a.data) if a.data else make_synthetic_hpa(Path(tempfile.mkdtemp())/'syn', n_train=a.n, n_test=0, size=a.size, seed=0,
                                                            n_workers=defaults.cpus, progress=False)
    gen_s = time.perf_counter() - t0; t0 = time.perf_counter()
    pack_rgby(data/'train', store_path(data/'train', a.size), size=a.size, n_workers=defaults.cpus)
    pack_s = time.perf_counter() - t0
    rows = []
    for comp in (False, True):
        if comp and dev == 'cpu' and not a.dry_run: continue
        mo, mo_warm = model_only(arch, a.size, a.bs, a.iters, dev, comp)
        e2e, first, val, n = end_to_end(data, arch, a.size, a.bs, a.epochs, dev, comp, a.num_workers)
        rows.append(dict(mode='compiled' if comp else 'eager', model_only=round(mo, 1), end_to_end=round(e2e, 1),
                         ratio=round(e2e / mo, 3), model_warmup_s=round(mo_warm, 1), first_epoch_s=round(first, 1), valid_s_per_epoch=round(val, 1)))
        print(rows[-1], file=sys.stderr, flush=True)
    machine = torch.cuda.get_device_name() if dev == 'cuda' else f'CPU {platform.machine()}, {torch.get_num_threads()} threads'
    prec = 'bf16' if dev == 'cuda' and torch.cuda.is_bf16_supported() else 'fp16' if dev == 'cuda' else 'fp32'
    print(f'Machine: {machine}; torch {torch.__version__}; {arch.__name__}, {a.size}², bs {a.bs}, {prec}, channels-last {dev == "cuda"}; '
          f'{n} samples ({len(rows) and a.epochs} epochs); data {gen_s:.0f} s, pack {pack_s:.0f} s\n')
    print('| mode | model only (samples/s) | end to end (samples/s) | ratio | model warm-up s | first epoch s | validation s/epoch |')
    print('|---|---|---|---|---|---|---|')
    for r in rows: print(f"| {r['mode']} | {r['model_only']} | {r['end_to_end']} | {r['ratio']} | {r['model_warmup_s']} | {r['first_epoch_s']} | {r['valid_s_per_epoch']} |")
    out = Path(__file__).parent/'results'; out.mkdir(exist_ok=True)
    res = dict(machine=machine, torch=torch.__version__, arch=arch.__name__, size=a.size, bs=a.bs, precision=prec, samples=n,
               epochs=a.epochs, dry_run=a.dry_run, generate_s=round(gen_s, 1), pack_s=round(pack_s, 1), rows=rows)
    (out/f"gpu_train_{'gpu' if dev == 'cuda' else 'cpu'}{'_dry' if a.dry_run else ''}.json").write_text(json.dumps(res, indent=1))

if __name__ == '__main__':
    warnings.filterwarnings('ignore')
    main()
