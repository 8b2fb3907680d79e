"""Quick validation of every exit during training (full token count, no pausing)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..metrics import ConfusionMatrix
from ..model import MultiExitSegmenter


@torch.no_grad()
def evaluate_exits(model: MultiExitSegmenter, images: Sequence[np.ndarray],
                   labels: Sequence[np.ndarray], num_classes: int) -> dict[str, float]:
    model.eval()
    device = next(model.parameters()).device
    mats = {f'exit{i}': ConfusionMatrix(num_classes) for i in range(model.cfg.num_exits)}
    mats['final'] = ConfusionMatrix(num_classes)
    for image, label in zip(images, labels):
        out = model.forward_train(model.prepare(torch.from_numpy(image).to(device)[None]))
        h, w = label.shape
        for key, logits in [*((f'exit{i}', e) for i, e in enumerate(out.exits)),
                            ('final', out.final)]:
            up = F.interpolate(logits, size=model.cfg.padded_size(h, w), mode='bilinear',
                               align_corners=False)
            mats[key].update(up[0, :, :h, :w].argmax(0).cpu().numpy(), label)
    return {k: m.miou() for k, m in mats.items()}
