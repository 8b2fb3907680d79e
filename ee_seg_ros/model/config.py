"""Architecture configuration of the multi-exit segmenter, stored in every bundle."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the network; the bundle stores it so weights are never loaded into a wrong shape.

    Tokens sit at 1/16 of the input. ``exit_after`` lists block counts after which an exit head
    sits; the final decoder follows the last block. ``num_classes`` has no default: it is
    always the dataset's (the trainer sets it from the class list, a bundle records it).
    """

    num_classes: int
    stem_channels: tuple[int, int, int] = (32, 48, 96)
    embed_dim: int = 192
    depth: int = 8
    num_heads: int = 3
    mlp_ratio: float = 4.0
    exit_after: tuple[int, ...] = (2, 4, 6)
    decoder_channels: tuple[int, int] = (96, 32)
    pos_grid: tuple[int, int] = (24, 32)
    patch: int = 16
    mean: tuple[float, float, float] = (105.0, 108.4, 110.3)
    std: tuple[float, float, float] = (78.3, 79.5, 78.3)

    def __post_init__(self) -> None:
        if self.num_classes < 2:
            raise ValueError(f'num_classes must be at least 2, got {self.num_classes}')
        if not self.exit_after or list(self.exit_after) != sorted(set(self.exit_after)):
            raise ValueError(f'exit_after must be strictly increasing, got {self.exit_after}')
        if self.exit_after[0] < 1 or self.exit_after[-1] >= self.depth:
            raise ValueError(
                f'exits must sit after block 1..{self.depth - 1}, got {self.exit_after}')
        if self.embed_dim % self.num_heads:
            raise ValueError('embed_dim must be divisible by num_heads')

    @property
    def num_exits(self) -> int:
        """Early exits; index ``num_exits`` denotes the final decoder."""
        return len(self.exit_after)

    def padded_size(self, h: int, w: int) -> tuple[int, int]:
        """``h`` x ``w`` rounded up to the patch size: the input the network runs on."""
        p = self.patch
        return h + (-h) % p, w + (-w) % p

    def token_grid(self, h: int, w: int) -> tuple[int, int]:
        """Token rows and columns of an ``h`` x ``w`` input (one token per patch)."""
        ph, pw = self.padded_size(h, w)
        return ph // self.patch, pw // self.patch

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        # 'extra' was an unused field that bundles written before carry (empty): ignored
        data = {k: v for k, v in data.items() if k != 'extra'}
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f'unknown model config keys: {sorted(unknown)}')
        kwargs: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                                  for k, v in data.items()}
        return cls(**kwargs)
