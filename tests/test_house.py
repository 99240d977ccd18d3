"""The layout a maintainer relies on: imports go one way (in notebook order, function-level imports included), no
private name crosses a module, no module-level `__getattr__`, cells small, lines short, `hpa_fastai.all` gives a user
everything, and the fused learner draws its batches and top losses after `load_learner` in a fresh process."""
import ast, json, os, re, subprocess, sys, textwrap
from pathlib import Path
import pytest

ROOT = Path(__file__).parent.parent
PKG = ROOT/'hpa_fastai'

def notebook_modules() -> dict:
    "Module name (`data`, `cells.store`) → the notebook that exports it"
    res = {}
    for nb in sorted((ROOT/'nbs').glob('*.ipynb')):
        for c in json.loads(nb.read_text())['cells']:
            m = re.match(r'#\|\s*default_exp\s+(\S+)', ''.join(c['source']))
            if m: res[m.group(1)] = nb.name
    return res

def module_file(mod:str) -> Path: return PKG.joinpath(*mod.split('.')).with_suffix('.py')

def imported_modules(mod:str):
    "(line, imported hpa_fastai module, names) for every import in `mod`'s file, at any depth"
    tree = ast.parse(module_file(mod).read_text())
    pkg = mod.split('.')[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[:len(pkg) - (node.level - 1)] if node.level > 1 else pkg
                target = '.'.join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith('hpa_fastai'): target = node.module[len('hpa_fastai') + 1:]
            else: continue
            yield node.lineno, target, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith('hpa_fastai.'): yield node.lineno, a.name[len('hpa_fastai.'):], []

def test_every_module_has_a_notebook():
    mods = notebook_modules()
    generated = {'.'.join(p.relative_to(PKG).with_suffix('').parts) for p in PKG.rglob('*.py')}
    hand = {m for m in generated if m in ('__init__', '_modidx') or m == 'all' or m.endswith('.all') or m.endswith('__init__')}
    assert generated - hand - set(mods) == set(), f'modules without a notebook: {sorted(generated - hand - set(mods))}'

def test_imports_one_way():
    "Each module imports only modules of earlier notebooks — at the top or inside a function: no hidden cycle"
    mods = notebook_modules(); bad = []
    for m, nb in mods.items():
        for line, target, _ in imported_modules(m):
            if target in ('', '__init__'): continue                       # `from . import __version__`
            if target not in mods: bad.append(f'{m}:{line} imports unknown module {target}'); continue
            if target != m and mods[target] >= nb: bad.append(f'{m} ({nb}):{line} imports {target} ({mods[target]})')
    assert not bad, '\n'.join(bad)

def test_no_private_names_across_modules():
    mods = notebook_modules()
    bad = [f'{m}:{line} imports {n} from {t}' for m in mods for line, t, names in imported_modules(m)
           for n in names if n.startswith('_') and not n.startswith('__') and t != m]
    assert not bad, '\n'.join(bad)

def test_no_module_getattr():
    for m in notebook_modules():
        tree = ast.parse(module_file(m).read_text())
        assert not any(isinstance(n, ast.FunctionDef) and n.name == '__getattr__' for n in tree.body), m

def exported_cells():
    "(notebook, cell source) of every exported cell"
    for nb in sorted((ROOT/'nbs').glob('*.ipynb')):
        for c in json.loads(nb.read_text())['cells']:
            s = ''.join(c['source'])
            if c['cell_type'] == 'code' and s.lstrip().startswith('#| export'): yield nb.name, s

def test_one_definition_per_exported_cell():
    bad = []
    for nb, s in exported_cells():
        tree = ast.parse(s)
        defs = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                and not n.name.startswith('_') and not any(getattr(d, 'id', getattr(d, 'attr', None)) == 'patch'
                                                           for d in n.decorator_list)]
        if len(defs) > 1: bad.append(f'{nb}: {defs}')
    assert not bad, '\n'.join(bad)

def test_library_lines_short():
    "Library lines ≤ 120 characters, except URLs and what nbdev generates (the module docstring's first line, `__all__`)"
    bad = []
    for p in PKG.rglob('*.py'):
        if p.name == '_modidx.py': continue
        in_all = False
        for i, l in enumerate(p.read_text().splitlines(), 1):
            if i == 1: continue
            if l.startswith('__all__'): in_all = True
            if in_all:
                in_all = not l.rstrip().endswith(']'); continue
            if len(l) > 120 and 'http' not in l: bad.append(f'{p.relative_to(ROOT)}:{i} ({len(l)})')
    assert not bad, '\n'.join(bad[:40])

def test_notebooks_end_with_export_and_stay_small():
    for nb in sorted((ROOT/'nbs').glob('*.ipynb')):
        cells = json.loads(nb.read_text())['cells']
        if any(re.match(r'#\|\s*default_exp', ''.join(c['source'])) for c in cells):
            assert 'nbdev_export()' in ''.join(cells[-1]['source']), f'{nb.name} does not end with the export cell'
        assert nb.stat().st_size <= 300_000, f'{nb.name}: {nb.stat().st_size / 1e3:.0f} kB of saved notebook'

def readme_python() -> str:
    "The README's Python snippet"
    blocks = re.findall(r'```python\n(.*?)```', (ROOT/'README.md').read_text(), re.S)
    assert len(blocks) == 1, 'README.md should hold one Python snippet'
    return blocks[0]

def run_py(code:str, cwd, timeout=600):
    env = dict(os.environ, MPLBACKEND='Agg', OMP_NUM_THREADS='1')
    r = subprocess.run([sys.executable, '-c', code], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout

def test_readme_snippet_runs(tmp_path):
    "`from hpa_fastai.all import *` is the snippet's one import, and the snippet runs as printed"
    code = readme_python()
    assert code.startswith('from hpa_fastai.all import *\n')
    if os.environ.get('HPA_CI_README_PYTHON_RAN'):
        pytest.skip("README's Python block already ran in this CI run, in the user's fresh venv without extras (.ci/run)")
    run_py(code, tmp_path)
    assert list(tmp_path.rglob('export.pkl')), 'the snippet exports its learner'

def test_fused_learner_draws_after_load_learner(tmp_path):
    "In a fresh process that imports only fastai, a loaded fused learner shows batches, results and top losses"
    run_py(textwrap.dedent(f'''
        from hpa_fastai.all import *
        syn = make_synthetic_hpa({str(tmp_path/'syn')!r}, n_train=16, n_test=4, size=64, seed=0, progress=False)
        dls = hpa_dataloaders(syn, size=32, bs=4, features=True, num_workers=0)
        learn = hpa_learner(dls, arch=resnet18, pretrained=False)
        learn.export({str(tmp_path/'fused.pkl')!r})
        import json; json.dump([str(s) for s in dls.valid_ds.items], open({str(tmp_path/'stems.json')!r}, 'w'))
    '''), tmp_path)
    out = run_py(textwrap.dedent(f'''
        import json, matplotlib; matplotlib.use('Agg')
        from pathlib import Path
        from fastai.vision.all import load_learner, Interpretation
        learn = load_learner({str(tmp_path/'fused.pkl')!r})
        stems = [Path(s) for s in json.load(open({str(tmp_path/'stems.json')!r}))]
        dl = learn.dls.test_dl(stems, with_labels=True, num_workers=0, bs=2)
        dl.show_batch(max_n=2)
        learn.show_results(dl=dl, max_n=2)
        Interpretation.from_learner(learn, dl=dl).plot_top_losses(2)
        print('drawn')
    '''), tmp_path)
    assert 'drawn' in out

MACHINE_PATH = re.compile(r'(/root/|/home/|/Users/|/tmp/|/work/|/private/var/|/var/folders/|[A-Z]:\\\\Users\\\\)')
PROGRESS_BAR = re.compile(r'(<progress|█|\d+\.\d+% \[\d+/\d+)')

def test_saved_outputs_hold_no_machine_paths_or_progress_bars():
    "What a reader sees of a run: no folder of the machine it ran on, no progress-bar text"
    bad = []
    for nb in sorted((ROOT/'nbs').glob('*.ipynb')):
        for c in json.loads(nb.read_text())['cells']:
            for o in c.get('outputs', []):
                texts = [''.join(o.get('text', ''))] + [''.join(v) for k, v in o.get('data', {}).items()
                                                          if not k.startswith('image/')]
                for t in texts:
                    for rx in (MACHINE_PATH, PROGRESS_BAR):
                        m = rx.search(t)
                        if m: bad.append(f'{nb.name} {c["id"]}: {t[max(0, m.start() - 40):m.end() + 20]!r}')
    assert not bad, '\n'.join(bad[:20])
