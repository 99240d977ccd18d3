"""README.md's copy-paste blocks, as CI runs them: `python tools/readme_blocks.py main|tests|python`.

`main` is the first ```sh block (install and run the main job), `tests` the second (install and pass the tests),
`python` the one ```python block. Exits 1, naming what is missing, when README.md lacks one."""
import re, sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent/'README.md'

def blocks(lang:str) -> list[str]:
    "The fenced blocks of README.md in language `lang`, in order"
    return re.findall(rf'```{lang}\n(.*?)```', README.read_text(), re.S)

def block(name:str) -> str:
    "The block CI runs as `name`: 'main', 'tests' or 'python'"
    lang, i = dict(main=('sh', 0), tests=('sh', 1), python=('python', 0))[name]
    bs = blocks(lang)
    if len(bs) <= i: sys.exit(f'{README}: no {name} block (it holds {len(bs)} ```{lang} block(s))')
    return bs[i].strip()

if __name__ == '__main__':
    if len(sys.argv) != 2 or sys.argv[1] not in ('main', 'tests', 'python'): sys.exit(__doc__)
    print(block(sys.argv[1]))
