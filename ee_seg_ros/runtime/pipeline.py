"""One frame, one path: controller, segmenter at the chosen point, statistics.

The ROS node and the replay evaluation both drive this class, so a replay predicts what the
node does with the same frames, budget and signals. It never imports rclpy.
"""

from __future__ import annotations

import time
import traceback
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from ..control import Controller, ControllerSettings, Decision, OperatingPoint, Signals
from .segmenter import SegmentationResult, Segmenter


@dataclass
class Frame:
    image: np.ndarray          # RGB uint8 (H, W, 3)
    stamp: float = 0.0         # header stamp, seconds
    frame_id: str = ''


@dataclass
class FrameCounts:
    """Every frame that enters is processed, dropped (replaced by a newer one) or rejected."""

    received: int = 0
    processed: int = 0
    dropped: int = 0
    rejected: int = 0
    reasons: Counter = field(default_factory=Counter)
    deadline_hits: int = 0
    guard_stops: int = 0

    def balanced(self) -> bool:
        return self.received == self.processed + self.dropped + self.rejected


@dataclass
class StepResult:
    frame: Frame
    segmentation: SegmentationResult
    decision: Decision
    deadline_met: bool


def profile_points(profile: dict | None) -> list[OperatingPoint]:
    """The controller's table from a bundle profile (or just full depth without one)."""
    if not profile or not profile.get('points'):
        return [OperatingPoint('full', 1.0, 0.0)]
    return [OperatingPoint(p['policy'], float(p['latency_ms_p50']), float(p['miou']),
                           float(p.get('gmacs_mean') or 0.0)) for p in profile['points']]


class Pipeline:
    def __init__(self, segmenter: Segmenter, settings: ControllerSettings | None = None) -> None:
        self.segmenter = segmenter
        profile = segmenter.bundle.profile or {}
        points = profile_points(profile)
        if not any(p.policy == 'full' for p in points):
            points.append(OperatingPoint('full', float(profile.get('full_latency_ms_p50', 1.0)),
                                         float(profile.get('full_miou', 0.0))))
        self.controller = Controller(points, settings or ControllerSettings(),
                                     stage_costs=profile.get('stage_costs'))
        self.counts = FrameCounts()
        self.last_error = ''
        segmenter.prepare_threads(self.controller.settings.cpu_high_threads)

    def update_settings(self, settings: ControllerSettings) -> None:
        """New controller settings (live parameters); raises ValueError and changes nothing when
        they are inconsistent."""
        self.controller.update_settings(settings)
        self.segmenter.prepare_threads(settings.cpu_high_threads)

    def warm_up(self, height: int | None = None, width: int | None = None) -> None:
        """Run full depth and the cheapest point once on a blank frame, so that the first camera
        frame does not pay for lazy initialisation (a deadline miss that would also inflate the
        controller's slowdown estimate for the frames after it). Counts and controller state
        are left untouched. The size defaults to the one the bundle was calibrated at."""
        h, w = self.calibrated_size()
        blank = np.zeros((height or h, width or w, 3), np.uint8)
        for policy in dict.fromkeys(('full', self.controller.points[0].policy)):
            self.segmenter.segment(blank, policy, want_exit_map=False)

    def calibrated_size(self) -> tuple[int, int]:
        """(H, W) the bundle's profile was measured at; for an uncalibrated bundle, the size its
        position grid was trained for."""
        profile = self.segmenter.bundle.profile or {}
        size = profile.get('input_size') or (profile.get('stage_costs') or {}).get('size')
        if size:
            return int(size[0]), int(size[1])
        cfg = self.segmenter.cfg
        return cfg.pos_grid[0] * cfg.patch, cfg.pos_grid[1] * cfg.patch

    # -- accounting for frames that never reach step() -------------------------------------
    def received(self, n: int = 1) -> None:
        self.counts.received += n

    def dropped(self, n: int = 1) -> None:
        self.counts.dropped += n

    def rejected(self, reason: str) -> None:
        self.counts.rejected += 1
        self.counts.reasons[reason.split(';')[0].split(' (')[0][:80]] += 1

    # -- one frame ------------------------------------------------------------------------------
    def step(self, frame: Frame, signals: Signals | None = None,
             want_exit_map: bool = True) -> StepResult | None:
        """Segment one received frame. An exception inside inference rejects this frame
        (counted, with its reason) and leaves the pipeline ready for the next one."""
        start = time.perf_counter()
        decision = self.controller.choose(signals or Signals())
        policy = self.segmenter.resolve(decision.point.policy)
        guard = None
        if self.controller.settings.mode == 'adaptive':
            guard = self.controller.guard(start, decision.budget_ms,
                                          decoder_after=policy.exit_output == 'decoder')
        try:
            self.segmenter.use_threads(decision.threads)
            seg = self.segmenter.segment(frame.image, policy, guard=guard,
                                         want_exit_map=want_exit_map)
        except Exception as err:  # noqa: BLE001 - one bad frame must not stop the stream
            self.rejected(f'inference error: {type(err).__name__}: {err}')
            self.last_error = traceback.format_exc()
            return None
        latency = (time.perf_counter() - start) * 1e3
        seg.latency_ms = latency
        cost_ratio = None
        if decision.point.gmacs > 0 and seg.gmacs > 0:
            cost_ratio = seg.gmacs / decision.point.gmacs
        self.controller.observe(latency, cost_ratio)
        met = latency <= self.controller.settings.latency_budget_ms
        self.counts.processed += 1
        self.counts.deadline_hits += int(met)
        self.counts.guard_stops += int(seg.guard_stop)
        return StepResult(frame, seg, decision, met)


def frame_values(result: StepResult, signals: Signals, counts: FrameCounts) -> dict:
    """Per-frame statistics as the node publishes them on ~/exit_stats (and replay writes
    them to its output bag, so ``ee-seg score`` reads both alike)."""
    seg, d = result.segmentation, result.decision
    return {'exit_taken': seg.exit_taken,
            'stopped_fraction': f'{seg.stopped_fraction[-1] if seg.stopped_fraction else 0:.4f}',
            'gmacs': f'{seg.gmacs:.4f}', 'latency_ms': f'{seg.latency_ms:.2f}',
            'budget_ms': f'{d.budget_ms:.2f}', 'deadline_met': result.deadline_met,
            'guard_stop': seg.guard_stop, 'operating_point': d.point.policy,
            'battery': 'unknown' if signals.battery is None else f'{signals.battery:.3f}',
            'battery_tier': d.battery_tier,
            'cpu_load': 'unknown' if signals.cpu_load is None else f'{signals.cpu_load:.3f}',
            'cpu_tier': d.cpu_tier, 'frames_received': counts.received,
            'frames_processed': counts.processed, 'frames_dropped': counts.dropped,
            'frames_rejected': counts.rejected}
