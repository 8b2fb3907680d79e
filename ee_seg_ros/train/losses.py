"""Losses of the three training stages."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..data.labels import IGNORE


def class_weights(labels: list[np.ndarray], num_classes: int) -> torch.Tensor:
    """Square root of median-frequency balancing: full median frequency (weights 50x apart on
    CamVid) made the measured baseline over-predict rare classes."""
    counts = np.zeros(num_classes, dtype=np.float64)
    for lbl in labels:
        counts += np.bincount(lbl[lbl != IGNORE].ravel(), minlength=num_classes)[:num_classes]
    freq = counts / max(counts.sum(), 1.0)
    present = freq > 0
    med = np.median(freq[present]) if present.any() else 1.0
    weights = np.where(present, np.sqrt(med / np.maximum(freq, 1e-12)), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def downsample_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest label at each cell centre of a coarser grid."""
    h, w = labels.shape[-2:]
    ys = (torch.arange(size[0]) * h // size[0] + h // (2 * size[0])).clamp(max=h - 1)
    xs = (torch.arange(size[1]) * w // size[1] + w // (2 * size[1])).clamp(max=w - 1)
    return labels[:, ys][:, :, xs]


def seg_ce(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Class-weighted CE at the labels' resolution (logits upsampled), void ignored."""
    if logits.shape[-2:] != labels.shape[-2:]:
        logits = F.interpolate(logits, size=labels.shape[-2:], mode='bilinear',
                               align_corners=False)
    return F.cross_entropy(logits, labels.long(), weight=weight, ignore_index=IGNORE)


def exit_distillation(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor,
                      weight: torch.Tensor) -> torch.Tensor:
    """MESS stage 2: soft targets from the final decoder on the pixels it gets right (and on
    void), class-weighted CE on the pixels it gets wrong. All at the student's resolution."""
    size = student.shape[-2:]
    t_prob = F.adaptive_avg_pool2d(torch.softmax(teacher, 1), size)
    lbl = downsample_labels(labels, size).long()
    right = (t_prob.argmax(1) == lbl) | (lbl == IGNORE)
    logp = torch.log_softmax(student, 1)
    kd = -(t_prob * logp).sum(1)
    ce = F.nll_loss(logp, lbl.masked_fill(right, IGNORE), weight=weight, ignore_index=IGNORE,
                    reduction='none')
    w_wrong = weight[lbl.masked_fill(right, 0)]
    return (kd * right).sum() / right.numel() + (ce.sum() / w_wrong[~right].sum().clamp(min=1)
                                                  if (~right).any() else 0.0 * ce.sum())


def token_distillation(token_logits: torch.Tensor, teacher: torch.Tensor,
                       grid: tuple[int, int]) -> torch.Tensor:
    """The per-token classifier (whose confidence drives stopping) learns the final decoder's
    class mix over its patch, so its confidence means 'the final answer is settled here'."""
    t_prob = F.adaptive_avg_pool2d(torch.softmax(teacher, 1), grid).flatten(2).transpose(1, 2)
    return -(t_prob * torch.log_softmax(token_logits, -1)).sum(-1).mean()
