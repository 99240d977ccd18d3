"""Re-run a notebook and keep the new outputs of some cells: `python tools/regen_outputs.py nbs/X.ipynb CELL_ID...`.

Runs the whole notebook on a copy (as `nbdev-test` does; `--slow` runs the slow cells too), copies the outputs of the
given cells back, and stores their figures small: at the size they are shown (execnb draws them twice as large, for
retina screens) as PNG (`--colors N`: quantised to N colours) or JPEG (`--q`), whichever is smaller. Prints, for every
figure drawn, its size and its image panels in pixels at 100 dpi and its smallest title in points, the figures' budget:
the docs column is 800 px wide, panels should be 250 px or more and titles 9 pt or more."""
import argparse, base64, io, json, os, shutil, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

def _measure(log):
    "Record every figure matplotlib prints: its pixels, its image panels' pixels and its smallest title"
    import matplotlib.backend_bases as bb
    orig = bb.FigureCanvasBase.print_figure
    def print_figure(self, *args, **kw):
        fig = self.figure
        titles = [t for ax in fig.axes for t in (ax.title, ax._left_title, ax._right_title)]
        fonts = [t.get_fontsize() for t in titles if t.get_text()]
        log.append(dict(figure_px=tuple(int(v) for v in fig.get_size_inches() * fig.dpi),
                        panels_px=[tuple(int(v) for v in ax.get_window_extent().size) for ax in fig.axes if ax.images],
                        smallest_title_pt=min(fonts) if fonts else None))
        return orig(self, *args, **kw)
    bb.FigureCanvasBase.print_figure = print_figure

def _small(o, q:int, colors:int):
    "Store the figure of output `o` at its shown size, as the smaller of PNG and JPEG; its size in kB"
    from PIL import Image
    d = o.get('data', {})
    k = next((k for k in ('image/png', 'image/jpeg') if k in d), None)
    if k is None: return None                                          # (a stream output has no metadata to add to)
    md = o.setdefault('metadata', {})
    v = ''.join(d[k]); im = Image.open(io.BytesIO(base64.b64decode(v))); shown = md.get(k, {})
    if shown.get('width') and shown['width'] < im.width:
        im = im.convert('RGB').resize((shown['width'], shown['height']), Image.LANCZOS)
    cands = {}
    b = io.BytesIO(); im.convert('RGB').save(b, 'JPEG', quality=q, optimize=True); cands['image/jpeg'] = b.getvalue()
    b = io.BytesIO(); (im.convert('RGB').quantize(colors=colors) if colors else im).save(b, 'PNG', optimize=True)
    cands['image/png'] = b.getvalue()
    best = min(cands, key=lambda c: len(cands[c]))
    new = base64.b64encode(cands[best]).decode('ascii')
    if len(new) >= len(v) and shown.get('width', im.width) >= im.width: return len(v) // 1000
    del d[k]; d[best] = new
    if k in md: md[best] = md.pop(k)
    return len(new) // 1000

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('nb', help='the notebook'); ap.add_argument('ids', nargs='+', help='ids of the cells to update')
    ap.add_argument('--slow', action='store_true', help='run the slow cells too')
    ap.add_argument('--q', type=int, default=60, help='JPEG quality')
    ap.add_argument('--colors', type=int, default=0, help='quantise PNGs to this many colours (0: no)')
    a = ap.parse_args(argv)
    from nbdev.test import test_nb
    log = []; _measure(log)
    sys.path.insert(0, str(ROOT))
    from hpa_fastai.core import real_hpa_path
    real = real_hpa_path(ROOT)                   # the copy runs elsewhere: tell it where the real files are
    if real is not None: os.environ.setdefault('HPA_REAL_DATA', str(real))
    src = Path(a.nb).resolve(); work = Path(tempfile.mkdtemp())/src.name; shutil.copy(src, work)
    t0 = time.time()
    ok, _ = test_nb(work, skip_flags=['cuda'] + ([] if a.slow else ['slow']), force_flags=['slow'] if a.slow else [],
                    save=True, cell_timeout=7200, basepath=ROOT)
    print(f'ran {src.name} in {time.time() - t0:.0f} s: {"ok" if ok else "FAILED"}')
    for f in log: print('figure', f)
    if not ok: sys.exit(1)
    new = {c['id']: c for c in json.loads(work.read_text())['cells']}
    nb = json.loads(src.read_text())
    for c in nb['cells']:
        if c['id'] not in a.ids: continue
        c['outputs'] = new[c['id']].get('outputs', []); c['execution_count'] = None
        for o in c['outputs']:
            kb = _small(o, a.q, a.colors)
            if kb is not None: print(f'cell {c["id"]}: {next(k for k in o["data"] if k.startswith("image/"))} {kb} kB')
    src.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n')
    print(f'{src.name}: outputs of {len(a.ids)} cells updated, {src.stat().st_size / 1e3:.0f} kB; run nbdev-clean next')

if __name__ == '__main__':
    os.environ.setdefault('MPLBACKEND', 'Agg')
    main()
