"""Shared fixtures: a tiny network and bundle sized for fast tests on two cores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ee_seg_ros.model import ModelConfig, MultiExitSegmenter

TINY = dict(stem_channels=(8, 16, 24), embed_dim=32, depth=4, num_heads=2, mlp_ratio=2.0,
            exit_after=(1, 2, 3), decoder_channels=(24, 16), pos_grid=(6, 8))


@pytest.fixture(autouse=True, scope='session')
def _threads():
    torch.set_num_threads(2)


@pytest.fixture
def tiny_config() -> ModelConfig:
    return ModelConfig(**TINY)


@pytest.fixture
def tiny_model(tiny_config) -> MultiExitSegmenter:
    torch.manual_seed(0)
    model = MultiExitSegmenter(tiny_config).eval()
    # Sharpen the random exit heads so confidences spread over (0, 1) and stop rules bite.
    with torch.no_grad():
        for head in model.exits:
            head.cls.weight.mul_(60.0)
    return model


@pytest.fixture
def frame() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(1, 3, 96, 128)


def random_rgb(h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
