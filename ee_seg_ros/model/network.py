"""The multi-exit segmentation transformer (MESS exits, CBT/entropy token stops, PAUMER pausing).

Two forward passes share every weight:
- ``forward_train`` runs a batch at full token count; paused tokens are hidden from attention
  with a key mask, which is numerically what removing them does.
- ``forward_adaptive`` runs one frame through model.adaptive, which really removes stopped
  tokens, so later blocks run on fewer tokens, and counts the multiply-adds it executed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from . import macs
from .adaptive import AdaptiveOutput, run_adaptive
from .config import ModelConfig
from .inputs import normalise, pixel_stats
from .layers import Block, ConvBNAct, Decoder, ExitHead, Stem
from .policy import ExitPolicy


@dataclass
class TrainOutput:
    final: torch.Tensor                                  # (B, K, H/4, W/4)
    exits: list[torch.Tensor] = field(default_factory=list)         # (B, K, H/8, W/8) each
    exit_tokens: list[torch.Tensor] = field(default_factory=list)   # (B, N, K) each


def token_confidence(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top softmax probability, predicted class and entropy (nats) of each token."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    p = logp.exp()
    conf, cls = p.max(dim=-1)
    entropy = -(p * logp).sum(dim=-1)
    return conf, cls, entropy


class MultiExitSegmenter(nn.Module):
    pixel_mean: torch.Tensor         # (1, 3, 1, 1) input statistics, buffers from cfg
    pixel_inv_std: torch.Tensor

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        _, c4, c8 = cfg.stem_channels
        d = cfg.embed_dim
        self.stem = Stem(cfg.stem_channels, d)
        self.pos_embed = nn.Parameter(torch.zeros(1, d, *cfg.pos_grid))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(
            Block(d, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.exits = nn.ModuleList(ExitHead(d, c8, cfg.num_classes) for _ in cfg.exit_after)
        self.decoder = Decoder(d, c4, c8, cfg.decoder_channels, cfg.num_classes)
        self._pos_cache: dict[tuple[int, int], torch.Tensor] = {}
        mean, inv_std = pixel_stats(cfg)          # not weights: derived from cfg, never saved
        self.register_buffer('pixel_mean', torch.from_numpy(mean).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer('pixel_inv_std', torch.from_numpy(inv_std).view(1, 3, 1, 1),
                             persistent=False)
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

    # -- input -------------------------------------------------------------------------------
    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3) RGB uint8 frames on the model's device -> (B, 3, H', W') input,
        normalised and padded to the patch size (the numbers of model.inputs.prepare_frame).

        Channels-last in memory, as the frames come: the stem's convolutions run faster on it
        on CPU than on a contiguous copy.
        """
        x = normalise(images.permute(0, 3, 1, 2).float(), self.pixel_mean, self.pixel_inv_std)
        return self.pad(x).contiguous(memory_format=torch.channels_last)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """Zero-pad (B, 3, H, W) to ``cfg.padded_size``; prepared input is returned as is."""
        h, w = x.shape[-2:]
        ph, pw = self.cfg.padded_size(h, w)
        return F.pad(x, (0, pw - w, 0, ph - h)) if (ph, pw) != (h, w) else x

    # -- shared pieces -------------------------------------------------------------------------
    def exit_head(self, n: int) -> ExitHead:
        """Exit head ``n``, typed (ModuleList indexing is not)."""
        return cast(ExitHead, self.exits[n])

    def stages(self) -> list[range]:
        """Block index ranges between consecutive exits; the last one ends at full depth."""
        bounds = [0, *self.cfg.exit_after, self.cfg.depth]
        return [range(a, b) for a, b in zip(bounds[:-1], bounds[1:])]

    def pos_for(self, grid: tuple[int, int]) -> torch.Tensor:
        """Position grid resized to the token grid, (1, N, C); cached at inference."""
        if not self.training and grid in self._pos_cache:
            return self._pos_cache[grid]
        pos: torch.Tensor = self.pos_embed
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

    def train(self, mode: bool = True) -> MultiExitSegmenter:
        self._pos_cache.clear()
        return super().train(mode)

    @torch.no_grad()
    def fuse(self) -> MultiExitSegmenter:
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
        x = self.pad(x)
        f4, f8, tokens, grid = self.embed(x)
        b, n, _ = tokens.shape
        out = TrainOutput(final=torch.empty(0))
        active = torch.ones(b, n, dtype=torch.bool, device=x.device)    # (B, N) not paused
        frozen = torch.zeros_like(tokens)                                 # (B, N, C) at pause
        key_mask = None if pause_thresholds is None else active
        for s, stage in enumerate(self.stages()):
            for i in stage:
                tokens = self.blocks[i](tokens, key_mask)
            if s == len(self.exits):
                break
            head = self.exit_head(s)
            tl = head.token_logits(tokens)                                # (B, N, K)
            out.exit_tokens.append(tl)
            tl_grid = tl.transpose(1, 2).reshape(b, -1, *grid)
            out.exits.append(head.dense_logits(tl_grid, f8))
            if pause_thresholds is not None:
                conf = torch.softmax(tl.float(), -1).amax(-1)
                stop = active & (conf > pause_thresholds[:, None])
                # A row of all-paused keys would leave attention undefined: keep one visible.
                stop &= (active & ~stop).any(dim=1, keepdim=True) | ~stop.all(dim=1, keepdim=True)
                frozen = torch.where(stop[..., None], tokens, frozen)
                active = active & ~stop
                key_mask = active
        if pause_thresholds is not None:
            tokens = torch.where(active[..., None], tokens, frozen)
        out.final = self.decoder(tokens, grid, f8, f4)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Plain full-depth logits (B, K, H'/4, W'/4) of the padded input; no exit head runs."""
        f4, f8, tokens, grid = self.embed(self.pad(x))     # tokens (B, N, C), N = grid h x w
        for block in self.blocks:
            tokens = block(tokens)
        return self.decoder(tokens, grid, f8, f4)

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
        x = self.pad(x)
        return run_adaptive(TorchStages(self), self.cfg, x, policy,
                            class_thresholds, guard)

    def full_macs(self, h: int, w: int) -> int:
        """MACs of the plain full-depth pass on an ``h`` x ``w`` input."""
        return macs.full_macs(self.cfg, h, w)


class TorchStages:
    """The adaptive loop's stages (model.adaptive.Stages) on a PyTorch model."""

    def __init__(self, model: MultiExitSegmenter) -> None:
        self.model = model
        self.stage_blocks = [[model.blocks[i] for i in r] for r in model.stages()]

    def embed(self, x: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[int, int]]:
        f4, f8, tokens, grid = self.model.embed(x)
        return f4, f8, tokens[0], grid

    def blocks(self, stage: int, tokens: torch.Tensor) -> torch.Tensor:
        x = tokens[None]
        for block in self.stage_blocks[stage]:
            x = block(x)
        return x[0]

    def exit_tokens(self, stage: int, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.exit_head(stage).token_logits(tokens)

    def exit_dense(self, stage: int, token_logits: torch.Tensor, grid: tuple[int, int],
                   f8: torch.Tensor) -> torch.Tensor:
        return self.model.exit_head(stage).dense_logits(token_logits.t().reshape(1, -1, *grid),
                                                        f8)

    def decode(self, tokens: torch.Tensor, grid: tuple[int, int], f8: torch.Tensor,
               f4: torch.Tensor) -> torch.Tensor:
        return self.model.decoder(tokens[None], grid, f8, f4)

    def arange(self, n: int) -> torch.Tensor:
        return torch.arange(n)

    def full(self, n: int, value: int) -> torch.Tensor:
        return torch.full((n,), value, dtype=torch.long)

    def zeros(self, shape: tuple[int, int]) -> torch.Tensor:
        return torch.zeros(shape)

    def copy(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    confidence = staticmethod(token_confidence)
