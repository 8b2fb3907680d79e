"""Building blocks of the multi-exit segmenter, in the style of timm's vision_transformer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


class ConvBNAct(nn.Module):
    """Conv, BatchNorm, ReLU; ``fuse()`` folds the BatchNorm into the conv for inference."""

    def __init__(self, c_in: int, c_out: int, k: int = 3, stride: int = 1,
                 act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, stride, k // 2, bias=False)
        self.bn: nn.Module = nn.BatchNorm2d(c_out)
        self.act = nn.ReLU(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    @torch.no_grad()
    def fuse(self) -> None:
        """Fold the BatchNorm into the convolution (inference only: running statistics)."""
        if not isinstance(self.bn, nn.BatchNorm2d):
            return
        self.conv = fuse_conv_bn_eval(self.conv.eval(), self.bn.eval())
        self.bn = nn.Identity()


class ResidualConv(nn.Module):
    """A dense 3x3 residual unit: dense kernels run far faster per MAC than depthwise on CPU."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = ConvBNAct(c, c, 3, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.conv(x))


class Stem(nn.Module):
    """Strided convolutions from pixels to tokens, keeping 1/4 and 1/8 features for decoding."""

    def __init__(self, channels: tuple[int, int, int], embed_dim: int) -> None:
        super().__init__()
        c2, c4, c8 = channels
        self.s2 = ConvBNAct(3, c2, 3, 2)
        self.s4 = ConvBNAct(c2, c4, 3, 2)
        self.s8 = nn.Sequential(ConvBNAct(c4, c8, 3, 2), ResidualConv(c8))
        self.s16 = ConvBNAct(c8, embed_dim, 3, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f4 = self.s4(self.s2(x))
        f8 = self.s8(f4)
        return f4, f8, self.s16(f8)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        mask = None if key_mask is None else key_mask[:, None, None, :]
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block.

    ``key_mask`` (B, N, True = visible) hides paused tokens from attention during training, which
    is exactly what removing them does at inference, but keeps batches rectangular.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), key_mask)
        return x + self.mlp(self.norm2(x))


class ExitHead(nn.Module):
    """Early exit: a per-token classifier (whose confidence drives the stop rules) refined to 1/8
    by a 1x1 projection of the stem's 1/8 feature, so a frame leaving here can skip the decoder.
    """

    def __init__(self, dim: int, c8: int, num_classes: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.cls = nn.Linear(dim, num_classes)
        self.refine = nn.Conv2d(c8, num_classes, 1)

    def token_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.cls(self.norm(x))

    def dense_logits(self, token_logits_grid: torch.Tensor, f8: torch.Tensor) -> torch.Tensor:
        """(B, K, h, w) token logits to (B, K, 2h, 2w) logits at 1/8."""
        up = F.interpolate(token_logits_grid, size=f8.shape[-2:], mode='bilinear',
                           align_corners=False)
        return up + self.refine(f8)



class Decoder(nn.Module):
    """Final decoder: every token (paused ones put back) fused with the 1/8 and 1/4 stem features.

    It never shrinks with pausing, so it is kept light: 1x1 fusions and one 3x3 conv per scale.
    """

    def __init__(self, dim: int, c4_in: int, c8_in: int, channels: tuple[int, int],
                 num_classes: int) -> None:
        super().__init__()
        c8, c4 = channels
        self.norm = nn.LayerNorm(dim)
        self.tok = nn.Linear(dim, c8)
        self.proj8 = nn.Conv2d(c8_in, c8, 1)
        self.fuse8 = ConvBNAct(c8, c8, 3)
        self.to4 = nn.Conv2d(c8, c4, 1)
        self.proj4 = nn.Conv2d(c4_in, c4, 1)
        self.fuse4 = ConvBNAct(c4, c4, 3)
        self.cls = nn.Conv2d(c4, num_classes, 1)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int], f8: torch.Tensor,
                f4: torch.Tensor) -> torch.Tensor:
        b = tokens.shape[0]
        x = self.tok(self.norm(tokens)).transpose(1, 2).reshape(b, -1, *grid)
        x = F.interpolate(x, size=f8.shape[-2:], mode='bilinear', align_corners=False)
        x = self.fuse8(F.relu(x + self.proj8(f8)))
        x = F.interpolate(self.to4(x), size=f4.shape[-2:], mode='bilinear', align_corners=False)
        x = self.fuse4(F.relu(x + self.proj4(f4)))
        return self.cls(x)

