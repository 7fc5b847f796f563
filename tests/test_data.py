import copy
import dataclasses
import gzip
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.datasets import (
    FACE_CLASS_NAMES,
    DataConfig,
    DataError,
    ImageFolderDataset,
    PreparedArrays,
    SyntheticFaces,
    build_datasets,
    face_attributes,
    list_image_files,
    render_face,
)
from pipelines.datasets import synthetic


# ----------------------------------------------------------------------------- synthetic faces


def test_faces_deterministic_and_distinct():
    a = render_face(3, 7, 32)
    assert np.array_equal(a, render_face(3, 7, 32))
    assert not np.array_equal(a, render_face(3, 8, 32))
    assert not np.array_equal(a, render_face(4, 7, 32))
    ds1, ds2 = SyntheticFaces(4, 32, seed=1), SyntheticFaces(4, 32, seed=1)
    assert torch.equal(ds1[2][0], ds2[2][0]) and ds1[2][1] == ds2[2][1]
    val = SyntheticFaces(4, 32, seed=1, split="val")
    assert not torch.equal(ds1[0][0], val[0][0])


@pytest.mark.parametrize("size", [32, 64])
def test_faces_shape_range(size):
    train, val = build_datasets(DataConfig(size=size, n_train=3, n_val=2))
    assert len(train) == 3 and len(val) == 2
    x, y = train[0]
    assert x.shape == (3, size, size) and x.dtype == torch.float32
    assert -1.0 <= x.min() and x.max() <= 1.0 and x.std() > 0.1
    assert y.dtype == torch.int64 and 0 <= int(y) < train.num_classes
    assert train.channels == 3 and train.class_names == FACE_CLASS_NAMES


def test_faces_classes_all_occur():
    ds = SyntheticFaces(256, 16, seed=0)
    _, labels = ds.materialize()
    assert ds.num_classes >= 4
    assert set(labels.tolist()) == set(range(ds.num_classes))


@pytest.mark.parametrize("size", [8, 17, 32, 128])
def test_face_has_the_size_asked_for(size):
    img = render_face(5, 2, size)
    assert img.shape == (size, size, 3) and img.dtype == np.uint8
    assert np.array_equal(img, render_face(5, 2, size))


def test_face_is_the_same_face_at_every_size():
    def at_32(img):
        return np.asarray(Image.fromarray(img).resize((32, 32), Image.LANCZOS), np.float64)

    small = render_face(0, 3, 32).astype(np.float64)
    assert np.abs(at_32(render_face(0, 3, 128)) - small).mean() < 6  # measured: about 1.5 (of 255)
    assert np.abs(at_32(render_face(0, 4, 128)) - small).mean() > 25  # another face: about 70


def _refuse_to_render(*args):
    raise RuntimeError("rendered although the cache holds these images")


def test_faces_cache_holds_the_rendered_faces_and_is_keyed_by_rendering_parameters(tmp_path, monkeypatch):
    ds = SyntheticFaces(5, 16, seed=2, cache_dir=tmp_path)
    for i in range(5):
        assert np.array_equal(ds.image_uint8(i), render_face(2, i, 16))
        assert int(ds[i][1]) == face_attributes(2, i)["label"]
    assert not ds.image_uint8(0).flags.writeable  # read-only, memory-mapped
    monkeypatch.setattr(synthetic, "render_labelled", _refuse_to_render)
    again = SyntheticFaces(5, 16, seed=2, cache_dir=tmp_path)
    assert torch.equal(again[4][0], ds[4][0]) and again.cache.path == ds.cache.path
    clone = copy.deepcopy(again)  # as for spawned DataLoader workers: the cache is reopened, not copied
    assert isinstance(clone._images, np.memmap) and torch.equal(clone[4][0], ds[4][0])
    for changed in (dict(size=24), dict(seed=3), dict(split="val"), dict(n=6)):
        with pytest.raises(RuntimeError, match="rendered"):
            SyntheticFaces(**{**dict(n=5, size=16, seed=2, cache_dir=tmp_path), **changed})
    monkeypatch.setattr(synthetic, "RENDERER_VERSION", 1000)  # the renderer changed
    with pytest.raises(RuntimeError, match="rendered"):
        SyntheticFaces(5, 16, seed=2, cache_dir=tmp_path)


@pytest.mark.parametrize("channels,stored,size", [(1, 8, 8), (1, 8, 6), (3, 12, 8), (3, 8, 8)])
def test_batched_items_equal_items_one_by_one(channels, stored, size):
    """__getitems__ (one conversion per batch) gives exactly what __getitem__ gives per item."""
    from pipelines.datasets.arrays import ArrayImageDataset
    rng = np.random.default_rng(0)
    shape = (6, stored, stored) if channels == 1 else (6, stored, stored, channels)
    ds = ArrayImageDataset(rng.integers(0, 256, shape, dtype=np.uint8), [0, 1, 2, 0, 1, 2], ["a", "b", "c"], size)
    for (x, y), i in zip(ds.__getitems__([4, 0, 5]), [4, 0, 5]):
        want_x, want_y = ds[i]
        assert x.shape == (channels, size, size) and torch.equal(x, want_x) and torch.equal(y, want_y)


def test_cached_faces_batched_items_equal_items_one_by_one(tmp_path):
    ds = SyntheticFaces(5, 12, seed=3, cache_dir=tmp_path)
    for (x, y), i in zip(ds.__getitems__([3, 1]), [3, 1]):
        assert torch.equal(x, ds[i][0]) and torch.equal(y, ds[i][1])


def test_faces_rendered_by_worker_processes_equal_faces_rendered_in_process(tmp_path):
    n = synthetic.CHUNK + 6  # two chunks: two worker processes
    pooled = SyntheticFaces(n, 8, seed=1, split="val", cache_dir=tmp_path, workers=2)
    images, labels = SyntheticFaces(n, 8, seed=1, split="val").materialize()
    assert np.array_equal(pooled.materialize()[0], images) and np.array_equal(pooled.materialize()[1], labels)


def test_data_cache_options(tmp_path):
    assert DataConfig().cache_root() == Path(os.environ["VQVAE2_CACHE"])  # tests point it at a temporary directory
    assert DataConfig(cache_dir=str(tmp_path)).cache_root() == tmp_path and DataConfig(cache=False).cache_root() is None
    train, _ = build_datasets(DataConfig(size=8, n_train=3, n_val=2, cache_dir=str(tmp_path)))
    assert train.cache.path.parent == tmp_path
    lazy, _ = build_datasets(DataConfig(size=8, n_train=3, n_val=2, cache=False))
    assert lazy.cache is None and torch.equal(lazy[2][0], train[2][0])


# ----------------------------------------------------------------------------- prepared-array cache


def _fill(value, calls):
    def fill(images, path):
        calls.append(path)
        images[:] = value
        return np.arange(len(images))
    return fill


def test_prepared_arrays_built_once_per_key(tmp_path):
    key = {"dataset": "x", "size": 4}
    calls = []
    images, labels = PreparedArrays(tmp_path, "x", key).get((3, 4, 4, 3), _fill(7, calls))
    assert images.shape == (3, 4, 4, 3) and images.dtype == np.uint8 and (images == 7).all()
    assert not images.flags.writeable and labels.tolist() == [0, 1, 2]
    same, _ = PreparedArrays(tmp_path, "x", dict(reversed(key.items()))).get((3, 4, 4, 3), _fill(9, calls))
    assert len(calls) == 1 and (same == 7).all()
    other = PreparedArrays(tmp_path, "x", {**key, "size": 5})
    assert (other.get((3, 4, 4, 3), _fill(9, calls))[0] == 9).all() and len(calls) == 2
    meta = json.loads((other.path / "meta.json").read_text())
    assert set(meta) == {"key", "shape", "checksums"}
    assert meta["key"] == {"dataset": "x", "size": 5} and meta["shape"] == [3, 4, 4, 3]
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == sorted(
        [other.path.name, PreparedArrays(tmp_path, "x", key).path.name])


@pytest.mark.reliability
def test_prepared_arrays_interrupted_build(tmp_path):
    """Cache build interrupted half-way, or left behind by a killed process -> nothing is read from it; the next build redoes it and removes the leftovers"""
    cache = PreparedArrays(tmp_path, "x", {"n": 2})

    def interrupted(images, path):
        images[0] = 1
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.get((2, 2, 2, 1), interrupted)
    assert cache.load() is None and not [p for p in tmp_path.iterdir() if not p.name.endswith(".lock")]
    leftover = tmp_path / f".{cache.path.name}.tmp-killed"
    leftover.mkdir()
    (leftover / "images.npy").write_bytes(b"half")
    images, _ = cache.get((2, 2, 2, 1), _fill(3, []))
    assert (images == 3).all() and not leftover.exists()


@pytest.mark.reliability
def test_prepared_arrays_damaged(tmp_path):
    """Cache directory with a truncated images.npy, or a meta.json of another key -> error naming the directory"""
    cache = PreparedArrays(tmp_path, "x", {"n": 4})
    cache.get((4, 8, 8, 3), _fill(5, []))
    meta = cache.path / "meta.json"
    meta.write_text(json.dumps({"key": {"n": 5}, "shape": [4, 8, 8, 3]}))
    with pytest.raises(DataError, match=str(cache.path)):
        cache.load()
    images = cache.path / "images.npy"
    images.write_bytes(images.read_bytes()[:300])
    with pytest.raises(DataError, match="delete that directory") as e:
        PreparedArrays(tmp_path, "x", {"n": 4}).get((4, 8, 8, 3), _fill(5, []))
    assert str(cache.path) in str(e.value)


@pytest.mark.reliability
def test_prepared_arrays_root_not_a_directory(tmp_path):
    """data.cache_dir naming a file, not a directory -> error naming it and the options to change"""
    root = tmp_path / "not-a-dir"
    root.write_text("x")
    with pytest.raises(DataError, match="data.cache_dir") as e:
        build_datasets(DataConfig(size=8, n_train=2, n_val=2, cache_dir=str(root)))
    assert str(root) in str(e.value)


# ----------------------------------------------------------------------------- fashion-mnist


def _write_idx(path, arr):
    arr = np.asarray(arr, np.uint8)
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.tobytes())


def _fake_fmnist(root, n_train=5, n_test=3):
    rng = np.random.default_rng(0)
    _write_idx(root / "train-images-idx3-ubyte.gz", rng.integers(1, 256, (n_train, 28, 28)))
    _write_idx(root / "train-labels-idx1-ubyte.gz", np.arange(n_train) % 10)
    _write_idx(root / "t10k-images-idx3-ubyte.gz", rng.integers(1, 256, (n_test, 28, 28)))
    _write_idx(root / "t10k-labels-idx1-ubyte.gz", [9, 0, 1][:n_test])


def test_fashion_mnist_reader(tmp_path):
    _fake_fmnist(tmp_path)
    train, val = build_datasets(DataConfig(name="fashion-mnist", root=str(tmp_path)))
    assert len(train) == 5 and len(val) == 3
    assert train.channels == 1 and train.num_classes == 10 and train.class_names[9] == "Ankle boot"
    x, y = train[3]
    assert x.shape == (1, 32, 32) and x.dtype == torch.float32
    assert torch.all(x[:, :2] == -1) and torch.all(x[:, -2:] == -1)
    assert torch.all(x[:, :, :2] == -1) and torch.all(x[:, :, -2:] == -1)
    assert torch.all(x[:, 2:30, 2:30] > -1)  # fake pixels are >= 1
    assert int(y) == 3 and y.dtype == torch.int64
    assert int(val[0][1]) == 9


@pytest.mark.reliability
def test_fashion_mnist_missing_and_bad(tmp_path):
    """Fashion-MNIST file missing, bad magic number, truncated or broken gzip -> error naming the file (and how to install the data)"""
    with pytest.raises(FileNotFoundError, match="apt-get install -y dataset-fashion-mnist") as e:
        build_datasets(DataConfig(name="fashion-mnist", root=str(tmp_path)))
    assert "train-images-idx3-ubyte.gz" in str(e.value) and str(tmp_path) in str(e.value)
    _fake_fmnist(tmp_path)
    bad = tmp_path / "train-labels-idx1-ubyte.gz"
    with gzip.open(bad, "wb") as f:
        f.write(b"\x00\x00\x08\x03" + b"\x00" * 20)  # wrong number of dims
    with pytest.raises(DataError, match="magic") as e:
        build_datasets(DataConfig(name="fashion-mnist", root=str(tmp_path)))
    assert str(bad) in str(e.value)
    img = tmp_path / "train-images-idx3-ubyte.gz"
    data = gzip.decompress(img.read_bytes())
    img.write_bytes(gzip.compress(data[:-100]))  # truncated payload
    with pytest.raises(DataError, match="truncated") as e:
        build_datasets(DataConfig(name="fashion-mnist", root=str(tmp_path)))
    assert str(img) in str(e.value)
    img.write_bytes(gzip.compress(data)[:50])  # truncated gzip stream
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz"):
        build_datasets(DataConfig(name="fashion-mnist", root=str(tmp_path)))


# ----------------------------------------------------------------------------- folders


def _mixed_modes(d):
    d.mkdir(parents=True, exist_ok=True)
    Image.new("L", (20, 12), 100).save(d / "grey.png")
    Image.new("LA", (12, 12), (50, 0)).save(d / "la.png")  # fully transparent -> white
    Image.new("RGB", (12, 12), (255, 0, 0)).convert("P").save(d / "pal.png")
    Image.new("RGBA", (12, 12), (0, 0, 255, 255)).save(d / "rgba.webp")
    Image.new("CMYK", (12, 12), (0, 0, 0, 0)).save(d / "cmyk.jpg")
    Image.fromarray(np.full((12, 12), 65535, np.uint16)).save(d / "grey16.png")
    Image.new("RGB", (40, 10), (0, 255, 0)).save(d / "wide.BMP")


@pytest.mark.reliability
def test_folder_labels_modes_upscale(tmp_path):
    """Images in modes L, LA, P, RGBA, CMYK, 16-bit grey, and smaller than data.size -> converted to RGB and upscaled, values checked"""
    _mixed_modes(tmp_path / "cats")
    _mixed_modes(tmp_path / "dogs" / "deep")
    cfg = DataConfig(name="folder", root=str(tmp_path), size=16, val_fraction=0.3, seed=1)
    train, val = build_datasets(cfg)
    assert len(train) + len(val) == 14 and len(val) >= 1 and len(train) >= 1
    assert train.class_names == ["cats", "dogs"] and train.num_classes == 2 and train.channels == 3
    t2, v2 = build_datasets(cfg)
    assert t2.files == train.files and v2.files == val.files  # reproducible
    assert train.validate() == []
    for ds in (train, val):
        for i in range(len(ds)):
            x, y = ds[i]
            assert x.shape == (3, 16, 16) and x.dtype == torch.float32
            assert -1 <= x.min() and x.max() <= 1
            assert int(y) == ds.class_names.index(ds.files[i].relative_to(tmp_path).parts[0])
    everything = ImageFolderDataset(train.files + val.files, [0] * 14, ["x"], 16)
    by_name = {f.name: everything[i][0] for i, f in enumerate(everything.files)}
    assert torch.allclose(by_name["la.png"], torch.ones(3, 16, 16))  # alpha over white
    assert torch.allclose(by_name["grey16.png"], torch.ones(3, 16, 16))  # 16-bit full scale
    assert torch.allclose(by_name["pal.png"][:, 8, 8], torch.tensor([1.0, -1.0, -1.0]))
    assert by_name["wide.BMP"][1].min() > 0.9  # 40x10 upscaled to 64x16 then cropped


@pytest.mark.reliability
def test_folder_unlabelled_and_bad_files(tmp_path):
    """Unreadable / non-image file in a folder -> error naming it, or skipped with a warning when data.skip_bad_files"""
    _mixed_modes(tmp_path)
    (tmp_path / "sub").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "sub" / "x.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    cfg = DataConfig(name="folder", root=str(tmp_path), size=8, val_fraction=0.01)
    with pytest.raises(DataError, match="bad.png"):  # every file is decoded when the datasets are built
        build_datasets(cfg)
    with pytest.warns(UserWarning, match="bad.png"):
        train, val = build_datasets(dataclasses.replace(cfg, skip_bad_files=True))
    assert train.num_classes == 0 and train.class_names == [] and len(train) + len(val) == 8
    ds = ImageFolderDataset(list_image_files(tmp_path), [-1] * 9, [], 8, root=str(tmp_path))
    k = ds.files.index(bad)
    with pytest.raises(DataError, match="bad.png"):
        ds[k]
    with pytest.raises(DataError, match="bad.png"):
        ds.validate()
    ds.skip_bad_files = True
    with pytest.warns(UserWarning, match="bad.png"):
        x, y = ds[k]
    assert x.shape == (3, 8, 8) and int(y) == -1
    with pytest.warns(UserWarning, match="bad.png"):
        assert [p for p, _ in ds.validate()] == [str(bad)]
    assert len(ds) == 8 and bad not in ds.files


@pytest.mark.reliability
def test_folder_truncated_png(tmp_path):
    """Truncated PNG in a folder -> error naming the file"""
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), np.uint8)).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    Image.new("RGB", (8, 8)).save(tmp_path / "ok.png")
    ds = ImageFolderDataset(sorted(tmp_path.iterdir()), [-1, -1], [], 8)
    with pytest.raises(DataError, match="t.png"):
        ds.validate()


@pytest.mark.reliability
def test_folder_missing_or_empty(tmp_path):
    """Missing or empty image folder -> error naming the directory"""
    with pytest.raises(FileNotFoundError, match="nope"):
        build_datasets(DataConfig(name="folder", root=str(tmp_path / "nope")))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("hi")
    with pytest.raises(FileNotFoundError, match="empty"):
        build_datasets(DataConfig(name="folder", root=str(tmp_path / "empty")))


@pytest.mark.reliability
def test_cifar10_missing(tmp_path):
    """CIFAR-10 files missing without data.download -> error saying how to get them"""
    with pytest.raises(FileNotFoundError, match="data.download=true"):
        build_datasets(DataConfig(name="cifar10", root=str(tmp_path)))


def _write_cifar_bin(path, labels, rng):
    """Records of the CIFAR-10 binary version: a label byte, then 1024 red, 1024 green, 1024 blue bytes."""
    planes = rng.integers(0, 256, (len(labels), 3, 32, 32), dtype=np.uint8)
    records = np.concatenate([np.asarray(labels, np.uint8)[:, None], planes.reshape(len(labels), -1)], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    records.tofile(path)
    return planes


def test_cifar10_binary_version_is_read_record_by_record(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-bin"
    planes = {}
    for i in range(1, 6):
        planes[i] = _write_cifar_bin(folder / f"data_batch_{i}.bin", [i, 9, 0], rng)
    test_planes = _write_cifar_bin(folder / "test_batch.bin", [3, 4], rng)
    train, val = build_datasets(DataConfig(name="cifar10", root=str(tmp_path), size=32))
    assert len(train) == 15 and len(val) == 2 and train.num_classes == 10 and train.class_names[0] == "airplane"
    assert train.labels.tolist()[:6] == [1, 9, 0, 2, 9, 0] and val.labels.tolist() == [3, 4]
    # pixel (row 5, column 7) of the second test image: its red, green and blue planes
    x, y = val[1]
    expected = test_planes[1, :, 5, 7].astype(np.float32) / 127.5 - 1
    assert int(y) == 4 and np.allclose(x[:, 5, 7].numpy(), expected)


@pytest.mark.reliability
def test_cifar10_pickle_version_is_refused_and_never_unpickled(tmp_path):
    """CIFAR-10's python (pickle) batches, crafted to run code -> refused with how to get the binary version; nothing runs"""
    import pickle

    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in ["data_batch_1", "test_batch", "batches.meta"]:
        (folder / name).write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(ValueError, match="cifar-10-binary.tar.gz"):
        build_datasets(DataConfig(name="cifar10", root=str(tmp_path)))
    assert not marker.exists()
    # a truncated binary batch is named
    _write_cifar_bin(tmp_path / "cifar-10-batches-bin" / "test_batch.bin", [1], np.random.default_rng(1))
    for i in range(1, 6):
        _write_cifar_bin(tmp_path / "cifar-10-batches-bin" / f"data_batch_{i}.bin", [1], np.random.default_rng(i))
    bad = tmp_path / "cifar-10-batches-bin" / "data_batch_3.bin"
    bad.write_bytes(bad.read_bytes()[:-5])
    with pytest.raises(ValueError, match="data_batch_3.bin"):
        build_datasets(DataConfig(name="cifar10", root=str(tmp_path)))


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(name="imagenet"), "data.name must be one of .*synthetic-faces.*fashion-mnist.*folder.*cifar10"),
        (dict(name="cifar"), "did you mean 'cifar10'"),
        (dict(size=4), "data.size must be between"),
        (dict(size=32.0), "data.size must be an integer"),
        (dict(n_train=0), "data.n_train"),
        (dict(n_val=-1), "data.n_val"),
        (dict(val_fraction=1.0), "data.val_fraction"),
        (dict(seed=-1), "data.seed"),
        (dict(name="folder"), "data.root is required"),
        (dict(name="cifar10"), "data.root is required"),
        (dict(skip_bad_files="yes"), "data.skip_bad_files"),
        (dict(download=1), "data.download"),
        (dict(cache="no"), "data.cache must be true or false"),
        (dict(cache_dir=3), "data.cache_dir must be a path string"),
        (dict(workers=-1), "data.workers must be between 0"),
    ],
)
@pytest.mark.reliability
def test_config_validation(kwargs, match):
    """Bad data.* values (unknown dataset, size, fractions, types) -> error naming the key"""
    with pytest.raises(ValueError, match=match):
        DataConfig(**kwargs)
