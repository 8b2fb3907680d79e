"""Training augmentation on uint8 arrays: scale, crop, flip, colour."""

from __future__ import annotations

import cv2
import numpy as np

from .labels import IGNORE


def augment(image: np.ndarray, label: np.ndarray, crop: tuple[int, int],
            scale: tuple[float, float], rng: np.random.Generator,
            jitter: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """Random rescale, crop (padded with IGNORE), horizontal flip and colour jitter."""
    s = rng.uniform(*scale)
    h, w = label.shape
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    label = cv2.resize(label, (nw, nh), interpolation=cv2.INTER_NEAREST)
    ch, cw = crop
    ph, pw = max(0, ch - nh), max(0, cw - nw)
    if ph or pw:
        image = cv2.copyMakeBorder(image, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        label = cv2.copyMakeBorder(label, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=IGNORE)
    y = rng.integers(0, image.shape[0] - ch + 1)
    x = rng.integers(0, image.shape[1] - cw + 1)
    image, label = image[y:y + ch, x:x + cw], label[y:y + ch, x:x + cw]
    if rng.random() < 0.5:
        image, label = image[:, ::-1], label[:, ::-1]
    img = image.astype(np.float32)
    gray = img.mean(axis=2, keepdims=True)
    img = gray + (img - gray) * rng.uniform(1 - jitter, 1 + jitter)          # saturation
    img = (img - img.mean()) * rng.uniform(1 - jitter, 1 + jitter) + img.mean()  # contrast
    img = img * rng.uniform(1 - jitter, 1 + jitter)                             # brightness
    return np.clip(img, 0, 255).astype(np.uint8), np.ascontiguousarray(label)
