"""Segmentation metrics from one confusion matrix accumulated over a whole split."""

from __future__ import annotations

import numpy as np

from .data.labels import IGNORE


class ConfusionMatrix:
    def __init__(self, num_classes: int) -> None:
        self.k = num_classes
        self.mat = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, pred: np.ndarray, label: np.ndarray) -> None:
        if pred.shape != label.shape:
            raise ValueError(f'prediction {pred.shape} and label {label.shape} differ in size')
        keep = label != IGNORE
        idx = label[keep].astype(np.int64) * self.k + pred[keep].astype(np.int64)
        self.mat += np.bincount(idx, minlength=self.k * self.k).reshape(self.k, self.k)

    def per_class_iou(self) -> np.ndarray:
        """IoU per class; NaN for a class absent from both labels and predictions."""
        tp = np.diag(self.mat).astype(np.float64)
        denom = self.mat.sum(0) + self.mat.sum(1) - tp
        with np.errstate(invalid='ignore', divide='ignore'):
            return np.where(denom > 0, tp / denom, np.nan)

    def miou(self) -> float:
        iou = self.per_class_iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float('nan')

    def pixel_accuracy(self) -> float:
        total = self.mat.sum()
        return float(np.trace(self.mat) / total) if total else float('nan')
