"""Run one frame at one operating point and return everything a consumer publishes.

The Segmenter owns the bundle, the policies and the outputs' form (label ids, confidence,
exit map at the frame's resolution); a backend (PyTorch, or ONNX Runtime) runs the network. The
ROS node, replay, eval and bench all call it, so their numbers describe the same computation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..bundle import Bundle, BundleError, load_bundle
from ..model import ExitPolicy, ModelConfig
from .backend import Backend

BACKENDS = ('torch', 'onnxruntime')


@dataclass
class SegmentationResult:
    labels: np.ndarray            # (H, W) uint8 class ids (uint16 above 256 classes)
    confidence: np.ndarray        # (H, W) uint8: winning class probability x 255
    exit_map: np.ndarray | None   # (H, W) uint8: exit where each pixel's patch stopped
    exit_taken: int               # exit the frame left at; num_exits = final decoder
    stopped_fraction: list[float] = field(default_factory=list)
    gmacs: float = 0.0            # executed multiply-adds / 1e9
    latency_ms: float = 0.0       # preprocessing to postprocessing, this frame
    guard_stop: bool = False
    policy: str = 'full'


def make_backend(name: str, bundle: Bundle, device: str, threads: int | None,
                 precision: str = 'fp32') -> Backend:
    """The backend called ``name``, imported on first use (each needs its own runtime)."""
    if precision != 'fp32' and name != 'onnxruntime':
        raise ValueError(f'precision {precision} needs the onnxruntime backend')
    if name == 'torch':
        try:
            from .torch_backend import TorchBackend
        except ImportError as err:
            if err.name != 'torch':
                raise
            raise BundleError('the torch backend needs PyTorch: pip install "ee_seg_ros[torch]",'
                              ' or use the onnxruntime backend') from None
        return TorchBackend(bundle, device, threads)
    if name == 'onnxruntime':
        from .onnx_backend import OnnxBackend
        return OnnxBackend(bundle, device, threads, precision)
    raise ValueError(f'unknown backend {name!r}; expected one of {BACKENDS}')


class Segmenter:
    """A loaded bundle on a backend, ready to segment RGB frames."""

    def __init__(self, bundle: Bundle | str | None = None, device: str = 'cpu',
                 threads: int | None = None, backend: str = 'torch',
                 precision: str = 'fp32') -> None:
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        self.cfg = ModelConfig.from_dict(self.bundle.config)
        self.backend: Backend = make_backend(backend, self.bundle, device, threads, precision)
        self.threads = self.backend.threads        # configured inference threads
        self.num_classes = self.cfg.num_classes
        self.num_exits = self.cfg.num_exits
        cal = self.bundle.calibration or {}
        self.margins = np.asarray(cal['margins'], dtype=np.float32) if 'margins' in cal else None
        self._thresholds: dict[ExitPolicy, np.ndarray | None] = {}

    @property
    def model(self) -> Any:
        """The PyTorch network (torch backend only: calibration and training use it)."""
        model = getattr(self.backend, 'model', None)
        if model is None:
            raise ValueError(f'the {self.backend.name} backend has no PyTorch model; '
                             'use the torch backend')
        return model

    def use_threads(self, threads: int = 0) -> None:
        """Run the next frames on ``threads`` inference threads (0: the configured count).
        The backend switches only when the count changes."""
        self.backend.set_threads(threads or self.threads)

    def prepare_threads(self, threads: int) -> None:
        """Build what running on ``threads`` threads needs (ONNX Runtime sessions) now, so that
        the first frame that asks for them does not pay for it; the current count is kept."""
        if threads:
            self.backend.prepare_threads(threads)

    def preprocess(self, image: np.ndarray):
        return self.backend.preprocess(image)

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

    def thresholds(self, policy: ExitPolicy) -> np.ndarray | None:
        if policy not in self._thresholds:
            th = None
            if policy.rule in ('global', 'cbt'):
                if policy.rule == 'cbt' and self.margins is None:
                    raise BundleError(f'bundle {self.bundle.path} has no CBT calibration; '
                                      'run ee-seg calibrate on it first')
                th = policy.class_thresholds(self.margins, self.num_classes)
            self._thresholds[policy] = th
        return self._thresholds[policy]

    # -- one frame -----------------------------------------------------------------------------
    def segment(self, image: np.ndarray, policy: str | ExitPolicy = 'full',
                guard: Callable[[int], bool] | None = None, want_exit_map: bool = True
                ) -> SegmentationResult:
        """Segment one RGB frame; outputs are at the frame's own resolution."""
        start = time.perf_counter()
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f'expected an RGB uint8 HxWx3 frame, got shape {image.shape} '
                             f'dtype {image.dtype}')
        policy = self.resolve(policy)
        out = self.backend.infer(image, policy, self.thresholds(policy), guard)
        h, w = image.shape[:2]
        labels = out.labels.astype(np.uint8 if self.num_classes <= 256 else np.uint16,
                                   copy=False)
        exit_map = None
        if want_exit_map:
            p = self.cfg.patch
            exit_map = np.repeat(np.repeat(out.exit_ids.astype(np.uint8), p, 0), p, 1)[:h, :w]
        return SegmentationResult(
            labels=labels, confidence=out.confidence, exit_map=exit_map,
            exit_taken=out.exit_taken, stopped_fraction=out.stopped_fraction,
            gmacs=out.macs / 1e9, latency_ms=(time.perf_counter() - start) * 1e3,
            guard_stop=out.guard_stop, policy=policy.spec())
