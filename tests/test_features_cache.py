"Feature cache chunks carry a checksum of their values: a chunk edited into another valid parquet file is recomputed, with a warning naming it."
import warnings
import numpy as np, pandas as pd, pytest
import pyarrow as pa, pyarrow.parquet as pq
import hpa_fastai.features as F
from hpa_fastai.features import feature_table, FEATURE_NAMES
from test_features import _counting, _folder      # the feature-computation counter and a folder of random samples

def _chunk_of(tmp_path, first_id):
    return next(f for f in (tmp_path/'features_cache').glob('train-*/chunk-*.parquet')
                if pd.read_parquet(f).Id.iloc[0] == first_id)

def test_chunks_written_with_their_checksum(tmp_path, monkeypatch):
    folder, ids = _folder(tmp_path, 4)
    feature_table(folder, ids, n_workers=0, chunk_size=2)
    chunks = list((tmp_path/'features_cache').glob('train-*/chunk-*.parquet'))
    assert len(chunks) == 2
    for fn in chunks:
        t = pq.read_table(fn)
        assert t.schema.metadata[F._CHECKSUM].decode() == F._chunk_checksum(t.to_pandas())
    calls = _counting(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter('error')                              # a trusted chunk is read without a word
        feature_table(folder, ids, n_workers=0, chunk_size=2)
    assert not calls

def _edit(fn, how):
    "Edit the chunk `fn` into another valid parquet file, as `how` says"
    t = pq.read_table(fn); df = t.to_pandas()
    if how == 'rewritten by pandas':                                # the usual edit: read, change, write back
        df.loc[0, 'green_area'] += 0.25; df.to_parquet(fn, index=False)
    elif how == 'checksum kept':                                    # the old metadata carried over to new values
        df.loc[1, 'ssim_green_red'] = -df.loc[1, 'ssim_green_red']
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False).replace_schema_metadata(t.schema.metadata), fn)
    elif how == 'one ulp':                                          # the smallest change of one number
        df.loc[0, 'blob_compactness'] = np.nextafter(df.loc[0, 'blob_compactness'], np.inf, dtype=df.blob_compactness.dtype)
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False).replace_schema_metadata(t.schema.metadata), fn)
    elif how == 'written without checksum':                         # as an earlier hpa_fastai wrote every chunk
        pq.write_table(t.replace_schema_metadata({k: v for k, v in t.schema.metadata.items() if k != F._CHECKSUM}), fn)

@pytest.mark.parametrize('how, reason', [('rewritten by pandas', 'no checksum of its values'),
                                         ('checksum kept', 'do not match their checksum'),
                                         ('one ulp', 'do not match their checksum'),
                                         ('written without checksum', 'no checksum of its values')])
def test_edited_chunk_recomputed(tmp_path, monkeypatch, how, reason):
    folder, ids = _folder(tmp_path, 4)
    ft = feature_table(folder, ids, n_workers=0, chunk_size=2)
    chunk = _chunk_of(tmp_path, 's0')
    _edit(chunk, how)
    assert F._chunk_problem(pd.read_parquet(chunk), ['s0', 's1']) is None   # a table the schema check accepts
    calls = _counting(monkeypatch)
    with pytest.warns(UserWarning) as rec: ft2 = feature_table(folder, ids, n_workers=0, chunk_size=2)
    said = [str(w.message) for w in rec if 'cache chunk' in str(w.message)]
    assert len(said) == 1 and str(chunk) in said[0] and reason in said[0] and 'recomputing it' in said[0]
    assert len(calls) == 2                                          # that chunk alone, computed again
    assert np.array_equal(ft[FEATURE_NAMES].values, ft2[FEATURE_NAMES].values)
    calls.clear(); feature_table(folder, ids, n_workers=0, chunk_size=2)
    assert not calls                                                # rewritten with its checksum, trusted again

def test_checksum_covers_every_value():
    df = pd.DataFrame({'Id': ['a', 'b'], **{n: [0.5, np.nan] for n in FEATURE_NAMES}, 'error': ['', 'unreadable']})
    h = F._chunk_checksum(df)
    assert F._chunk_checksum(df.copy()) == h
    assert F._chunk_checksum(df.assign(Id=['a', 'c'])) != h
    assert F._chunk_checksum(df.assign(error=['', 'other'])) != h
    for n in FEATURE_NAMES: assert F._chunk_checksum(df.assign(**{n: [0.5000001, np.nan]})) != h, n
    payload = np.frombuffer(np.uint64(0x7ff8000000000001).tobytes(), np.float64)[0]   # another NaN bit pattern
    assert F._chunk_checksum(df.assign(green_area=[0.5, payload])) == h
    assert F._chunk_checksum(df.astype({n: np.float32 for n in FEATURE_NAMES})) == h   # float32 as written
