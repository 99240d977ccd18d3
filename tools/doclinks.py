"""Dead doc links: the links nbdev made from backticked names (in `_proc/`) whose page or anchor the processed pages
lack. `python tools/doclinks.py [_proc]` lists them; `dead_links(proc)` returns them."""
import json, re, sys, unicodedata
from pathlib import Path

SITE = 'https://hpa-fastai.github.io/hpa_fastai/'

def page_name(nb:Path) -> str:
    "The page nbdev/Quarto makes of notebook `nb`: `01a_show.ipynb` → `show.html`"
    return re.sub(r'^\d+[a-z]?_', '', nb.stem) + '.html'

def pandoc_id(heading:str) -> str:
    "The id pandoc's `auto_identifiers` gives a heading's text"
    t = re.sub(r'\[([^\]]*)\]\([^)]*\)', r'\1', heading)                 # links → their text
    t = re.sub(r'\{[^}]*\}\s*$', '', t).replace('`', '').replace('*', '')
    t = ''.join(ch for ch in unicodedata.normalize('NFC', t) if ch.isalnum() or ch in ' _-.\n').strip().lower()
    t = re.sub(r'\s+', '-', t)
    return re.sub(r'^[^a-z]+', '', t)

def _texts(nb):
    "Every markdown text of a processed notebook: markdown cells and markdown outputs"
    for c in nb['cells']:
        if c['cell_type'] == 'markdown': yield ''.join(c['source'])
        for o in c.get('outputs', []):
            md = o.get('data', {}).get('text/markdown')
            if md: yield ''.join(md)

def anchors(nb) -> set:
    "The heading ids of a processed notebook (explicit `{#id}` ones too)"
    res = set()
    for t in _texts(nb):
        for h in re.findall(r'^#{1,6}\s+(.*)$', t, re.M):
            m = re.search(r'\{#([^}\s]+)[^}]*\}\s*$', h)
            res.add(m.group(1) if m else pandoc_id(h))
    return res

def dead_links(proc='_proc') -> list:
    "(notebook, link text, target) for every link to this site whose page or anchor does not exist"
    nbs = {page_name(p): json.loads(p.read_text()) for p in sorted(Path(proc).glob('*.ipynb'))}
    ids = {k: anchors(v) for k, v in nbs.items()}
    bad = []
    for fn, nb in nbs.items():
        for t in _texts(nb):
            for text, url in re.findall(r'\[([^\]]*)\]\((' + re.escape(SITE) + r'[^)\s]*)\)', t):
                page, _, anchor = url[len(SITE):].partition('#')
                if page not in ids or (anchor and anchor not in ids[page]): bad.append((fn, text, url[len(SITE):]))
    return bad

if __name__ == '__main__':
    bad = dead_links(sys.argv[1] if len(sys.argv) > 1 else '_proc')
    for b in bad: print(*b, sep='\t')
    print(f'{len(bad)} dead links ({len(set(b[2] for b in bad))} targets)')
