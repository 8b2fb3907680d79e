"""Multiply-add counts of what the network executes, from its configuration and the shapes
actually run.

Counting from shapes (not hooks) keeps accounting to a few integer operations per frame,
counts what really ran when tokens have left the sequence, and serves every backend alike
(the ONNX Runtime backend has no torch modules to ask).
"""

from __future__ import annotations

from .config import ModelConfig


def conv_macs(out_h: int, out_w: int, c_in: int, c_out: int, k: int) -> int:
    return out_h * out_w * c_in * c_out * k * k


def linear_macs(n: int, d_in: int, d_out: int) -> int:
    return n * d_in * d_out


def block_macs(cfg: ModelConfig, n: int) -> int:
    """One pre-norm transformer block on ``n`` tokens: qkv, attention, projection, MLP."""
    d = cfg.embed_dim
    hidden = int(d * cfg.mlp_ratio)
    return (linear_macs(n, d, 3 * d) + 2 * n * n * d + linear_macs(n, d, d)
            + linear_macs(n, d, hidden) + linear_macs(n, hidden, d))


def stem_macs(cfg: ModelConfig, h: int, w: int) -> int:
    """The convolutional stem on an ``h`` x ``w`` input (multiples of the patch size)."""
    c2, c4, c8 = cfg.stem_channels
    return (conv_macs(h // 2, w // 2, 3, c2, 3) + conv_macs(h // 4, w // 4, c2, c4, 3)
            + conv_macs(h // 8, w // 8, c4, c8, 3) + conv_macs(h // 8, w // 8, c8, c8, 3)
            + conv_macs(h // 16, w // 16, c8, cfg.embed_dim, 3))


def exit_token_macs(cfg: ModelConfig, n: int) -> int:
    return linear_macs(n, cfg.embed_dim, cfg.num_classes)


def exit_dense_macs(cfg: ModelConfig, h: int, w: int) -> int:
    return conv_macs(h // 8, w // 8, cfg.stem_channels[2], cfg.num_classes, 1)


def decoder_macs(cfg: ModelConfig, h: int, w: int) -> int:
    c4_in, c8_in = cfg.stem_channels[1], cfg.stem_channels[2]
    c8, c4 = cfg.decoder_channels
    n = (h // cfg.patch) * (w // cfg.patch)
    h8, w8, h4, w4 = h // 8, w // 8, h // 4, w // 4
    return (linear_macs(n, cfg.embed_dim, c8) + conv_macs(h8, w8, c8_in, c8, 1)
            + conv_macs(h8, w8, c8, c8, 3) + conv_macs(h8, w8, c8, c4, 1)
            + conv_macs(h4, w4, c4_in, c4, 1) + conv_macs(h4, w4, c4, c4, 3)
            + conv_macs(h4, w4, c4, cfg.num_classes, 1))


def full_macs(cfg: ModelConfig, h: int, w: int) -> int:
    """The plain full-depth pass on an ``h`` x ``w`` input (padded to the patch size)."""
    h, w = cfg.padded_size(h, w)
    n = (h // cfg.patch) * (w // cfg.patch)
    return stem_macs(cfg, h, w) + cfg.depth * block_macs(cfg, n) + decoder_macs(cfg, h, w)
