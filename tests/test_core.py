"Bad label files: every error names the file and the row."
import pytest
from hpa_fastai.all import *
from conftest import needs_real, REAL

def write(tmp_path, txt, name='t.csv'):
    p = tmp_path/name; p.write_text(txt); return p

@pytest.mark.parametrize('txt,msg', [
    ('', 'empty'),
    ('Id,Label\na,1\n', "missing column(s) ['Target']"),
    ('Id,Target\n', 'no rows'),
    ('Id,Target\na,1\nb,1;2\n', 'line 3'),
    ('Id,Target\na,1\nb,29\n', 'outside 0-27'),
    ('Id,Target\na,1\nb,-1\n', 'outside 0-27'),
    ('Id,Target\na,1\nb,\n', 'empty Target'),
    ('Id,Target\na,1\nb,2\na,3\n', "duplicate Id 'a' on lines [2, 4]"),
    ('Id,Target\n,1\n', 'empty Id on line 2'),
])
def test_read_labels_errors(tmp_path, txt, msg):
    p = write(tmp_path, txt)
    with pytest.raises(HpaDataError) as e: read_labels(p)
    assert msg in str(e.value) and str(p) in str(e.value)

def test_missing_file(tmp_path):
    with pytest.raises(HpaDataError, match='file not found'): read_labels(tmp_path/'nope.csv')

def test_targets_roundtrip():
    y = encode_targets([[0, 27], [3]])
    assert decode_targets(y) == [[0, 27], [3]]

@needs_real
def test_real_train_csv():
    df = read_labels(REAL/'train.csv')
    assert len(df) == 31072 and label_counts(df).tolist() == TRAIN_COUNTS
    assert label_counts(df)[0] == 12885 and label_counts(df)[27] == 11

@needs_real
def test_real_external_csv():
    df = read_labels(REAL/'HPAv18RBGY_wodpl.csv')
    assert len(df) == 74606 and df.Id[0] == '10580_1610_C1_1'

def test_read_labels_not_utf8(tmp_path):
    (tmp_path/'train.csv').write_bytes('Id,Target\na,1\nab\xe9,1\n'.encode('latin-1'))
    with pytest.raises(HpaDataError, match=r'train.csv: line 3 is not UTF-8 text'): read_labels(tmp_path/'train.csv')
