"Shared fixtures: tiny fabricated Kaggle-layout folders, and the real data when it is beside the project."
import os, pytest
from pathlib import Path
from hpa_fastai.core import real_hpa_path
from hpa_fastai.test_utils import fake_hpa, needs_real as _needs_real, REAL_SAMPLE_ID

REAL = real_hpa_path(Path(__file__).parent)
needs_real = _needs_real(Path(__file__).parent)
make_fake = fake_hpa            # the one fake-data maker, from hpa_fastai.test_utils

@pytest.fixture
def fake(tmp_path): return fake_hpa(tmp_path)

def pytest_pycollect_makeitem(collector, name, obj):
    "Collect only the tests a file defines: `from hpa_fastai.all import *` also brings fastcore's `test_eq` and friends"
    import inspect
    mod = getattr(collector, 'obj', None)
    if inspect.isfunction(obj) and name.startswith('test') and mod is not None and obj.__module__ != mod.__name__:
        return []

def pytest_configure(config):
    "Under `pytest -n N` (pytest-xdist) each worker takes one core: torch and OpenCV here and in the commands it starts"
    if os.environ.get('PYTEST_XDIST_WORKER'):
        import cv2, torch
        os.environ['OMP_NUM_THREADS'] = '1'
        torch.set_num_threads(1); cv2.setNumThreads(1)

@pytest.fixture
def cli_here(monkeypatch):
    """Run a command line in this process, as its installed console script does: (exit code, stdout, stderr).
    A command started with `subprocess` pays ~7 s of imports (torch, fastai); this runs the same script, already imported"""
    import contextlib, io, runpy, sys, traceback
    from types import SimpleNamespace
    def run(args, cwd):
        exe = Path(sys.executable).parent/args[0]
        monkeypatch.chdir(cwd); monkeypatch.setattr(sys, 'argv', [str(exe), *map(str, args[1:])])
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try: runpy.run_path(str(exe), run_name='__main__'); code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
                if isinstance(e.code, str): print(e.code, file=sys.stderr)
            except Exception:                                      # as Python does for an uncaught exception
                traceback.print_exc(); code = 1
        return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())
    return run
