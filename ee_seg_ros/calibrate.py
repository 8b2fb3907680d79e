"""Calibration of a trained bundle: CBT class thresholds from training statistics, and the
operating-point profile (Pareto-optimal settings with GMACs, latency here, and mIoU).

CBT needs only a trained model and its training set (docs/methods.md), so thresholds are computed
post hoc. The profile is what the controller chooses from at run time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from .bundle import update_bundle
from .data.labels import IGNORE
from .evaluate import PolicyStats, sweep
from .model import MultiExitSegmenter, class_margins
from .points import machine_description, pareto_front, sweep_policies
from .runtime import Segmenter


@torch.no_grad()
def cbt_statistics(segmenter: Segmenter, frames: Sequence, progress: bool = True) -> dict:
    """p[n, k] of CBT: mean exit-n softmax over training pixels of class k.

    Stop decisions are per token, so each token's softmax counts once per labelled pixel of
    its patch: the pixel-level mean of the token-level prediction.
    """
    model: MultiExitSegmenter = segmenter.model
    k, e, patch = model.cfg.num_classes, model.cfg.num_exits, model.cfg.patch
    sums = np.zeros((e, k, k), dtype=np.float64)
    pixels = np.zeros(k, dtype=np.float64)
    for i in tqdm(range(len(frames)), desc='CBT statistics', disable=not progress):
        image, label = frames[i]
        out = model.forward_train(segmenter.preprocess(image))
        h, w = label.shape
        ph, pw = h + (-h) % patch, w + (-w) % patch
        padded = np.full((ph, pw), IGNORE, dtype=np.uint8)
        padded[:h, :w] = label
        gw = pw // patch
        ys, xs = np.divmod(np.arange(ph * pw), pw)
        token = (ys // patch) * gw + xs // patch
        lbl = padded.ravel()
        keep = lbl != IGNORE
        n_tok = (ph // patch) * gw
        counts = np.bincount(token[keep] * k + lbl[keep], minlength=n_tok * k).reshape(n_tok, k)
        pixels += counts.sum(0)
        for n, tl in enumerate(out.exit_tokens):
            probs = torch.softmax(tl[0].float(), -1).cpu().numpy().astype(np.float64)
            sums[n] += counts.T @ probs
    mean_probs = sums / np.maximum(pixels, 1.0)[None, :, None]
    return {'mean_probs': mean_probs.round(6).tolist(),
            'margins': class_margins(mean_probs).round(6).tolist(),
            'per_exit_margins': [class_margins(mean_probs[n:n + 1]).round(6).tolist()
                                 for n in range(e)],
            'frames': len(frames), 'pixels_per_class': pixels.astype(int).tolist()}


def build_profile(summaries: list[dict], split: str, threads: int) -> dict:
    """The controller's table: Pareto-optimal points by latency, and a recommended point."""
    keys = ('policy', 'miou', 'gmacs_mean', 'latency_ms_p50', 'latency_ms_p95',
            'stopped_fraction_mean', 'exit_histogram')
    front = [{k: r[k] for k in keys} for r in pareto_front(summaries)]
    full = next(r for r in summaries if r['policy'] == 'full')
    within = [r for r in front if r['miou'] >= full['miou'] - 1.0]
    recommended = min(within, key=lambda r: r['latency_ms_p50'])['policy'] if within else 'full'
    return {'points': front, 'recommended': recommended, 'full_miou': full['miou'],
            'full_latency_ms_p50': full['latency_ms_p50'], 'split': split,
            'machine': machine_description(threads)}


def profile_sweep(segmenter: Segmenter, frames: Sequence, progress: bool = True
                  ) -> list[dict]:
    policies = [p for fam in sweep_policies(segmenter.num_exits).values() for p in fam]
    stats: dict[str, PolicyStats] = sweep(segmenter, frames, policies, progress=progress,
                                          desc='profile sweep')
    names = segmenter.bundle.labels.class_names
    return [s.summary(names, segmenter.num_exits) for s in stats.values()]


@torch.no_grad()
def stage_costs(segmenter: Segmenter, size: tuple[int, int], repeats: int = 5) -> dict:
    """Wall-clock cost of each stage at ``size``, for the controller's deadline guard.

    Block cost is close to a + b x tokens (docs/controller.md), so blocks are timed at the full
    token count and at a quarter of it; the line through the two gives any count.
    """
    import time
    model = segmenter.model
    x = segmenter.preprocess(np.zeros((*size, 3), dtype=np.uint8))
    patch = model.cfg.patch
    x = torch.nn.functional.pad(x, (0, (-size[1]) % patch, 0, (-size[0]) % patch))

    def best(fn) -> float:
        fn()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return float(np.median(times)) * 1e3

    f4, f8, tokens, grid = model.embed(x)
    n = tokens.shape[1]
    quarter = tokens[:, : max(1, n // 4)]
    stem_ms = best(lambda: model.embed(x))
    per_block_full = best(lambda: model.blocks[0](tokens))
    per_block_quarter = best(lambda: model.blocks[0](quarter))
    b = (per_block_full - per_block_quarter) / max(n - quarter.shape[1], 1)
    a = max(per_block_full - b * n, 0.0)
    head_ms = best(lambda: model.exits[0].token_logits(tokens[0]))
    decoder_ms = best(lambda: model.decoder(tokens, grid, f8, f4))
    head_out_ms = best(lambda: model.exits[0].dense_logits(
        torch.zeros(1, model.cfg.num_classes, *grid), f8))
    return {'size': list(size), 'tokens': n, 'stem_ms': round(stem_ms, 3),
            'block_ms_intercept': round(a, 4), 'block_ms_per_token': round(b, 6),
            'blocks_per_stage': [len(s) for s in model.stages()],
            'exit_token_head_ms': round(head_ms, 3), 'exit_dense_head_ms': round(head_out_ms, 3),
            'decoder_ms': round(decoder_ms, 3)}


@dataclass
class Calibration:
    """What ``calibrate_bundle`` wrote into the bundle."""

    calibration: dict[str, Any]
    profile: dict[str, Any]


def calibrate_bundle(segmenter: Segmenter, train: Sequence, frames: Sequence,
                     train_split: str, split: str, device: str = 'cpu',
                     progress: bool = True) -> Calibration:
    """CBT statistics on ``train``, then the profile swept on ``frames``, both written into the
    segmenter's bundle. The profile records the frame size it was measured at, since its
    latencies (and the stage costs of the deadline guard) hold for that size only."""
    path = segmenter.bundle.path
    calibration = {**cbt_statistics(segmenter, train, progress=progress), 'split': train_split}
    update_bundle(path, calibration=calibration)
    segmenter = Segmenter(path, device=device, threads=segmenter.threads)  # new CBT margins
    rows = profile_sweep(segmenter, frames, progress=progress)
    profile = build_profile(rows, split, segmenter.threads)
    first, _ = frames[0]
    profile['input_size'] = list(first.shape[:2])
    profile['stage_costs'] = stage_costs(segmenter, first.shape[:2])
    update_bundle(path, profile=profile)
    return Calibration(calibration, profile)
