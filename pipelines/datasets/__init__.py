"""Datasets of the pipeline, one module per source: embedded synthetic faces (``synthetic``, drawn
by ``faces``), Fashion-MNIST, CIFAR-10 (binary version), image folders; ``cache`` keeps prepared
images on disk.

Every dataset yields ``(image, label)``: ``image`` is a float32 tensor ``(C, size, size)`` in
[-1, 1] and ``label`` an int64 scalar tensor (-1 when the dataset has no labels). Every dataset
object has ``channels`` (1 or 3), ``num_classes`` (0 when unlabelled) and ``class_names``.

``build_datasets(DataConfig(...))`` returns ``(train, val)``; both splits are reproducible.
"""
from __future__ import annotations

import importlib

# name -> the submodule that defines it: imported on first use, so that the torch-free parts (the data's
# configuration, which the pipeline's configuration checks before any work) load without torch
_HOME = {
    "ArrayImageDataset": "arrays", "label_tensor": "arrays", "to_tensor": "arrays", "PreparedArrays": "cache",
    "CIFAR10_CLASSES": "cifar10", "build_cifar10": "cifar10", "download_cifar10": "cifar10",
    "read_cifar10_bin": "cifar10", "DATASET_NAMES": "config", "DataConfig": "config", "DataError": "config",
    "FASHION_MNIST_CLASSES": "fashion_mnist", "FASHION_MNIST_DEFAULT_ROOT": "fashion_mnist",
    "build_fashion_mnist": "fashion_mnist", "read_idx": "fashion_mnist", "FACE_CLASS_NAMES": "faces",
    "RENDERER_VERSION": "faces", "face_attributes": "faces", "render_face": "faces", "IMAGE_EXTENSIONS": "folder",
    "ImageFolderDataset": "folder", "build_folder": "folder", "folder_class_names": "folder",
    "list_image_files": "folder", "load_image_rgb": "decode", "resize_center_crop": "decode",
    "VAL_INDEX_OFFSET": "synthetic", "SyntheticFaces": "synthetic",
}
__all__ = ["build_datasets", *_HOME]


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)


def build_datasets(cfg):
    """Return the ``(train, val)`` datasets described by ``cfg`` (a DataConfig)."""
    from .cifar10 import build_cifar10
    from .fashion_mnist import build_fashion_mnist
    from .folder import build_folder
    from .synthetic import SyntheticFaces
    if cfg.name == "synthetic-faces":
        cache, workers = cfg.cache_root(), cfg.worker_count()
        return (
            SyntheticFaces(cfg.n_train, cfg.size, cfg.seed, "train", cache, workers),
            SyntheticFaces(cfg.n_val, cfg.size, cfg.seed, "val", cache, workers),
        )
    if cfg.name == "fashion-mnist":
        return build_fashion_mnist(cfg)
    if cfg.name == "folder":
        return build_folder(cfg)
    if cfg.name == "cifar10":
        return build_cifar10(cfg)
    raise AssertionError(cfg.name)  # unreachable: DataConfig validated the name
