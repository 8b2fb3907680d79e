"""The multi-exit segmentation transformer (MESS exits, CBT/entropy token stops, PAUMER pausing).

Two forward passes share every weight:
- ``forward_train`` runs a batch at full token count; paused tokens are hidden from attention
  with a key mask, which is numerically what removing them does.
- ``forward_adaptive`` runs one frame and really removes stopped tokens, so later blocks run
  on fewer tokens, and it counts the multiply-adds it executed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .layers import Block, ConvBNAct, Decoder, ExitHead, Stem
from .policy import ExitPolicy


@dataclass
class TrainOutput:
    final: torch.Tensor                                  # (B, K, H/4, W/4)
    exits: list[torch.Tensor] = field(default_factory=list)         # (B, K, H/8, W/8) each
    exit_tokens: list[torch.Tensor] = field(default_factory=list)   # (B, N, K) each


@dataclass
class AdaptiveOutput:
    """One frame's result at the network's padded resolution, before upsampling."""

    logits: torch.Tensor          # (1, K, h, w) at 1/4 (decoder) or 1/8 (exit head)
    exit_ids: torch.Tensor        # (gh, gw) int64: exit where each token stopped; final = E
    exit_taken: int               # index of the exit the frame left at; E = final decoder
    stopped_fraction: list[float]  # cumulative fraction of tokens stopped after each exit run
    macs: int                     # multiply-adds executed
    guard_stop: bool = False      # True when the deadline guard ended the frame


def _pad_to(x: torch.Tensor, multiple: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    return F.pad(x, (0, pw, 0, ph)) if ph or pw else x


def token_confidence(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top softmax probability, predicted class and entropy (nats) of each token."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    p = logp.exp()
    conf, cls = p.max(dim=-1)
    entropy = -(p * logp).sum(dim=-1)
    return conf, cls, entropy


def stop_mask(logits: torch.Tensor, policy: ExitPolicy,
              class_thresholds: torch.Tensor | None) -> torch.Tensor:
    """Which tokens stop under ``policy`` given their exit logits (..., K)."""
    conf, cls, entropy = token_confidence(logits)
    if policy.rule == 'entropy':
        return entropy < policy.entropy
    if class_thresholds is None:
        raise ValueError(f'rule {policy.rule!r} needs class thresholds')
    return conf > class_thresholds[cls]


class MultiExitSegmenter(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c2, c4, c8 = cfg.stem_channels
        d = cfg.embed_dim
        self.stem = Stem(cfg.stem_channels, d)
        self.pos_embed = nn.Parameter(torch.zeros(1, d, *cfg.pos_grid))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(
            Block(d, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.exits = nn.ModuleList(ExitHead(d, c8, cfg.num_classes) for _ in cfg.exit_after)
        self.decoder = Decoder(d, c4, c8, cfg.decoder_channels, cfg.num_classes)
        self._pos_cache: dict[tuple[int, int], torch.Tensor] = {}
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    # -- shared pieces -------------------------------------------------------------------------
    def stages(self) -> list[range]:
        """Block index ranges between consecutive exits; the last one ends at full depth."""
        bounds = [0, *self.cfg.exit_after, self.cfg.depth]
        return [range(a, b) for a, b in zip(bounds[:-1], bounds[1:])]

    def pos_for(self, grid: tuple[int, int]) -> torch.Tensor:
        """Position grid resized to the token grid, (1, N, C); cached at inference."""
        if not self.training and grid in self._pos_cache:
            return self._pos_cache[grid]
        pos = self.pos_embed
        if tuple(pos.shape[-2:]) != grid:
            pos = F.interpolate(pos, size=grid, mode='bilinear', align_corners=False)
        pos = pos.flatten(2).transpose(1, 2)
        if not self.training:
            self._pos_cache[grid] = pos.detach()
        return pos

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                               tuple[int, int]]:
        f4, f8, g = self.stem(x)
        grid = (g.shape[-2], g.shape[-1])
        return f4, f8, g.flatten(2).transpose(1, 2) + self.pos_for(grid), grid

    def train(self, mode: bool = True) -> 'MultiExitSegmenter':
        self._pos_cache.clear()
        return super().train(mode)

    @torch.no_grad()
    def fuse(self) -> 'MultiExitSegmenter':
        """Fold BatchNorm into convolutions for inference (same outputs, fewer passes)."""
        for m in self.modules():
            if isinstance(m, ConvBNAct):
                m.fuse()
        return self

    # -- training ------------------------------------------------------------------------------
    def forward_train(self, x: torch.Tensor,
                      pause_thresholds: torch.Tensor | None = None) -> TrainOutput:
        """Batched forward. With ``pause_thresholds`` (B,) a token whose exit confidence passes
        its image's threshold pauses there: hidden from later attention, its features frozen,
        and put back for the decoder, as at inference.
        """
        x = _pad_to(x, self.cfg.patch)
        f4, f8, tokens, grid = self.embed(x)
        b, n, _ = tokens.shape
        out = TrainOutput(final=torch.empty(0))
        active = None
        frozen = None
        if pause_thresholds is not None:
            active = torch.ones(b, n, dtype=torch.bool, device=x.device)
            frozen = torch.zeros_like(tokens)
        for s, stage in enumerate(self.stages()):
            for i in stage:
                tokens = self.blocks[i](tokens, active)
            if s == len(self.exits):
                break
            head = self.exits[s]
            tl = head.token_logits(tokens)
            out.exit_tokens.append(tl)
            tl_grid = tl.transpose(1, 2).reshape(b, -1, *grid)
            out.exits.append(head.dense_logits(tl_grid, f8))
            if active is not None:
                conf = torch.softmax(tl.float(), -1).amax(-1)
                stop = active & (conf > pause_thresholds[:, None])
                # A row of all-paused keys would leave attention undefined: keep one visible.
                stop &= (active & ~stop).any(dim=1, keepdim=True) | ~stop.all(dim=1, keepdim=True)
                frozen = torch.where(stop[..., None], tokens, frozen)
                active = active & ~stop
        if active is not None:
            tokens = torch.where(active[..., None], tokens, frozen)
        out.final = self.decoder(tokens, grid, f8, f4)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Plain full-depth logits at 1/4 of the padded input."""
        return self.forward_train(x).final

    # -- adaptive inference --------------------------------------------------------------------
    @torch.no_grad()
    def forward_adaptive(self, x: torch.Tensor, policy: ExitPolicy,
                         class_thresholds: torch.Tensor | None = None,
                         guard: Callable[[int], bool] | None = None) -> AdaptiveOutput:
        """One frame (batch 1) under ``policy``; stopped tokens leave the sequence.

        ``guard(exit_index)`` is asked after each exit whether the frame must stop there (the
        controller's deadline guard).
        """
        if x.shape[0] != 1:
            raise ValueError('forward_adaptive runs one frame at a time (batch 1)')
        cfg = self.cfg
        x = _pad_to(x, cfg.patch)
        ph, pw = x.shape[-2:]
        f4, f8, tokens, grid = self.embed(x)
        n = tokens.shape[1]
        macs = self.stem.macs(ph, pw)
        num_exits = len(self.exits)
        cap = num_exits if policy.max_exit is None else min(policy.max_exit, num_exits)
        want_head_out = policy.exit_output == 'head'

        active_idx = torch.arange(n, device=x.device)
        feats = tokens[0]                    # full-size feature buffer, (N, C)
        act = tokens                         # active tokens only, (1, n_act, C)
        exit_ids = torch.full((n,), num_exits, dtype=torch.long, device=x.device)
        head_logits = None                   # per-token logits when an exit head may output
        stopped: list[float] = []
        exit_taken = num_exits
        guard_stop = False
        stages = self.stages()
        for s, stage in enumerate(stages):
            for i in stage:
                act = self.blocks[i](act)
                macs += self.blocks[i].macs(act.shape[1])
            if s == num_exits:
                break
            will_cap = s >= cap
            if guard is not None and not will_cap and guard(s):
                will_cap, guard_stop = True, True
            need_head = policy.stops_tokens or (will_cap and want_head_out)
            if need_head:
                tl = self.exits[s].token_logits(act[0])
                macs += self.exits[s].token_macs(act.shape[1])
                if want_head_out:
                    if head_logits is None:
                        head_logits = torch.zeros(n, cfg.num_classes, device=x.device)
                    head_logits[active_idx] = tl
            if policy.stops_tokens:
                stop = stop_mask(tl, policy, class_thresholds)
                if bool(stop.any()):
                    idx = active_idx[stop]
                    feats = feats.index_copy(0, idx, act[0, stop]) if feats is tokens[0] \
                        else feats.index_copy_(0, idx, act[0, stop])
                    exit_ids[idx] = s
                    keep = ~stop
                    active_idx = active_idx[keep]
                    act = act[:, keep]
            frac = 1.0 - active_idx.numel() / n
            stopped.append(frac)
            ratio_exit = policy.stops_tokens and frac >= policy.frame_ratio
            if will_cap or ratio_exit or active_idx.numel() == 0:
                exit_taken = s
                break
        if active_idx.numel():
            if active_idx.numel() == n and feats is tokens[0]:
                feats = act[0]
            else:
                feats = feats.index_copy(0, active_idx, act[0]) if feats is tokens[0] \
                    else feats.index_copy_(0, active_idx, act[0])
        if exit_taken < num_exits and want_head_out:
            head = self.exits[exit_taken]
            tl_grid = head_logits.t().reshape(1, -1, *grid)
            logits = head.dense_logits(tl_grid, f8)
            macs += head.dense_macs(*f8.shape[-2:])
        else:
            logits = self.decoder(feats[None], grid, f8, f4)
            macs += self.decoder.macs(ph, pw)
        return AdaptiveOutput(logits=logits, exit_ids=exit_ids.reshape(grid),
                              exit_taken=exit_taken, stopped_fraction=stopped, macs=macs,
                              guard_stop=guard_stop)

    def full_macs(self, h: int, w: int) -> int:
        """MACs of the plain full-depth pass on an ``h`` x ``w`` input."""
        h, w = h + (-h) % self.cfg.patch, w + (-w) % self.cfg.patch
        n = (h // self.cfg.patch) * (w // self.cfg.patch)
        return (self.stem.macs(h, w) + sum(b.macs(n) for b in self.blocks)
                + self.decoder.macs(h, w))
