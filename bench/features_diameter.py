"""Features with the nucleus diameter estimated per image (issue 31, item 8): ms/sample on one core, before and after a
change, in one run so that the ratio is comparable on a shared machine.

`python bench/features_diameter.py [--before REV] [--rounds 3]` exports the `hpa_fastai` package of git revision REV
(default: HEAD) to a temporary folder and measures it and the working tree alternately in fresh one-thread processes
(OMP_NUM_THREADS=1, cv2 and torch one thread), `rounds` times each (the fields' checks in the first); a figure is the median over rounds of the mean over
samples of the process CPU time (wall time on a machine shared by other jobs measures them too). The samples: the real
4-channel field in ../shared/hpa/sample_4ch and 4-channel fields composed from the real single-channel PNGs in
../shared/hpa/single_channel (as `bench/features.py`). Also recorded per field, which must not change: the estimated
diameter, the nucleus count the features see (`feature_masks`), the count of `segment_nuclei` on the blue channel, the
ten features. `features_own_d` is the features given each field's own estimate: the cost at the field's
scale without the estimate. Writes bench/results/features_diameter.json."""
import json, os, subprocess, sys, tempfile, time, shutil
from pathlib import Path

HERE = Path(__file__).parent; ROOT = HERE.parent

def worker(folder, ids, reps, fields=True):
    os.environ['OMP_NUM_THREADS'] = '1'
    import numpy as np, cv2, torch
    cv2.setNumThreads(1); torch.set_num_threads(1)
    import hpa_fastai
    from hpa_fastai.data import open_rgby
    from hpa_fastai.features import extract_features, feature_masks
    from hpa_fastai.segment import estimate_diameter, segment_nuclei
    xs = [open_rgby(folder, i) for i in ids]
    def per_sample(f):
        f(0); t = time.process_time()
        for _ in range(reps):
            for k in range(len(ids)): f(k)
        return (time.process_time() - t) / (reps * len(ids)) * 1000
    ds = [estimate_diameter(np.ascontiguousarray(x[..., 2])) for x in xs]
    ms = dict(decode=per_sample(lambda k: open_rgby(folder, ids[k])),
              estimate=per_sample(lambda k: estimate_diameter(np.ascontiguousarray(xs[k][..., 2]))),
              features_own_d=per_sample(lambda k: extract_features(xs[k], diameter=ds[k])),   # its estimate, given
              features_d50=per_sample(lambda k: extract_features(xs[k], diameter=50)),
              features_estimated=per_sample(lambda k: extract_features(xs[k])),
              decode_and_features=per_sample(lambda k: extract_features(open_rgby(folder, ids[k]))))
    fields = {} if not fields else {i: dict(diameter=estimate_diameter(np.ascontiguousarray(x[..., 2])),
                      nuclei_features=int(feature_masks(x)[0].max()),
                      nuclei_segment=int(segment_nuclei(np.ascontiguousarray(x[..., 2])).max()),
                      features=extract_features(x).tolist()) for i, x in zip(ids, xs)}
    return dict(package=str(Path(hpa_fastai.__file__).parent), ms=ms, fields=fields)

def main(before='HEAD', rounds=5, n=48, reps=1):
    sys.path.insert(0, str(HERE))
    from features import compose_real
    from hpa_fastai.core import real_hpa_path
    real = real_hpa_path(HERE)
    if real is None: sys.exit('no ../shared/hpa: this benchmark needs the real fields')
    work = Path(tempfile.mkdtemp()); (work/'fields').mkdir()
    ids = compose_real(real, work/'fields', n)
    for f in (real/'sample_4ch').glob('*.png'): shutil.copy(f, work/'fields'/f.name)
    ids += sorted({f.name.rsplit('_', 1)[0] for f in (real/'sample_4ch').glob('*.png')})
    old = work/'before'; old.mkdir()
    subprocess.run(f'git -C {ROOT} archive {before} hpa_fastai | tar -x -C {old}', shell=True, check=True)
    rev = subprocess.run(['git', '-C', str(ROOT), 'rev-parse', '--short', before], capture_output=True, text=True).stdout.strip()
    job = lambda r: json.dumps(dict(folder=str(work/'fields'), ids=ids, reps=reps, fields=r == 0))
    runs = {'before': [], 'after': []}
    for r in range(rounds):
        for name, path in (('before', old), ('after', ROOT)):
            env = {**os.environ, 'PYTHONPATH': str(path), 'OMP_NUM_THREADS': '1', 'PYTHONWARNINGS': 'ignore'}
            out = subprocess.run([sys.executable, __file__, '--worker', job(r)], env=env, capture_output=True, text=True)
            if out.returncode: sys.exit(out.stderr)
            runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(name, r, {k: round(v, 1) for k, v in runs[name][-1]['ms'].items()}, flush=True)
    import numpy as np
    med = {k: {m: round(float(np.median([x['ms'][m] for x in v])), 2) for m in v[0]['ms']} for k, v in runs.items()}
    fb, fa = runs['before'][0]['fields'], runs['after'][0]['fields']
    same = {m: all(fb[i][m] == fa[i][m] for i in ids) for m in ('diameter', 'nuclei_features', 'nuclei_segment')}
    same['features'] = all(np.allclose(fb[i]['features'], fa[i]['features'], rtol=1e-6, atol=1e-6) for i in ids)
    res = dict(before=rev, rounds=rounds, samples=len(ids), ms=med, unchanged=same,
               nuclei_features=[fa[i]['nuclei_features'] for i in ids], nuclei_segment=[fa[i]['nuclei_segment'] for i in ids],
               diameters=[round(fa[i]['diameter'], 2) for i in ids],
               real_sample=dict(zip(('id', 'diameter', 'nuclei_features', 'nuclei_segment'),
                                    (ids[-1], round(fa[ids[-1]]['diameter'], 2), fa[ids[-1]]['nuclei_features'], fa[ids[-1]]['nuclei_segment']))))
    print('| ms/sample (CPU time, 1 thread) | before | after |\n|---|---|---|')
    for m in med['before']: print(f"| {m} | {med['before'][m]} | {med['after'][m]} |")
    print('unchanged:', same)
    (HERE/'results').mkdir(exist_ok=True)
    (HERE/'results'/'features_diameter.json').write_text(json.dumps(res, indent=1))
    shutil.rmtree(work)
    return res

if __name__ == '__main__':
    if sys.argv[1:2] == ['--worker']:
        j = json.loads(sys.argv[2]); print(json.dumps(worker(j['folder'], j['ids'], j['reps'], j['fields'])))
    else:
        import argparse
        ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
        ap.add_argument('--before', default='HEAD'); ap.add_argument('--rounds', type=int, default=3)
        ap.add_argument('--n', type=int, default=48)
        a = ap.parse_args(); main(a.before, a.rounds, a.n)
