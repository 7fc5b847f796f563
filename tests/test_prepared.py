"""Image folders prepared once into a memory-mapped array."""
import os
import time

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from pipelines.cli import main
from pipelines.config import TrainConfig
from pipelines.datasets import DataConfig, DataError, build_datasets
from pipelines.train import StepBatchSampler, train

from conftest import make_image_folder


def folder_cfg(root, cache, **kw):
    return DataConfig(name="folder", root=str(root), size=12, val_fraction=0.25, cache_dir=str(cache), **kw)


def items(ds):
    return [ds[i] for i in range(len(ds))]


def assert_same(a, b):
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and int(ya) == int(yb)


def test_prepared_images_equal_the_folders_exactly(tmp_path):
    folder = make_image_folder(tmp_path / "images", n_per_class=6, size=20)  # resized (down) to 12
    plain = build_datasets(folder_cfg(folder, tmp_path / "cache"))
    prepared = build_datasets(folder_cfg(folder, tmp_path / "cache", prepare=True, workers=2))
    for a, b in zip(plain, prepared):
        assert_same(items(a), items(b))
        assert b.files == a.files and b.class_names == a.class_names
    assert (prepared[0].cache.path / "files.json").is_file()
    # batched fetches (what the training loop asks for) give the same tensors
    batch = prepared[0].__getitems__([2, 0, 1])
    assert_same(batch, [prepared[0][i] for i in (2, 0, 1)])


def test_a_changed_added_or_removed_file_gives_a_new_cache(tmp_path):
    folder = make_image_folder(tmp_path / "images", n_per_class=4, size=12)
    cfg = folder_cfg(folder, tmp_path / "cache", prepare=True, workers=1)
    first = build_datasets(cfg)[0].cache.path
    assert build_datasets(cfg)[0].cache.path == first  # unchanged folder: the same cache, reused
    target = folder / "cats" / "001.png"
    Image.fromarray(np.full((12, 12, 3), 7, np.uint8)).save(target)
    os.utime(target, ns=(time.time_ns(), time.time_ns() + 10**9))
    changed = build_datasets(cfg)
    assert changed[0].cache.path != first
    assert_same(items(changed[0]) + items(changed[1]),
                items(build_datasets(folder_cfg(folder, tmp_path / "c2"))[0]) +
                items(build_datasets(folder_cfg(folder, tmp_path / "c2"))[1]))
    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(folder / "dogs" / "new.png")
    added = build_datasets(cfg)[0].cache.path
    os.remove(folder / "dogs" / "new.png")
    removed = build_datasets(cfg)[0].cache.path
    assert len({first, changed[0].cache.path, added}) == 3 and removed == changed[0].cache.path


@pytest.mark.reliability
def test_a_prepare_killed_half_way_leaves_nothing_that_is_read_later(tmp_path, monkeypatch):
    """prepare-data killed half-way through decoding -> no cache directory appears; the next run prepares it whole"""
    import pipelines.datasets.prepared as prepared
    folder = make_image_folder(tmp_path / "images", n_per_class=40, size=12)
    cfg = folder_cfg(folder, tmp_path / "cache", prepare=True, workers=1)
    real, calls = prepared._decode_chunk, []

    def dying(job):
        calls.append(job[3])
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return real(job)
    monkeypatch.setattr(prepared, "_decode_chunk", dying)
    with pytest.raises(KeyboardInterrupt):
        build_datasets(cfg)
    assert [p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")] == []
    monkeypatch.setattr(prepared, "_decode_chunk", real)
    assert_same(items(build_datasets(cfg)[0]), items(build_datasets(folder_cfg(folder, tmp_path / "c2"))[0]))


@pytest.mark.reliability
def test_unreadable_files_in_a_prepared_folder(tmp_path):
    """A truncated image while preparing a folder -> error naming the file; with data.skip_bad_files it is left out"""
    folder = make_image_folder(tmp_path / "images", n_per_class=6, size=12)
    bad = folder / "dogs" / "002.png"
    bad.write_bytes(bad.read_bytes()[:30])
    with pytest.raises(DataError, match="002.png"):
        build_datasets(folder_cfg(folder, tmp_path / "cache", prepare=True, workers=1))
    with pytest.warns(UserWarning, match="002.png"):
        train, val = build_datasets(folder_cfg(folder, tmp_path / "cache", prepare=True, workers=1,
                                               skip_bad_files=True))
    assert bad not in train.files + val.files and len(train) + len(val) == 11


def test_loader_workers_give_the_same_batches_and_weights(tmp_path):
    folder = make_image_folder(tmp_path / "images", n_per_class=8, size=12)
    train_set, _ = build_datasets(folder_cfg(folder, tmp_path / "cache"))
    sampler = lambda: StepBatchSampler(len(train_set), 4, seed=3, start=0, total=6)
    in_process = list(DataLoader(train_set, batch_sampler=sampler(), num_workers=0))
    workers = list(DataLoader(train_set, batch_sampler=sampler(), num_workers=2))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(in_process, workers))
    model_a, model_b = torch.nn.Linear(3 * 12 * 12, 2), torch.nn.Linear(3 * 12 * 12, 2)
    model_b.load_state_dict(model_a.state_dict())
    loss = lambda m, b: ((m(b[0].flatten(1)) - 1) ** 2).mean()
    results = []
    for model, n, out in ((model_a, -1, "none"), (model_b, 2, "two")):
        cfg = TrainConfig(steps=5, batch_size=4, save_every=5, mixed_precision="no", warmup_steps=1, num_workers=n)
        results.append(train(model, train_set, cfg, tmp_path / out, lambda m, b: (loss(m, b), {}),
                             {"config_hash": "x"}).model.state_dict())
    assert all(torch.equal(results[0][k], results[1][k]) for k in results[0])


def test_prepare_data_command(tmp_path, capsys, monkeypatch):
    folder = make_image_folder(tmp_path / "images", n_per_class=4, size=12)
    assert main(["prepare-data", "--preset", "ffhq256", "--set", f"data.root='{folder}'", "--set", "data.size=16", "--set", "vqvae.image_size=16",
                 "--set", f"data.cache_dir='{tmp_path / 'cache'}'", "--set", "data.val_fraction=0.25"]) == 0
    out = capsys.readouterr().out
    assert "prepare-data" in out and str(tmp_path / "cache") in out
    assert main(["prepare-data", "--preset", "demo"]) == 2
    assert "needs no preparation" in capsys.readouterr().err


def _fill(images, path):
    images[:] = np.arange(images.size, dtype=np.uint64).reshape(images.shape) % 251
    return np.zeros(len(images), dtype=np.int64)


def test_bytes_changed_in_the_cache_are_refused(tmp_path, monkeypatch):
    """Bytes of a prepared cache overwritten after it was built (even with its mtime restored) -> refused on open, naming the directory; a copy with new times but the same bytes is read"""
    from pipelines.datasets import cache as cache_mod
    monkeypatch.setattr(cache_mod, "CHECK_CHUNK", 4096)  # several chunks in a tiny cache
    arrays = cache_mod.PreparedArrays(tmp_path / "cache", "test", {"n": 1})
    images, _ = arrays.get((16, 16, 16, 3), _fill)
    expected = np.array(images)
    path = arrays.path / "images.npy"
    st = path.stat()
    with open(path, "r+b") as f:  # one byte, in the middle of the file
        f.seek(st.st_size // 2)
        byte = f.read(1)
        f.seek(st.st_size // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # a change that size and mtime alone would miss
    with pytest.raises(DataError, match=r"was changed after it was built \(bytes 4,096\+ differ"):
        arrays.load()
    with open(path, "r+b") as f:  # put it back, then touch: a full check, and the bytes match
        f.seek(st.st_size // 2)
        f.write(byte)
    os.utime(path)
    images, labels = arrays.load()
    np.testing.assert_array_equal(images, expected)
    (arrays.path / "labels.npy").write_bytes((arrays.path / "labels.npy").read_bytes()[:-8] + bytes(8 * [1]))
    with pytest.raises(DataError, match="labels.npy"):
        arrays.load()


def test_a_large_cache_is_checked_on_sampled_chunks(tmp_path, monkeypatch):
    """Above CHECK_ALL_BYTES, an unchanged cache (same size and mtime) is checked on a few chunks, first and last included"""
    from pipelines.datasets import cache as cache_mod
    monkeypatch.setattr(cache_mod, "CHECK_CHUNK", 1024)
    monkeypatch.setattr(cache_mod, "CHECK_ALL_BYTES", 4096)
    arrays = cache_mod.PreparedArrays(tmp_path / "cache", "test", {"n": 2})
    arrays.get((16, 16, 16, 3), _fill)
    seen = []
    original = cache_mod.file_checksums
    monkeypatch.setattr(cache_mod, "file_checksums", lambda p, chunks=None: seen.append(chunks) or original(p, chunks))
    arrays.load()
    n_chunks = -(-(arrays.path / "images.npy").stat().st_size // 1024)
    assert seen[0][0] == 0 and seen[0][-1] == n_chunks - 1 and 2 <= len(seen[0]) <= cache_mod.CHECK_SAMPLED + 2
