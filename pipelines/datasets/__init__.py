"""Datasets of the pipeline, one module per source: embedded synthetic faces (``synthetic``, drawn
by ``faces``), Fashion-MNIST, CIFAR-10 (binary version), image folders; ``cache`` keeps prepared
images on disk.

Every dataset yields ``(image, label)``: ``image`` is a float32 tensor ``(C, size, size)`` in
[-1, 1] and ``label`` an int64 scalar tensor (-1 when the dataset has no labels). Every dataset
object has ``channels`` (1 or 3), ``num_classes`` (0 when unlabelled) and ``class_names``.

``build_datasets(DataConfig(...))`` returns ``(train, val)``; both splits are reproducible.
"""
from __future__ import annotations

from torch.utils.data import Dataset

from .arrays import ArrayImageDataset, label_tensor, to_tensor
from .cache import PreparedArrays
from .cifar10 import CIFAR10_CLASSES, build_cifar10, download_cifar10, read_cifar10_bin
from .config import DATASET_NAMES, DataConfig, DataError
from .fashion_mnist import FASHION_MNIST_CLASSES, FASHION_MNIST_DEFAULT_ROOT, build_fashion_mnist, read_idx
from .faces import FACE_CLASS_NAMES, RENDERER_VERSION, face_attributes, render_face
from .folder import (IMAGE_EXTENSIONS, ImageFolderDataset, build_folder, folder_class_names, list_image_files,
                     load_image_rgb, resize_center_crop)
from .synthetic import VAL_INDEX_OFFSET, SyntheticFaces

__all__ = [
    "DATASET_NAMES", "DataConfig", "DataError", "build_datasets", "SyntheticFaces", "ArrayImageDataset",
    "ImageFolderDataset", "PreparedArrays", "render_face", "face_attributes", "read_idx", "read_cifar10_bin",
    "download_cifar10", "folder_class_names", "list_image_files", "load_image_rgb", "resize_center_crop", "to_tensor", "label_tensor",
    "FACE_CLASS_NAMES", "RENDERER_VERSION", "VAL_INDEX_OFFSET", "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DEFAULT_ROOT", "CIFAR10_CLASSES", "IMAGE_EXTENSIONS",
]


def build_datasets(cfg: DataConfig) -> tuple[Dataset, Dataset]:
    """Return the ``(train, val)`` datasets described by ``cfg``."""
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
