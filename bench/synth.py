"Synthetic data generator speed: samples/s on one core at 512², generation and PNG writing. Writes bench/results/synth.json."
import json, os, platform, tempfile, time
os.environ.setdefault('OMP_NUM_THREADS', '1')
import cv2; cv2.setNumThreads(1)
from pathlib import Path
from hpa_fastai.synth import synth_sample, sample_label_sets
from hpa_fastai.data import write_rgby

def main(n=60, size=512):
    sets = sample_label_sets(n, seed=1)
    synth_sample(sets[0], size, 0)                      # warm up
    t = time.perf_counter(); xs = [synth_sample(s, size, i) for i, s in enumerate(sets)]; gen = (time.perf_counter() - t) / n
    d = Path(tempfile.mkdtemp()); t = time.perf_counter()
    for i, x in enumerate(xs): write_rgby(d, f's{i}', x)
    wr = (time.perf_counter() - t) / n
    kb = sum(f.stat().st_size for f in d.iterdir()) / n / 1024
    res = dict(size=size, n=n, gen_ms=round(gen*1e3, 1), write_ms=round(wr*1e3, 1), samples_per_s=round(1/(gen+wr), 1),
               kb_per_sample=round(kb), machine=f'{platform.processor() or platform.machine()}, 1 thread')
    print(f"| size | generate ms | write PNGs ms | samples/s (both) | kB/sample |\n|---|---|---|---|---|\n"
          f"| {size} | {res['gen_ms']} | {res['write_ms']} | {res['samples_per_s']} | {res['kb_per_sample']} |")
    out = Path(__file__).parent/'results'; out.mkdir(exist_ok=True)
    (out/'synth.json').write_text(json.dumps(res, indent=1))
    return res

if __name__ == '__main__': main()
