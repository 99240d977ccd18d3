"""Render the processed docs pages to HTML and screenshot them: `python tools/render_docs.py [OUT] [--pages core data]`.

Runs `nbdev-proc-nbs` (unless `--reuse` and `_proc/` exists), converts each processed notebook to HTML with nbconvert
(cells Quarto would hide are hidden, a column as wide as Quarto's text column), lists the dead doc links
(`tools/doclinks.py`) and each page's figures at that width, and screenshots every page with headless Chromium
(playwright) into OUT (default `_render/`). Without playwright or a Chromium the HTML is still written, and one line
says why the screenshots were skipped."""
import argparse, json, os, re, shutil, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from doclinks import dead_links, page_name

PAGE_WIDTH = 800        # px: Quarto's default text column (`$grid-body-width`), where the figures are shown
CSS = f"""<style>
body {{ max-width: {PAGE_WIDTH}px; margin: 24px auto; font-family: system-ui, sans-serif; font-size: 15px; }}
img {{ max-width: 100%; height: auto; }}
pre, code {{ font-size: 13px; }} pre {{ background: #f6f8fa; padding: 6px; overflow-x: auto; white-space: pre-wrap; }}
table {{ border-collapse: collapse; font-size: 13px; }} td, th {{ border: 1px solid #ddd; padding: 2px 6px; }}
.prompt, .jp-InputPrompt, .jp-OutputPrompt {{ display: none; }}
</style>"""

def directives(src:str) -> dict:
    "The `#| key: value` lines at the top of a cell"
    res = {}
    for l in src.split('\n'):
        m = re.match(r'#\|\s*([\w-]+):?\s*(.*)', l)
        if not m: break
        res[m.group(1)] = m.group(2).strip()
    return res

def quarto_like(nb:dict) -> dict:
    "What Quarto shows of a processed notebook: no hidden inputs or cells, no directive lines, no `{...}` attributes"
    cells = []
    for c in nb['cells']:
        src = ''.join(c['source']); d = directives(src)
        if d.get('include') == 'false': continue
        if c['cell_type'] == 'code':
            body = '\n'.join(l for l in src.split('\n') if not l.startswith('#|'))
            c['metadata'] = {'tags': list(c['metadata'].get('tags', []))}      # execution timings would not validate
            if d.get('echo') == 'false' or not body.strip(): c['metadata']['tags'].append('remove_input')
            if not body.strip() and not c.get('outputs'): continue
            c['source'] = body
            for o in c.get('outputs', []):
                md = o.get('data', {}).get('text/markdown')
                if md is not None: o['data']['text/markdown'] = re.sub(r'\)\{[^}]*\}', ')', ''.join(md))
        else:
            c['metadata'] = {}
            c['source'] = re.sub(r'\)\{[^}]*\}', ')', src)
        cells.append({k: v for k, v in c.items() if k in ('cell_type', 'id', 'metadata', 'source', 'outputs',
                                                          'execution_count', 'attachments')})
    nb['cells'] = cells
    return nb

def to_html(proc:Path, out:Path, pages=None) -> list:
    "Each processed notebook as `out/html/PAGE.html` (only `pages`, e.g. `core`, if given); the files written"
    import nbformat
    from nbconvert import HTMLExporter
    from traitlets.config import Config
    cfg = Config(); cfg.TagRemovePreprocessor.remove_input_tags = {'remove_input'}
    cfg.TagRemovePreprocessor.enabled = True
    exp = HTMLExporter(config=cfg, template_name='basic')
    (out/'html').mkdir(parents=True, exist_ok=True); res = []
    for fn in sorted(proc.glob('*.ipynb')):
        name = page_name(fn)[:-len('.html')]
        if pages and name not in pages: continue
        nb = nbformat.reads(json.dumps(quarto_like(json.loads(fn.read_text()))), as_version=4)   # joins text lines
        body, _ = exp.from_notebook_node(nb)
        title = next((re.sub(r'^#\s*', '', ''.join(c['source']).split('\n')[0]) for c in nb.cells
                      if c.cell_type == 'markdown' and ''.join(c['source']).startswith('# ')), name)
        head = f'<meta charset="utf-8"><title>{title}</title>{CSS}'
        html = f'<!doctype html><html><head>{head}</head><body>{body}</body></html>'
        dest = out/'html'/f'{name}.html'; dest.write_text(html); res.append(dest)
    return res

def _chromium(p):
    "A launched headless Chromium: playwright's own, else one installed by the system package manager"
    try: return p.chromium.launch()
    except Exception as e: first = e
    for exe in ('chromium-headless-shell', 'chromium', 'chromium-browser', 'google-chrome'):
        if shutil.which(exe): return p.chromium.launch(executable_path=shutil.which(exe), args=['--no-sandbox'])
    raise RuntimeError(f'no Chromium: playwright has none ({str(first).splitlines()[0]}) and none is on PATH')

def screenshots(htmls:list, out:Path) -> list:
    "A full-page PNG of each HTML file in `out`, and per page the figures as shown: (page, natural w×h, shown w×h)"
    from playwright.sync_api import sync_playwright
    figs = []
    with sync_playwright() as p:
        b = _chromium(p)
        page = b.new_page(viewport={'width': PAGE_WIDTH + 80, 'height': 900})
        for h in htmls:
            page.goto(h.resolve().as_uri()); page.wait_for_load_state('load')
            page.screenshot(path=str(out/f'{h.stem}.png'), full_page=True)
            for w, hh, dw, dh in page.eval_on_selector_all(
                    'img', 'els => els.map(e => [e.naturalWidth, e.naturalHeight, e.clientWidth, e.clientHeight])'):
                figs.append((h.stem, (w, hh), (dw, dh)))
        b.close()
    return figs

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('out', nargs='?', default='_render', help='folder for the HTML and the screenshots')
    ap.add_argument('--pages', nargs='*', help="only these pages (e.g. `core data`)")
    ap.add_argument('--reuse', action='store_true', help='use the existing `_proc/` instead of running nbdev-proc-nbs')
    a = ap.parse_args(argv)
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    proc = ROOT/'_proc'
    if not (a.reuse and proc.exists()):
        env = dict(os.environ, MPLBACKEND='Agg', PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
        subprocess.run(['nbdev-proc-nbs'], cwd=ROOT, env=env, check=True, capture_output=True)
    dead = dead_links(proc)
    print(f'{len(dead)} dead doc links' + ''.join(f'\n  {p}: {t} -> {u}' for p, t, u in dead))
    htmls = to_html(proc, out, a.pages)
    print(f'{len(htmls)} pages rendered to {out/"html"}')
    try: figs = screenshots(htmls, out)
    except ImportError: print('screenshots skipped: playwright is not installed (pip install playwright)'); return
    except Exception as e: print(f'screenshots skipped: {type(e).__name__}: {str(e).splitlines()[0]}'); return
    print(f'{len(htmls)} screenshots in {out}; figures at {PAGE_WIDTH} px (natural -> shown, px):')
    for pg, (w, h), (dw, dh) in figs: print(f'  {pg}: {w}x{h} -> {dw}x{dh}' + ('  (scaled down)' if dw < w else ''))

if __name__ == '__main__': main()
