"""Shared fixtures: a tiny network and bundle sized for fast tests on two cores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ee_seg_ros.model import ModelConfig, MultiExitSegmenter

TINY = dict(num_classes=11, stem_channels=(8, 16, 24), embed_dim=32, depth=4, num_heads=2,
            mlp_ratio=2.0, exit_after=(1, 2, 3), decoder_channels=(24, 16), pos_grid=(6, 8))


@pytest.fixture(autouse=True, scope='session')
def _threads():
    torch.set_num_threads(2)


@pytest.fixture
def tiny_config() -> ModelConfig:
    return ModelConfig(**TINY)


def sharpened_tiny_model(config: ModelConfig | None = None) -> MultiExitSegmenter:
    """The tiny network, seeded, with its random exit heads sharpened so confidences spread
    over (0, 1) and stop rules bite."""
    torch.manual_seed(0)
    model = MultiExitSegmenter(config or ModelConfig(**TINY)).eval()
    with torch.no_grad():
        for head in model.exits:
            head.cls.weight.mul_(60.0)
    return model


def calibrated_tiny_bundle(root, size, val_frames: int, val_seed: int = 2):
    """A calibrated tiny CamVid-class bundle at ROOT/bundle, with the synthetic CamVid-layout
    data it was calibrated on at ROOT/data (3 train frames, ``val_frames`` val frames)."""
    from ee_seg_ros.bundle import save_bundle
    from ee_seg_ros.cli import main
    from ee_seg_ros.data.labels import CAMVID
    from ee_seg_ros.data.synthetic import write_camvid_layout
    bundle = save_bundle(root / 'bundle', sharpened_tiny_model(), CAMVID)
    write_camvid_layout(root / 'data', 'train', 3, seed=1, size=size)
    write_camvid_layout(root / 'data', 'val', val_frames, seed=val_seed, size=size)
    assert main(['calibrate', '--model', str(bundle), '--root', str(root / 'data'),
                 '--quiet', '--threads', '1']) == 0
    return bundle


@pytest.fixture
def tiny_model(tiny_config) -> MultiExitSegmenter:
    return sharpened_tiny_model(tiny_config)


@pytest.fixture
def frame() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(1, 3, 96, 128)


def random_rgb(h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
