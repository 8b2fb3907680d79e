"""The PyTorch backend of the Segmenter (CPU or CUDA)."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..bundle import Bundle
from ..model import ExitPolicy
from ..model.adaptive import run_adaptive
from ..model.network import TorchStages
from .backend import BackendOutput

# Frames decoded zero-copy from messages are read-only views; they are only read here.
warnings.filterwarnings('ignore', message='The given NumPy array is not writable')


class TorchBackend:
    """The PyTorch network on CPU or CUDA, its stages run by model.adaptive's loop."""

    name = 'torch'

    def __init__(self, bundle: Bundle, device: str = 'cpu', threads: int | None = None) -> None:
        if threads is not None:
            torch.set_num_threads(threads)
        self.threads = torch.get_num_threads()
        self.device = torch.device(device)
        self.model = bundle.load_model(device=device)
        self.cfg = self.model.cfg
        self.stages = TorchStages(self.model)
        self._thresholds: dict[bytes, torch.Tensor] = {}

    def prepare_threads(self, threads: int) -> None:
        """Nothing to build: PyTorch changes its thread count in place."""

    def set_threads(self, threads: int) -> None:
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        return self.model.prepare(torch.from_numpy(image).to(self.device)[None])

    def _tensor(self, thresholds: np.ndarray | None) -> torch.Tensor | None:
        if thresholds is None:
            return None
        key = thresholds.tobytes()
        if key not in self._thresholds:
            self._thresholds[key] = torch.from_numpy(thresholds).to(self.device)
        return self._thresholds[key]

    @torch.no_grad()
    def infer(self, image: np.ndarray, policy: ExitPolicy, thresholds: np.ndarray | None,
              guard: Callable[[int], bool] | None) -> BackendOutput:
        h, w = image.shape[:2]
        x = self.preprocess(image)
        out = run_adaptive(self.stages, self.cfg, x, policy,
                           self._tensor(thresholds), guard)
        logits = F.interpolate(out.logits, size=x.shape[-2:], mode='bilinear',
                               align_corners=False)[0, :, :h, :w]
        top, labels = logits.max(dim=0)
        # max softmax = 1 / sum(exp(l - l_max)): no full softmax tensor needed
        conf = torch.exp(logits - top).sum(dim=0).reciprocal_()
        if self.cfg.num_classes <= 256:
            labels = labels.to(torch.uint8)
        return BackendOutput(labels=labels.cpu().numpy(),
                             confidence=(conf * 255.0).round_().to(torch.uint8).cpu().numpy(),
                             exit_ids=out.exit_ids.cpu().numpy(), exit_taken=out.exit_taken,
                             stopped_fraction=out.stopped_fraction, macs=out.macs,
                             guard_stop=out.guard_stop)
