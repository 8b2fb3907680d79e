"""Evaluation of operating points on a labelled split, and the interleaved sweep behind
``ee-seg eval``, ``ee-seg calibrate`` and ``ee-seg bench``.

Several policies are compared frame by frame in one process, in a shuffled order per frame,
after a warm-up, so latency ratios between them are not skewed by drift in machine load.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from .metrics import ConfusionMatrix
from .runtime import Segmenter


@dataclass
class PolicyStats:
    """Everything measured for one policy over a split."""

    spec: str
    confusion: ConfusionMatrix
    latency_ms: list[float] = field(default_factory=list)
    gmacs: list[float] = field(default_factory=list)
    exits: list[int] = field(default_factory=list)
    stopped: list[float] = field(default_factory=list)
    guard_stops: int = 0

    def add(self, result, label: np.ndarray) -> None:
        self.confusion.update(result.labels, label)
        self.latency_ms.append(result.latency_ms)
        self.gmacs.append(result.gmacs)
        self.exits.append(result.exit_taken)
        self.stopped.append(result.stopped_fraction[-1] if result.stopped_fraction else 0.0)
        self.guard_stops += int(result.guard_stop)

    def summary(self, class_names: Sequence[str], num_exits: int) -> dict:
        iou = self.confusion.per_class_iou()
        lat = np.asarray(self.latency_ms)
        hist = np.bincount(np.asarray(self.exits, dtype=np.int64), minlength=num_exits + 1)
        keys = [f'exit{i}' for i in range(num_exits)] + ['final']
        return {
            'policy': self.spec,
            'frames': len(self.latency_ms),
            'miou': round(self.confusion.miou() * 100, 3),
            'per_class_iou': {n: (None if np.isnan(v) else round(float(v) * 100, 3))
                              for n, v in zip(class_names, iou)},
            'pixel_accuracy': round(self.confusion.pixel_accuracy() * 100, 3),
            'gmacs_mean': round(float(np.mean(self.gmacs)), 4) if self.gmacs else None,
            'latency_ms_mean': round(float(lat.mean()), 3) if lat.size else None,
            'latency_ms_p50': round(float(np.percentile(lat, 50)), 3) if lat.size else None,
            'latency_ms_p95': round(float(np.percentile(lat, 95)), 3) if lat.size else None,
            'latency_ms_p99': round(float(np.percentile(lat, 99)), 3) if lat.size else None,
            'exit_histogram': {k: int(v) for k, v in zip(keys, hist)},
            'stopped_fraction_mean': round(float(np.mean(self.stopped)), 4)
            if self.stopped else None,
            'guard_stops': self.guard_stops,
        }


def sweep(segmenter: Segmenter, frames: Sequence, policies: Sequence[str], warmup: int = 2,
          seed: int = 0, progress: bool = True, desc: str = 'frames') -> dict[str, PolicyStats]:
    """Run every policy on every frame, interleaved in a shuffled order per frame.

    ``frames[i]`` is (RGB image, label ids); labels must match the image size.
    """
    resolved = {p: segmenter.resolve(p) for p in policies}
    stats = {p: PolicyStats(p, ConfusionMatrix(segmenter.num_classes)) for p in policies}
    if len(frames) == 0:
        raise ValueError('no frames to evaluate')
    first, _ = frames[0]
    for _ in range(warmup):
        for p in policies:
            segmenter.segment(first, resolved[p], want_exit_map=False)
    rng = np.random.default_rng(seed)
    order = list(policies)
    for i in tqdm(range(len(frames)), desc=desc, disable=not progress, dynamic_ncols=True):
        image, label = frames[i]
        if label.shape != image.shape[:2]:
            raise ValueError(f'frame {i}: label {label.shape} does not match image '
                             f'{image.shape[:2]}')
        rng.shuffle(order)
        for p in order:
            stats[p].add(segmenter.segment(image, resolved[p], want_exit_map=False), label)
    return stats


def format_table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """A plain Markdown table (also readable in a terminal)."""
    head = '| ' + ' | '.join(title for _, title in columns) + ' |'
    rule = '|' + '|'.join('---' for _ in columns) + '|'
    lines = [head, rule]
    for row in rows:
        cells = []
        for key, _ in columns:
            v = row.get(key)
            cells.append(f'{v:.2f}' if isinstance(v, float) else str(v))
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)
