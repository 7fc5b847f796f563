"""Domain classifier: a small ResNet used for rejection sampling and as the `domain` feature extractor.

Images go in as float tensors in [-1, 1], NCHW (uint8 images are accepted by `predict_proba`).
The penultimate features (global average pool of the last stage) feed FD/KID/precision-recall;
the logits feed the Inception-Score analogue and the rejection sampler.
"""
from __future__ import annotations

import hashlib
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from vqvae2.pretrained import PretrainedMixin

from .config import ClassifierConfig



# blocks

class StridedPointwise(nn.Conv2d):
    """A 1x1 convolution with a stride, computed as subsampling then a stride-1 1x1 convolution: the same
    values and parameters, but it avoids oneDNN's AVX2 weight-gradient kernel for strided 1x1
    convolutions on channels-last inputs with 2-7 channels, which writes out of bounds
    (benchmarks/onednn_fault.py)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, bias: bool = False):
        super().__init__(in_ch, out_ch, 1, bias=bias)
        self.step = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x[:, :, ::self.step, ::self.step], self.weight, self.bias)


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus a (projected when the shape changes) shortcut, then ReLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(StridedPointwise(in_ch, out_ch, stride),
                                          nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return F.relu(h + self.shortcut(x))


class Classifier(nn.Module, PretrainedMixin):
    config_class = ClassifierConfig
    model_type = "classifier"

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = config
        c0 = config.channels[0]
        s = config.stem_stride
        self.stem = nn.Sequential(nn.Conv2d(config.in_channels, c0, 3 if s == 1 else 2 * s, stride=s,
                                            padding=1 if s == 1 else s // 2, bias=False),
                                  nn.BatchNorm2d(c0), nn.ReLU())
        blocks, in_ch = [], c0
        for i, ch in enumerate(config.channels):
            for j in range(config.blocks_per_stage):
                blocks.append(BasicBlock(in_ch, ch, stride=2 if (i > 0 and j == 0) else 1))
                in_ch = ch
        self.blocks = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(in_ch, config.num_classes)

    @property
    def feature_dim(self) -> int:
        return self.config.channels[-1]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (B, D), D = channels[-1]."""
        if x.dim() != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"classifier expects images (B, {self.config.in_channels}, H, W) in [-1, 1], "
                             f"got shape {tuple(x.shape)}")
        if self.config.crop < 1:  # the centred square of cropped_size / image_size of each side
            side = round(min(x.shape[-2:]) * self.config.cropped_size / self.config.image_size)
            top, left = (x.shape[-2] - side) // 2, (x.shape[-1] - side) // 2
            x = x[..., top:top + side, left:left + side]
        h = self.blocks(self.stem(x))  # (B, C, H', W')
        return h.mean(dim=(2, 3))  # (B, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))  # (B, num_classes) logits


# helpers

def weights_hash(model: nn.Module) -> str:
    """First 12 hex chars of sha256 over the state dict: each tensor's name, dtype, shape and bytes, keys sorted."""
    h = hashlib.sha256()
    for key, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:12]


def to_model_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 images in [0, 255] -> float in [-1, 1]; float images are passed through."""
    if images.dtype == torch.uint8:
        return images.float() / 127.5 - 1.0
    return images.float()


@torch.no_grad()
def _batched(model: Classifier, images: torch.Tensor, batch_size: int, head, width: int) -> torch.Tensor:
    """head(model, batch) over images in chunks, float32 on CPU, in eval mode (the model's mode restored)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    images = torch.as_tensor(images)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        out = [head(model, to_model_input(chunk).to(device)).float().cpu() for chunk in images.split(batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, width)


def predict_proba(model: Classifier, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Class probabilities (N, num_classes), float32 on CPU, in eval mode; images uint8 or float in [-1, 1]."""
    return _batched(model, images, batch_size, lambda m, x: m(x).float().softmax(dim=1), model.config.num_classes)


def predict_features(model: Classifier, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Penultimate features (N, feature_dim), float32 on CPU, in eval mode; images uint8 or float in [-1, 1]."""
    return _batched(model, images, batch_size, Classifier.features, model.feature_dim)


@torch.no_grad()
def evaluate_accuracy(model: Classifier, loader: Iterable) -> float:
    """Top-1 accuracy over a loader yielding (images in [-1, 1] or uint8, labels)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = total = 0
    try:
        for batch in loader:
            images, labels = batch[0], batch[1]
            pred = model(to_model_input(images).to(device)).argmax(dim=1).cpu()
            correct += int((pred == torch.as_tensor(labels).cpu()).sum())
            total += len(labels)
    finally:
        model.train(was_training)
    if total == 0:
        raise ValueError("evaluate_accuracy got an empty loader")
    return correct / total
