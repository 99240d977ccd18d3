"""The house rules that keep the project easy to change: README in step with nbs/index.ipynb, parameters documented
(the layout itself: tests/test_house.py). `python tests/test_docs.py` rewrites README.md from the index notebook."""
import ast, dataclasses, importlib, inspect, json, re
from pathlib import Path
from fastcore.docments import docments

ROOT = Path(__file__).parent.parent
MODULES = ['core', 'files', 'data', 'show', 'store', 'segment', 'dedup', 'synth', 'features', 'dataloaders', 'losses',
           'metrics', 'callbacks', 'learner', 'inference', 'baselines', 'distributed', 'train', 'experiments', 'interpret',
           'test_utils', 'cli', 'cells.crops', 'cells.rle', 'cells.store', 'cells.data', 'cells.learner',
           'cells.inference', 'cells.train', 'cells.commands', 'cells.cam']   # (imports one way: tests/test_house.py)

def readme_from_index() -> str:
    "README.md's text: the index notebook's markdown cells, with links to notebooks made relative to the repository root"
    nb = json.loads((ROOT/'nbs'/'index.ipynb').read_text())
    text = '\n\n'.join(''.join(c['source']).strip('\n') for c in nb['cells'] if c['cell_type'] == 'markdown') + '\n'
    return re.sub(r'\]\((?!https?:)([\w-]+\.ipynb|images/[\w.-]+)\)', r'](nbs/\1)', text)

def test_readme_in_step_with_index():
    assert (ROOT/'README.md').read_text() == readme_from_index(), 'README.md differs from nbs/index.ipynb: run `python tests/test_docs.py`'

def _params(mod):
    "(name, described?) for every parameter of the public functions, classes and methods of `mod`"
    for name in mod.__all__:
        o = getattr(mod, name)
        fs = []
        if inspect.isfunction(o): fs = [(name, o)]
        if dataclasses.is_dataclass(o):                    # fields documented by a comment in the class body
            src = inspect.getsource(o)
            for fld in dataclasses.fields(o): yield f'{name}.{fld.name}', bool(re.search(rf'^\s+{fld.name}\s*:[^\n]*#', src, re.M))
            fs = [(f'{name}.{k}', v) for k, v in vars(o).items() if inspect.isfunction(v) and not k.startswith('_')]
        elif inspect.isclass(o) and o.__module__ == mod.__name__:
            fs = [(f'{name}.{k}', v.__func__ if isinstance(v, classmethod) else v) for k, v in vars(o).items()
                  if (inspect.isfunction(v) or isinstance(v, classmethod)) and (not k.startswith('_') or k == '__init__')]
        for n, f in fs:
            if getattr(f, '__module__', '') != mod.__name__: continue
            try: docs = docments(f)
            except ValueError: docs = _docs_without_defaults(f)     # an array default confuses fastcore's annotation guess
            for p, doc in docs.items():
                if p in ('self', 'cls', 'return', 'args', 'kwargs') or p.startswith('_'): continue
                yield f'{n}({p})', bool(doc)

def _docs_without_defaults(f):
    "The `# comment` after each parameter of `f`, read from its source"
    return dict(zip(inspect.signature(f).parameters, _comments(f)))

def _comments(f):
    "The `# comment` after each parameter of `f`, from its source"
    src = inspect.getsource(f); names = list(inspect.signature(f).parameters)
    head = src[:src.index('):') if '):' in src else len(src)]
    return [(re.search(rf'\b{n}\b[^\n]*#\s*(.+)', head) or [None, None])[1] for n in names]

def test_parameters_documented():
    rows = [r for m in MODULES for r in _params(importlib.import_module(f'hpa_fastai.{m}'))]
    missing = [n for n, ok in rows if not ok]
    assert len(rows) > 200 and len(missing) / len(rows) <= 0.10, f'{len(missing)}/{len(rows)} parameters undocumented: {missing[:30]}'

def _docs_only(t) -> bool:
    "An import, or a call of `show_doc` / a warnings filter: what docs processing may run"
    if isinstance(t, (ast.Import, ast.ImportFrom)): return True
    if isinstance(t, ast.Expr) and isinstance(t.value, ast.Call):
        f = t.value.func
        return (f.id if isinstance(f, ast.Name) else getattr(f, 'attr', '')) in ('show_doc', 'filterwarnings', 'simplefilter')
    return False

def test_docs_processing_runs_no_lesson_code():
    "`nbdev-proc-nbs` executes every exported, import and `show_doc` cell alone: those that are not exports must do nothing else"
    from nbdev.process import NBProcessor
    from nbdev.processors import _do_eval
    bad = []
    for fn in sorted((ROOT/'nbs').glob('*.ipynb')):
        for c in NBProcessor(fn).nb.cells:
            if c.cell_type != 'code' or not _do_eval(c): continue
            if c.directives_.keys() & {'export', 'exports', 'exporti', 'exec_doc'}: continue
            if not all(_docs_only(t) for t in c.parsed_()): bad.append(f'{fn.name}: {c.source[:80]!r}')
    assert not bad, 'cells docs processing would run (keep imports in import cells):\n' + '\n'.join(bad)

def test_docs_processing_succeeds(tmp_path):
    "What the Pages workflow's `nbdev-docs` runs first, on a copy of the notebooks: no error (and, above, no training)"
    import shutil, subprocess, os
    shutil.copy(ROOT/'pyproject.toml', tmp_path); shutil.copytree(ROOT/'nbs', tmp_path/'nbs')
    r = subprocess.run(['nbdev-proc-nbs'], cwd=tmp_path, capture_output=True, text=True, timeout=900,
                       env=dict(os.environ, OMP_NUM_THREADS='1', MPLBACKEND='Agg'))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert (tmp_path/'_proc'/'index.ipynb').exists()
    import sys; sys.path.insert(0, str(ROOT/'tools'))
    from doclinks import dead_links
    # every backticked name nbdev links goes to a heading that exists
    dead = dead_links(tmp_path/'_proc')
    assert not dead, f'{len(dead)} links to anchors no page has: {dead[:20]}'

def test_class_table_matches_the_constants():
    "The core page's class table (index, name, Kaggle training count) is `HPA_CLASSES` and `TRAIN_COUNTS`"
    from hpa_fastai.core import HPA_CLASSES, TRAIN_COUNTS
    cells = json.loads((ROOT/'nbs'/'00_core.ipynb').read_text())['cells']
    md = next(''.join(c['source']) for c in cells if ''.join(c['source']).startswith('The 28 classes, by index'))
    rows = [l.split('|')[1:4] for l in md.split('\n') if l[:2] == '| ' and l[2].isdigit()]
    got = [(int(a), b.strip(), int(c.replace(',', ''))) for a, b, c in rows]
    assert got == [(i, n, k) for i, (n, k) in enumerate(zip(HPA_CLASSES, TRAIN_COUNTS))]


if __name__ == '__main__':
    (ROOT/'README.md').write_text(readme_from_index()); print('README.md rewritten from nbs/index.ipynb')
