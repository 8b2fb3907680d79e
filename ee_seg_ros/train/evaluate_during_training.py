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
    mean = torch.tensor(model.cfg.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(model.cfg.std, device=device).view(1, 3, 1, 1)
    mats = {f'exit{i}': ConfusionMatrix(num_classes) for i in range(model.cfg.num_exits)}
    mats['final'] = ConfusionMatrix(num_classes)
    for image, label in zip(images, labels):
        x = torch.from_numpy(image).to(device).permute(2, 0, 1)[None].float()
        out = model.forward_train((x - mean) / std)
        h, w = label.shape
        for key, logits in [*((f'exit{i}', e) for i, e in enumerate(out.exits)),
                            ('final', out.final)]:
            scale = h + (-h) % 16, w + (-w) % 16
            up = F.interpolate(logits, size=scale, mode='bilinear', align_corners=False)
            mats[key].update(up[0, :, :h, :w].argmax(0).cpu().numpy(), label)
    return {k: m.miou() for k, m in mats.items()}
