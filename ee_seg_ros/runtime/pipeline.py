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
    """Every frame that enters is processed, dropped (replaced by a newer one) or rejected;
    ``pending`` counts those not settled yet (waiting for or in the model) when the counts were
    read, so a snapshot taken at any moment adds up."""

    received: int = 0
    processed: int = 0
    dropped: int = 0
    rejected: int = 0
    reasons: Counter = field(default_factory=Counter)
    deadline_hits: int = 0
    guard_stops: int = 0
    pending: int = 0

    def balanced(self) -> bool:
        return self.received == self.processed + self.dropped + self.rejected + self.pending


@dataclass
class StepResult:
    frame: Frame
    segmentation: SegmentationResult
    decision: Decision
    deadline_met: bool         # waiting + inference within the deadline (publishing not yet)
    waited_ms: float = 0.0     # arrival to the start of inference


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
    def received(self, n: int = 1, counts: FrameCounts | None = None) -> None:
        for c in _both(self.counts, counts):
            c.received += n

    def dropped(self, n: int = 1, counts: FrameCounts | None = None) -> None:
        for c in _both(self.counts, counts):
            c.dropped += n

    def rejected(self, reason: str, counts: FrameCounts | None = None) -> None:
        for c in _both(self.counts, counts):
            c.rejected += 1
            c.reasons[reason_key(reason)] += 1

    # -- one frame ------------------------------------------------------------------------------
    def step(self, frame: Frame, signals: Signals | None = None, want_exit_map: bool = True,
             *, waited_ms: float = 0.0, limit_ms: float | None = None, lane: str | None = None,
             counts: FrameCounts | None = None) -> StepResult | None:
        """Segment one received frame. An exception inside inference rejects this frame
        (counted, with its reason) and leaves the pipeline ready for the next one.

        ``waited_ms`` is how long the frame waited for the model: the deadline runs from its
        arrival, so the in-frame guard and the miss count include it. ``limit_ms`` caps the
        time the controller plans for this frame (the share the cameras' frame rates leave
        it), ``lane`` names its camera for the controller, and ``counts`` is the tally to update
        instead of the pipeline's own (a camera's; the scheduler sums them)."""
        start = time.perf_counter()
        origin = start - waited_ms * 1e-3
        budget = self.controller.settings.latency_budget_ms
        decision = self.controller.choose(signals or Signals(), limit_ms=limit_ms, lane=lane,
                                          waited_ms=waited_ms)
        policy = self.segmenter.resolve(decision.point.policy)
        guard = None
        if self.controller.settings.mode == 'adaptive':
            guard = self.controller.guard(origin, decision.budget_ms,
                                          decoder_after=policy.exit_output == 'decoder')
        try:
            self.segmenter.use_threads(decision.threads)
            seg = self.segmenter.segment(frame.image, policy, guard=guard,
                                         want_exit_map=want_exit_map)
        except Exception as err:  # noqa: BLE001 - one bad frame must not stop the stream
            self.rejected(f'inference error: {type(err).__name__}: {err}', counts)
            self.last_error = traceback.format_exc()
            return None
        latency = (time.perf_counter() - start) * 1e3
        seg.latency_ms = latency
        cost_ratio = None
        if decision.point.gmacs > 0 and seg.gmacs > 0:
            cost_ratio = seg.gmacs / decision.point.gmacs
        self.controller.observe(latency, cost_ratio, elapsed_ms=waited_ms + latency)
        met = waited_ms + latency <= budget
        for c in _both(self.counts, counts):
            c.processed += 1
            c.guard_stops += int(seg.guard_stop)
        return StepResult(frame, seg, decision, met, waited_ms)

    def finish(self, result: StepResult, total_ms: float | None = None,
               counts: FrameCounts | None = None) -> bool:
        """Count a processed frame's deadline once its masks are out. ``total_ms`` is arrival
        to publication (default: waiting + inference, as in replay)."""
        total = result.waited_ms + result.segmentation.latency_ms if total_ms is None \
            else total_ms
        met = total <= self.controller.settings.latency_budget_ms
        for c in _both(self.counts, counts):
            c.deadline_hits += int(met)
        return met


def reason_key(reason: str) -> str:
    """A rejection reason shortened to its kind, so counts group alike frames."""
    return reason.split(';')[0].split(' (')[0][:80]


def _both(own: FrameCounts, given: FrameCounts | None) -> tuple[FrameCounts, ...]:
    """The tally to update: the one given (a camera's, whose sum over cameras is the total)
    or else the pipeline's own."""
    return (own if given is None else given,)
