"""Saved `show_doc` outputs cannot go stale: every one shows the signature `show_doc` renders today.

A notebook's saved `show_doc` output is what a reader sees on GitHub or in Jupyter before running anything (the docs
site renders them afresh), so it must not lack a parameter the function has gained, nor show one it lost. Each cell
with a saved output is re-run here against the live library (the notebook's `default_exp` module) and the signature
block of its markdown (the parameters, their defaults, annotations and comments) compared with the saved one. To
refresh a stale output: `python tools/regen_outputs.py nbs/X.ipynb CELL_ID`."""
import importlib, json, re
from pathlib import Path
import pytest

ROOT = Path(__file__).parent.parent
DIRECTIVE = re.compile(r'^\s*#\s?\|')
SIGNATURE = re.compile(r'```python\n(.*?)\n```', re.S)

# Saved outputs known to be stale in notebooks another change is rewriting: (notebook, cell id) -> why.
# Remove an entry once its notebook's outputs are re-rendered; an entry that is no longer stale fails the test too.
EXPECTED_STALE = {}      # (notebook, cell id) -> why its saved show_doc may lag the live signature for now

def saved_show_docs():
    "(notebook, cell id, source, saved markdown) of every code cell calling `show_doc` that has a saved output"
    for p in sorted((ROOT/'nbs').glob('*.ipynb')):
        nb = json.loads(p.read_text())
        for c in nb['cells']:
            src = ''.join(c['source'])
            if c['cell_type'] != 'code' or 'show_doc(' not in src: continue
            md = [''.join(o['data']['text/markdown']) for o in c.get('outputs', []) if 'text/markdown' in o.get('data', {})]
            if md: yield p.name, c['id'], src, md

def default_exp(nb:str) -> str:
    "The module a notebook exports to"
    for c in json.loads((ROOT/'nbs'/nb).read_text())['cells']:
        m = re.search(r'^#\|\s*default_exp\s+(\S+)', ''.join(c['source']), re.M)
        if m: return f'hpa_fastai.{m[1]}'
    raise ValueError(f'{nb} has no default_exp')

def signatures(mds) -> list:
    "The signature block of each rendered `show_doc` markdown"
    return [(SIGNATURE.search(md) or [None, md])[1] for md in mds]

def params(sig:str) -> list:
    "The parameter names of a rendered signature, in order"
    body = sig[sig.index('(') + 1:sig.rindex(')')] if '(' in sig else ''
    body = re.sub(r'#[^\n]*', '', body)                                  # the docments comments
    depth, names, cur = 0, [], ''
    for ch in body + ',':
        if ch in '([{': depth += 1
        if ch in ')]}': depth -= 1
        if ch == ',' and depth == 0:
            n = re.match(r'\s*\**(\w+)', cur)
            if n: names.append(n[1])
            cur = ''
        else: cur += ch
    return names

def live_show_docs(nb:str, src:str) -> list:
    "The markdown `show_doc` renders today for the calls of cell `src`, run in the namespace of `nb`'s module"
    from nbdev.showdoc import show_doc
    ns = dict(vars(importlib.import_module(default_exp(nb))))
    out = []
    ns['show_doc'] = lambda *a, **kw: out.append(show_doc(*a, **kw)._repr_markdown_())
    exec('\n'.join(l for l in src.splitlines() if not DIRECTIVE.match(l)), ns)
    return out

CASES = list(saved_show_docs())

def test_show_docs_found():
    assert len(CASES) > 40, f'only {len(CASES)} saved show_doc outputs found'

@pytest.mark.parametrize('nb,cell_id,src,saved', CASES, ids=[f'{n}:{i}' for n, i, *_ in CASES])
def test_saved_show_doc_matches_live(nb, cell_id, src, saved):
    live = live_show_docs(nb, src)
    old, new = signatures(saved), signatures(live)
    stale = old != new
    if (nb, cell_id) in EXPECTED_STALE:
        assert stale, f'{nb} cell {cell_id} is no longer stale: remove it from EXPECTED_STALE'
        pytest.xfail(EXPECTED_STALE[nb, cell_id])
    for o, n in zip(old, new):
        lacks = [p for p in params(n) if p not in params(o)]
        gone = [p for p in params(o) if p not in params(n)]
        assert not (lacks or gone), (f'{nb} cell {cell_id}: the saved show_doc lacks {lacks} and shows {gone} that the '
                                     f'live signature has not; refresh it: python tools/regen_outputs.py nbs/{nb} {cell_id}')
    assert not stale, (f'{nb} cell {cell_id}: the saved show_doc signature differs from the live one (a default, '
                       f'annotation or comment); refresh it: python tools/regen_outputs.py nbs/{nb} {cell_id}\n'
                       f'saved:\n{old}\nlive:\n{new}')

def test_params_parser():
    assert params('def f(\n    a, # A (x, y)\n    b:int=1, # B\n    c=(1, 2), *args, d:dict={}, **kw\n):') == ['a', 'b', 'c', 'args', 'd', 'kw']
