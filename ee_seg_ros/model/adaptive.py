"""The adaptive forward pass, written once for every backend.

Stop rules, token gathering and scattering, frame exit, the deadline guard and MAC accounting
live here; a backend supplies only the stage computations (stem, blocks between exits, exit
heads, decoder) and a handful of array operations. PyTorch runs it on tensors, ONNX Runtime on
numpy arrays between stage sessions, so both take the same decisions by construction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from . import macs as M
from .config import ModelConfig
from .policy import ExitPolicy


@dataclass
class AdaptiveOutput:
    """One frame's result at the network's padded resolution, before upsampling."""

    logits: Any                   # (1, K, h, w): 1/4 (decoder) or 1/8 (exit head)
    exit_ids: Any                 # (gh, gw) int: exit where each token stopped; final = E
    exit_taken: int               # exit the frame left at; E = final decoder
    stopped_fraction: list[float]  # cumulative fraction of tokens stopped after each exit run
    macs: int                     # multiply-adds executed
    guard_stop: bool = False      # True when the deadline guard ended the frame


class Stages(Protocol):
    """What a backend provides. Token arrays are 2-D, (tokens, channels)."""

    def embed(self, x: Any) -> tuple[Any, Any, Any, tuple[int, int]]: ...
    def blocks(self, stage: int, tokens: Any) -> Any: ...
    def exit_tokens(self, stage: int, tokens: Any) -> Any: ...
    def exit_dense(self, stage: int, token_logits: Any, grid: tuple[int, int],
                   f8: Any) -> Any: ...
    def decode(self, tokens: Any, grid: tuple[int, int], f8: Any, f4: Any) -> Any: ...

    # array operations
    def arange(self, n: int) -> Any: ...
    def full(self, n: int, value: int) -> Any: ...
    def zeros(self, shape: tuple[int, int]) -> Any: ...
    def copy(self, x: Any) -> Any: ...
    def confidence(self, logits: Any) -> tuple[Any, Any, Any]: ...


def numpy_confidence(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top softmax probability, predicted class and entropy (nats) per row."""
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=-1, keepdims=True)
    p = e / s
    entropy = -(p * (z - np.log(s))).sum(axis=-1)
    return p.max(axis=-1), p.argmax(axis=-1), entropy


def stop_mask(stages: Stages, logits: Any, policy: ExitPolicy, class_thresholds: Any) -> Any:
    """Which tokens stop under ``policy`` given their exit logits (n, K)."""
    conf, cls, entropy = stages.confidence(logits)
    if policy.rule == 'entropy':
        return entropy < policy.entropy
    if class_thresholds is None:
        raise ValueError(f'rule {policy.rule!r} needs class thresholds')
    return conf > class_thresholds[cls]


def run_adaptive(stages: Stages, cfg: ModelConfig, x: Any, padded: tuple[int, int],
                 policy: ExitPolicy, class_thresholds: Any = None,
                 guard: Callable[[int], bool] | None = None) -> AdaptiveOutput:
    """One frame (already normalised and padded to ``padded``) under ``policy``.

    Stopped tokens leave the sequence: later blocks run on the rest. Before the decoder every
    token's latest features are put back in place. ``guard(exit_index)`` is asked after each
    exit whether the frame must stop there.
    """
    ph, pw = padded
    f4, f8, tokens, grid = stages.embed(x)
    n = grid[0] * grid[1]
    macs = M.stem_macs(cfg, ph, pw)
    num_exits = cfg.num_exits
    bounds = [0, *cfg.exit_after, cfg.depth]
    cap = num_exits if policy.max_exit is None else min(policy.max_exit, num_exits)
    head_out = policy.exit_output == 'head'

    active_idx = stages.arange(n)
    act = tokens                       # features of the active tokens, (n_active, C)
    feats = None                       # every token's latest features, made on first stop
    exit_ids = stages.full(n, num_exits)
    head_logits = None                 # per-token logits, when an exit head may be the output
    stopped: list[float] = []
    exit_taken = num_exits
    guard_stop = False
    for s in range(num_exits + 1):
        act = stages.blocks(s, act)
        macs += (bounds[s + 1] - bounds[s]) * M.block_macs(cfg, len(act))
        if s == num_exits:
            break
        will_cap = s >= cap
        if guard is not None and not will_cap and guard(s):
            will_cap = guard_stop = True
        if policy.stops_tokens or (will_cap and head_out):
            logits = stages.exit_tokens(s, act)
            macs += M.exit_token_macs(cfg, len(act))
            if head_out:
                if head_logits is None:
                    head_logits = stages.zeros((n, cfg.num_classes))
                head_logits[active_idx] = logits
        if policy.stops_tokens:
            stop = stop_mask(stages, logits, policy, class_thresholds)
            if stop.any():
                if feats is None:
                    feats = stages.copy(tokens)
                idx = active_idx[stop]
                feats[idx] = act[stop]
                exit_ids[idx] = s
                keep = ~stop
                active_idx = active_idx[keep]
                act = act[keep]
        frac = 1.0 - len(active_idx) / n
        stopped.append(frac)
        if will_cap or (policy.stops_tokens and frac >= policy.frame_ratio) \
                or len(active_idx) == 0:
            exit_taken = s
            break
    if feats is None:
        feats = act                    # nothing stopped: the active tokens are all tokens
    elif len(active_idx):
        feats[active_idx] = act
    if exit_taken < num_exits and head_out:
        out = stages.exit_dense(exit_taken, head_logits, grid, f8)
        macs += M.exit_dense_macs(cfg, ph, pw)
    else:
        out = stages.decode(feats, grid, f8, f4)
        macs += M.decoder_macs(cfg, ph, pw)
    return AdaptiveOutput(logits=out, exit_ids=exit_ids.reshape(grid), exit_taken=exit_taken,
                          stopped_fraction=stopped, macs=macs, guard_stop=guard_stop)
