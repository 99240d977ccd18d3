"Every `hpa-*` command line shown in README.md and the notebooks' prose names a command that exists and options it takes."
import json, re, tomllib, pytest
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMAND = re.compile(r'\b(hpa-[a-z]+)\b([^`\n]*)')      # a command and the rest of its code span or line
OPTION = re.compile(r'(?<![\w-])(--[a-z][a-z0-9-]*)')

def prose():
    "(where, text) of README.md and of every notebook's markdown cells"
    yield 'README.md', (ROOT/'README.md').read_text()
    for nb in sorted((ROOT/'nbs').glob('*.ipynb')):
        for i, c in enumerate(json.loads(nb.read_text())['cells']):
            if c['cell_type'] == 'markdown': yield f'{nb.name} cell {i}', ''.join(c['source'])

def entry_points():
    "Command name → its function, from pyproject.toml's [project.scripts]"
    import importlib
    scripts = tomllib.loads((ROOT/'pyproject.toml').read_text())['project']['scripts']
    return {k: getattr(importlib.import_module(v.split(':')[0]), v.split(':')[1]) for k, v in scripts.items()}

def options(f):
    "The option strings `call_parse` gives command `f`, as `--help` lists them"
    from fastcore.script import anno_parser
    return set(anno_parser(getattr(f, '__wrapped__', f))._option_string_actions)

def shown_commands():
    "(where, command, sub-command or None, options) of every command line shown"
    for where, text in prose():
        for m in COMMAND.finditer(text):
            cmd, rest = m.group(1), m.group(2)
            sub = re.match(r'\s+(pack|train|predict)\b', rest) if cmd == 'hpa-cells' else None
            yield where, cmd, sub and sub.group(1), OPTION.findall(rest)

def test_commands_found():
    "The scan sees the README's main commands (a scan that found nothing would pass every check below)"
    shown = {(c, o) for _, c, _, opts in shown_commands() for o in opts}
    assert ('hpa-train', '--pretrained') in shown and ('hpa-pack', '--size') in shown

def test_shown_commands_exist_with_their_options():
    eps = entry_points()
    import hpa_fastai.cells.commands as cells
    bad = []
    for where, cmd, sub, opts in shown_commands():
        if cmd not in eps: bad.append(f'{where}: {cmd} is not a command (pyproject.toml has {", ".join(sorted(eps))})'); continue
        if cmd == 'hpa-cells':
            if sub is None: continue                       # `hpa-cells` alone, or with --help
            f = getattr(cells, f'hpa_cells_{sub}')
        else: f = eps[cmd]
        known = options(f) | {'--help'}
        bad += [f'{where}: `{cmd}{" " + sub if sub else ""}` has no option {o}' for o in opts if o not in known]
    assert not bad, '\n'.join(bad)
