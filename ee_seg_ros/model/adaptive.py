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


class ActiveTokens:
    """Token bookkeeping of one frame: which tokens still run, where every token's latest
    features are, and at which exit each one stopped. Arrays are the backend's own."""

    def __init__(self, stages: Stages, tokens: Any, num_exits: int) -> None:
        self.stages = stages
        self.all = tokens                       # (n, C) every token, as embedded
        self.n = len(tokens)
        self.idx = stages.arange(self.n)        # (n_active,) grid positions of the active ones
        self.x = tokens                         # (n_active, C) their features
        self.exit_ids = stages.full(self.n, num_exits)   # (n,) exit each token stopped at
        self._feats: Any = None                 # (n, C) latest features, made on first stop

    def __len__(self) -> int:
        return len(self.idx)

    @property
    def stopped_fraction(self) -> float:
        return 1.0 - len(self.idx) / self.n

    def scatter(self, values: Any, into: Any) -> Any:
        """Write the active tokens' rows of ``values`` into their places in ``into`` (n, ...)."""
        into[self.idx] = values
        return into

    def stop(self, mask: Any, exit_index: int) -> None:
        """Tokens where ``mask`` (n_active,) is set stop at ``exit_index`` and leave."""
        if not mask.any():
            return
        if self._feats is None:
            self._feats = self.stages.copy(self.all)
        idx = self.idx[mask]
        self._feats[idx] = self.x[mask]
        self.exit_ids[idx] = exit_index
        keep = ~mask
        self.idx = self.idx[keep]
        self.x = self.x[keep]

    def every_token(self) -> Any:
        """(n, C) every token's latest features: the stopped ones put back in place."""
        if self._feats is None:
            return self.x                       # nothing stopped: the active tokens are all
        if len(self.idx):
            self._feats[self.idx] = self.x
        return self._feats


def run_adaptive(stages: Stages, cfg: ModelConfig, x: Any, policy: ExitPolicy,
                 class_thresholds: Any = None,
                 guard: Callable[[int], bool] | None = None) -> AdaptiveOutput:
    """One frame (1, 3, H, W), already prepared (normalised, padded to the patch), under
    ``policy``.

    Stopped tokens leave the sequence: later blocks run on the rest. Before the decoder every
    token's latest features are put back in place. ``guard(exit_index)`` is asked after each
    exit whether the frame must stop there.
    """
    h, w = x.shape[-2:]
    num_exits = cfg.num_exits
    bounds = [0, *cfg.exit_after, cfg.depth]
    cap = num_exits if policy.max_exit is None else min(policy.max_exit, num_exits)
    head_out = policy.exit_output == 'head'

    f4, f8, tokens, grid = stages.embed(x)  # (1, c4, H/4, W/4), (1, c8, H/8, W/8), (n, C)
    macs = M.stem_macs(cfg, h, w)
    active = ActiveTokens(stages, tokens, num_exits)
    head_logits = None                      # (n, K) each token's latest exit logits ('head')
    stopped: list[float] = []
    exit_taken, guard_stop = num_exits, False
    for s in range(num_exits + 1):
        active.x = stages.blocks(s, active.x)                       # (n_active, C)
        macs += (bounds[s + 1] - bounds[s]) * M.block_macs(cfg, len(active))
        if s == num_exits:
            break
        leave = s >= cap
        if guard is not None and not leave and guard(s):
            leave = guard_stop = True
        if policy.stops_tokens or (leave and head_out):
            logits = stages.exit_tokens(s, active.x)                # (n_active, K)
            macs += M.exit_token_macs(cfg, len(active))
            if head_out:
                if head_logits is None:
                    head_logits = stages.zeros((active.n, cfg.num_classes))
                head_logits = active.scatter(logits, head_logits)
        if policy.stops_tokens:
            active.stop(stop_mask(stages, logits, policy, class_thresholds), s)
        stopped.append(active.stopped_fraction)
        if leave or (policy.stops_tokens and stopped[-1] >= policy.frame_ratio) \
                or len(active) == 0:
            exit_taken = s
            break
    if exit_taken < num_exits and head_out:
        out = stages.exit_dense(exit_taken, head_logits, grid, f8)  # (1, K, H/8, W/8)
        macs += M.exit_dense_macs(cfg, h, w)
    else:
        out = stages.decode(active.every_token(), grid, f8, f4)     # (1, K, H/4, W/4)
        macs += M.decoder_macs(cfg, h, w)
    return AdaptiveOutput(logits=out, exit_ids=active.exit_ids.reshape(grid),
                          exit_taken=exit_taken, stopped_fraction=stopped, macs=macs,
                          guard_stop=guard_stop)
