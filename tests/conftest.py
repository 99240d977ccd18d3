"Shared fixtures: tiny fabricated Kaggle-layout folders, and the real data when it is beside the project."
import pytest
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
