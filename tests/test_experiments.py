"The paper's configurations as named runs: seeds give mean and SD; every row says which paper row it stands for."
import pandas as pd
from hpa_fastai.experiments import run_experiment, EXPERIMENTS
from hpa_fastai.test_utils import fake_hpa

def test_seeds_and_paper_rows(tmp_path):
    assert all('paper' in c for c in EXPERIMENTS.values())
    assert EXPERIMENTS['table1_zero']['schedule'] == 'clr' and EXPERIMENTS['sec63_rgb_features']['gpu_epochs'] == 50
    d = fake_hpa(tmp_path/'d', n=16)
    r = run_experiment('table1_zero', d, out=tmp_path/'runs', arch='resnet18', size=32, bs=8, epochs=1, num_workers=0,
                       tta='none', seeds=(0, 1))
    assert r['seeds'] == '0 1' and r['n_seeds'] == 2 and 'f1_thresholds_sd' in r
    table = pd.read_csv(tmp_path/'runs'/'results.csv')
    assert list(table.seed) == [0, 1] and table.paper.str.startswith('Table 1 row 1').all()
