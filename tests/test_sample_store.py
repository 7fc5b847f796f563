"""The chunked sample store: resumable, and exports in the memory of one chunk."""
import tracemalloc

import numpy as np
import pytest

from pipelines.sample_store import SampleStore


def fill(store, channels=3, size=32, seed=0):
    rng = np.random.default_rng(seed)
    store.open()
    for i in store.missing():
        lo, hi = store.bounds(i)
        store.write(i, images=rng.integers(0, 256, (hi - lo, channels, size, size), dtype=np.uint8),
                    labels=np.arange(lo, hi, dtype=np.int64))
    return store


def test_export_npz_is_nhwc_rgb_and_streams_chunk_by_chunk(tmp_path):
    store = fill(SampleStore(tmp_path / "s", n=250, chunk_size=16, key={"k": 1}), channels=1)
    assert store.n_chunks == 16 and store.bounds(15) == (240, 250) and store.complete()
    expected = np.concatenate(list(store.iter_arrays("images")))  # (250, 1, 32, 32)
    tracemalloc.start()
    store.export_npz(tmp_path / "out.npz", ("labels",), scalars={"seed": 3})
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    whole = 250 * 32 * 32 * 3
    assert peak < whole / 4, f"export peaked at {peak} bytes; all of arr_0 is {whole}"
    with np.load(tmp_path / "out.npz", allow_pickle=False) as z:
        assert z["arr_0"].shape == (250, 32, 32, 3) and z["arr_0"].dtype == np.uint8
        assert np.array_equal(z["arr_0"][..., 0], expected[:, 0]) and np.array_equal(z["arr_0"][..., 2], expected[:, 0])
        assert z["labels"].tolist() == list(range(250)) and int(z["seed"]) == 3


def test_chunks_of_another_key_are_discarded_and_random_access_reads_the_right_rows(tmp_path):
    store = fill(SampleStore(tmp_path / "s", n=10, chunk_size=4, key={"seed": 1}))
    (tmp_path / "s" / "chunk-000001.npz").unlink()
    assert store.missing() == [1]
    same = SampleStore(tmp_path / "s", n=10, chunk_size=4, key={"seed": 1}).open()
    assert same.missing() == [1]  # kept: a resumed job only makes chunk 1
    other = SampleStore(tmp_path / "s", n=10, chunk_size=4, key={"seed": 2}).open()
    assert other.missing() == [0, 1, 2]
    fill(other, seed=5)
    everything = np.concatenate(list(other.iter_arrays("images")))
    idx = np.array([9, 0, 5, 4])
    assert np.array_equal(other.images(idx).numpy(), everything[idx])
    with pytest.raises(ValueError, match="needs 4 rows"):
        other.write(0, images=everything[:3])
