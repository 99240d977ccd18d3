"""Images/s of training and inference steps for the image-only and fused ResNet34 at 128/224/512 px.
CPU: fp32. GPU (when CUDA is present): fp32, AMP (bf16/fp16 autocast), AMP + channels_last.
Synthetic tensors (data loading excluded: this measures the model). Prints a table; writes bench/results/train_step.json."""
import json, platform, sys, time, torch, torch.nn as nn
from pathlib import Path
from fastai.vision.all import resnet34
from hpa_fastai.learner import HpaModel, hpa_body

def step_rate(model, bs, size, n_feat, train, device, amp=False, channels_last=False, iters=3):
    x = torch.randn(bs, 4, size, size, device=device); f = torch.rand(bs, n_feat, device=device) if n_feat else None
    y = (torch.rand(bs, 28, device=device) > 0.9).float()
    if channels_last: x = x.contiguous(memory_format=torch.channels_last); model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), 1e-4); lossf = nn.BCEWithLogitsLoss()
    model.train(train)
    dt = torch.bfloat16 if device == 'cuda' and torch.cuda.is_bf16_supported() else torch.float16
    def one():
        with torch.autocast(device, dtype=dt, enabled=amp), torch.set_grad_enabled(train):
            out = model(x, f) if n_feat else model(x)
            if train:
                loss = lossf(out.float(), y); opt.zero_grad(); loss.backward(); opt.step()
    one()
    if device == 'cuda': torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(iters): one()
    if device == 'cuda': torch.cuda.synchronize()
    return bs * iters / (time.perf_counter() - t)

def main():
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    gpu = torch.cuda.get_device_name() if device == 'cuda' else None
    modes = [('fp32', False, False)] + ([('amp', True, False), ('amp+channels_last', True, True)] if gpu else [])
    sizes = {128: 16, 224: 8, 512: 2} if device == 'cpu' else {128: 256, 224: 128, 512: 32}
    iters = 3 if device == 'cpu' else 20
    rows = []
    for size, bs in sizes.items():
        for n_feat, kind in [(0, 'image-only'), (10, 'fused')]:
            for mode, amp, cl in modes:
                model = HpaModel(hpa_body(resnet34, pretrained=False), n_features=n_feat).to(device)
                tr = step_rate(model, bs, size, n_feat, True, device, amp, cl, iters)
                inf = step_rate(model, bs, size, n_feat, False, device, amp, cl, iters)
                rows.append(dict(size=size, model=kind, mode=mode, bs=bs, train_img_s=round(tr, 1), infer_img_s=round(inf, 1)))
                print(rows[-1], file=sys.stderr)
    machine = gpu or f'CPU {platform.machine()}, {torch.get_num_threads()} threads'
    print(f'Machine: {machine}; torch {torch.__version__}\n')
    print('| size | model | precision | batch | train img/s | inference img/s |\n|---|---|---|---|---|---|')
    for r in rows: print(f"| {r['size']} | {r['model']} | {r['mode']} | {r['bs']} | {r['train_img_s']} | {r['infer_img_s']} |")
    out = Path(__file__).parent/'results'; out.mkdir(exist_ok=True)
    (out/f"train_step_{'gpu' if gpu else 'cpu'}.json").write_text(json.dumps(dict(machine=machine, rows=rows), indent=1))

if __name__ == '__main__': main()
