"""Datasets of the pipeline: the names of ``pipelines.datasets``, kept importable from here."""
from .datasets import *  # noqa: F401,F403
from .datasets import __all__  # noqa: F401
from .datasets.cifar10 import CIFAR10_DIR, CIFAR10_FILES, CIFAR10_MD5, CIFAR10_URL  # noqa: F401
from .datasets.config import MAX_SIZE, MIN_SIZE  # noqa: F401
from .datasets.faces import HAIR_STYLES, MOUTHS  # noqa: F401
from .datasets.fashion_mnist import _IDX_FILES, _find_idx  # noqa: F401 (main's preflight checks use them)
