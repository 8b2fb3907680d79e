"""Run one frame at one operating point and return everything a consumer publishes.

The Segmenter owns preprocessing (normalise, pad), the adaptive forward and postprocessing
(upsample, label, confidence, exit map); the ROS node, replay, eval and bench all call it, so
their numbers describe the same computation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..bundle import Bundle, BundleError, load_bundle
from ..model import ExitPolicy


@dataclass
class SegmentationResult:
    labels: np.ndarray            # (H, W) uint8 class ids (uint16 above 255 classes)
    confidence: np.ndarray        # (H, W) uint8: winning class probability x 255
    exit_map: np.ndarray | None   # (H, W) uint8: exit where each pixel's patch stopped
    exit_taken: int               # exit the frame left at; num_exits = final decoder
    stopped_fraction: list[float] = field(default_factory=list)
    gmacs: float = 0.0            # executed multiply-adds / 1e9
    latency_ms: float = 0.0       # preprocessing to postprocessing, this frame
    guard_stop: bool = False
    policy: str = 'full'


class Segmenter:
    """A loaded bundle on a device, ready to segment RGB frames."""

    def __init__(self, bundle: Bundle | str | None = None, device: str = 'cpu',
                 threads: int | None = None) -> None:
        if threads is not None:
            torch.set_num_threads(threads)
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        self.device = torch.device(device)
        self.model = self.bundle.load_model(device=device)
        cfg = self.model.cfg
        self.num_classes = cfg.num_classes
        self.num_exits = cfg.num_exits
        self.mean = torch.tensor(cfg.mean, device=self.device).view(1, 3, 1, 1)
        self.inv_std = 1.0 / torch.tensor(cfg.std, device=self.device).view(1, 3, 1, 1)
        cal = self.bundle.calibration or {}
        self.margins = np.asarray(cal['margins'], dtype=np.float32) if 'margins' in cal else None
        self._thresholds: dict[ExitPolicy, torch.Tensor | None] = {}

    # -- policies ------------------------------------------------------------------------------
    def resolve(self, policy: str | ExitPolicy) -> ExitPolicy:
        """A policy object from its string form; 'adaptive' is the bundle's recommended point."""
        if isinstance(policy, ExitPolicy):
            return policy
        if policy.strip() == 'adaptive':
            profile = self.bundle.profile or {}
            if 'recommended' not in profile:
                raise BundleError(f'bundle {self.bundle.path} has no operating-point profile; '
                                  'run ee-seg calibrate on it first')
            return ExitPolicy.parse(profile['recommended'])
        return ExitPolicy.parse(policy)

    def thresholds(self, policy: ExitPolicy) -> torch.Tensor | None:
        if policy not in self._thresholds:
            th = None
            if policy.rule in ('global', 'cbt'):
                if policy.rule == 'cbt' and self.margins is None:
                    raise BundleError(f'bundle {self.bundle.path} has no CBT calibration; '
                                      'run ee-seg calibrate on it first')
                th = torch.from_numpy(policy.class_thresholds(self.margins, self.num_classes))
            self._thresholds[policy] = None if th is None else th.to(self.device)
        return self._thresholds[policy]

    # -- one frame -----------------------------------------------------------------------------
    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f'expected an RGB uint8 HxWx3 frame, got shape {image.shape} '
                             f'dtype {image.dtype}')
        x = torch.from_numpy(image).to(self.device).permute(2, 0, 1)[None].float()
        return (x - self.mean) * self.inv_std

    @torch.no_grad()
    def segment(self, image: np.ndarray, policy: str | ExitPolicy = 'full',
                guard: Callable[[int], bool] | None = None, want_exit_map: bool = True
                ) -> SegmentationResult:
        """Segment one RGB frame; outputs are at the frame's own resolution."""
        start = time.perf_counter()
        policy = self.resolve(policy)
        h, w = image.shape[:2]
        out = self.model.forward_adaptive(self.preprocess(image), policy,
                                          self.thresholds(policy), guard)
        patch = self.model.cfg.patch
        padded = (h + (-h) % patch, w + (-w) % patch)
        logits = F.interpolate(out.logits, size=padded, mode='bilinear',
                               align_corners=False)[0, :, :h, :w]
        top, labels = logits.max(dim=0)
        # max softmax = 1 / sum(exp(l - l_max)): no full softmax tensor needed
        conf = torch.exp(logits - top).sum(dim=0).reciprocal_()
        label_dtype = torch.uint8 if self.num_classes <= 256 else torch.int32
        labels_np = labels.to(label_dtype).cpu().numpy()
        if label_dtype != torch.uint8:
            labels_np = labels_np.astype(np.uint16)
        conf_np = (conf * 255.0).round_().to(torch.uint8).cpu().numpy()
        exit_map = None
        if want_exit_map:
            ids = out.exit_ids.to(torch.uint8)
            exit_map = ids.repeat_interleave(patch, 0).repeat_interleave(patch, 1)[:h, :w]
            exit_map = exit_map.cpu().numpy()
        return SegmentationResult(
            labels=labels_np, confidence=conf_np, exit_map=exit_map, exit_taken=out.exit_taken,
            stopped_fraction=out.stopped_fraction, gmacs=out.macs / 1e9,
            latency_ms=(time.perf_counter() - start) * 1e3, guard_stop=out.guard_stop,
            policy=policy.spec())
