"""Several cameras sharing one network: newest frame per camera, who runs next, and how much
time each camera's frames may take.

Used by the node (frames arrive on executor threads, inference runs on the main thread) and
by replay (frames arrive in bag time), so a replay of a multi-camera drive predicts what the
node does with the same cameras. Nothing here imports rclpy.

- **Newest frame only**, per camera: a frame replaced before the model took it is counted as
  dropped *for that camera*. Counts per camera add up (received = processed + dropped +
  rejected, plus the frames still waiting); the total is their sum.
- **Who runs next**: the waiting frame of the highest priority, and among equal priorities the
  oldest. Every camera holds at most one waiting frame, so a camera that floods cannot push
  another's frame back: at equal priority a frame waits at most one frame of each other camera.
- **Time per frame**: ``latency_budget_ms`` is each frame's deadline from its arrival, so
  waiting counts. On top of that the cameras' measured frame rates bound the time a frame may
  take: the model has 1000 ms of work per second, and if the cameras send more frames than it
  can serve at the chosen point, frames are dropped. ``allowances`` shares that second out by
  priority (the highest level first, each level at most the deadline, every lower camera kept
  at least the cheapest point), so the controller moves to cheaper points before drops start.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..control import Signals
from .pipeline import Frame, FrameCounts, Pipeline, StepResult, reason_key
from .record import FrameRecord


@dataclass(frozen=True)
class Waiting:
    """A frame waiting for the model: its camera, the caller's message, its arrival time
    (seconds on the clock the caller passes to ``offer``)."""

    camera: str
    item: Any
    arrival: float


class _Rate:
    """A camera's frame interval, smoothed; a camera that goes quiet counts as slowing."""

    def __init__(self, smoothing: float) -> None:
        self.smoothing = smoothing
        self.last: float | None = None
        self.interval: float | None = None

    def arrive(self, now: float) -> None:
        if self.last is not None:
            gap = max(now - self.last, 0.0)
            self.interval = gap if self.interval is None else \
                self.interval + self.smoothing * (gap - self.interval)
        self.last = now

    def per_second(self, now: float) -> float:
        """Frames per second (0 while unknown: fewer than two frames seen)."""
        if self.interval is None or self.last is None:
            return 0.0
        interval = max(self.interval, now - self.last, 1e-3)
        return 1.0 / interval


class CameraScheduler:
    """Per-camera newest-frame slots, counts and rates; thread-safe (``offer`` from intake
    threads, ``take`` from the inference thread)."""

    def __init__(self, cameras: Iterable[str], priorities: Mapping[str, int] | None = None,
                 rate_smoothing: float = 0.2) -> None:
        self.cameras = list(dict.fromkeys(cameras))
        if not self.cameras:
            raise ValueError('the scheduler needs at least one camera')
        unknown = set(priorities or {}) - set(self.cameras)
        if unknown:
            raise ValueError(f'priority for unknown cameras {sorted(unknown)}; cameras: '
                             f'{self.cameras}')
        self.priorities = {c: int((priorities or {}).get(c, 0)) for c in self.cameras}
        self.counts = {c: FrameCounts() for c in self.cameras}
        self._slots: dict[str, Waiting] = {}
        self._busy: set[str] = set()     # taken, not yet processed, dropped or rejected
        self._rates = {c: _Rate(rate_smoothing) for c in self.cameras}
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)

    def _check(self, camera: str) -> None:
        if camera not in self.counts:
            raise KeyError(f'unknown camera {camera!r}; cameras: {self.cameras}')

    # -- intake ----------------------------------------------------------------------------
    def offer(self, camera: str, item: Any, now: float) -> None:
        """A frame arrived: it replaces the camera's waiting frame (counted as dropped)."""
        self._check(camera)
        with self._ready:
            c = self.counts[camera]
            c.received += 1
            if camera in self._slots:
                c.dropped += 1
            self._slots[camera] = Waiting(camera, item, now)
            self._rates[camera].arrive(now)
            self._ready.notify()

    def refuse(self, camera: str, reason: str) -> None:
        """A frame that arrived but cannot even be held (it does not deserialise): received
        and rejected at once."""
        self._check(camera)
        with self._lock:
            c = self.counts[camera]
            c.received += 1
            c.rejected += 1
            c.reasons[reason_key(reason)] += 1

    def take(self) -> Waiting | None:
        """The next frame for the model (removed from its slot), or None when none waits."""
        with self._lock:
            return self._take()

    def _take(self) -> Waiting | None:
        if not self._slots:
            return None
        best = min(self._slots.values(),
                   key=lambda w: (-self.priorities[w.camera], w.arrival))
        del self._slots[best.camera]
        self._busy.add(best.camera)
        return best

    def release(self, camera: str) -> None:
        """A taken frame has been accounted for (processed, dropped or rejected)."""
        with self._lock:
            self._busy.discard(camera)

    def settle(self, camera: str, outcome: FrameCounts) -> None:
        """A taken frame's outcome (what ``Pipeline.step`` counted) added to the camera's counts
        and the frame released in one step, so counts read meanwhile still add up."""
        with self._lock:
            c = self.counts[camera]
            c.processed += outcome.processed
            c.dropped += outcome.dropped
            c.rejected += outcome.rejected
            c.reasons.update(outcome.reasons)
            c.guard_stops += outcome.guard_stops
            self._busy.discard(camera)

    def wait(self, timeout: float) -> Waiting | None:
        """``take``, waiting up to ``timeout`` seconds for a frame."""
        with self._ready:
            if not self._slots:
                self._ready.wait(timeout)
            return self._take()

    def waiting(self) -> int:
        with self._lock:
            return len(self._slots)

    def peek_arrivals(self) -> dict[str, float]:
        """Arrival times of the frames waiting now, by camera."""
        with self._lock:
            return {c: w.arrival for c, w in self._slots.items()}

    # -- accounting for frames taken ---------------------------------------------------------
    def dropped(self, camera: str) -> None:
        """A taken frame that is not run (the node is disabled)."""
        self._check(camera)
        with self._lock:
            self.counts[camera].dropped += 1
            self._busy.discard(camera)

    def rejected(self, camera: str, reason: str) -> None:
        self._check(camera)
        with self._lock:
            c = self.counts[camera]
            c.rejected += 1
            c.reasons[reason_key(reason)] += 1
            self._busy.discard(camera)

    def total(self) -> FrameCounts:
        """All cameras' counts summed (a copy)."""
        with self._lock:
            out = FrameCounts()
            for c in self.counts.values():
                out.received += c.received
                out.processed += c.processed
                out.dropped += c.dropped
                out.rejected += c.rejected
                out.deadline_hits += c.deadline_hits
                out.guard_stops += c.guard_stops
                out.reasons.update(c.reasons)
            out.pending = len(self._slots) + len(self._busy)
            return out

    def snapshot(self, camera: str) -> FrameCounts:
        """One camera's counts (a copy, safe to read while frames arrive)."""
        with self._lock:
            c = self.counts[camera]
            return FrameCounts(c.received, c.processed, c.dropped, c.rejected,
                               c.reasons.copy(), c.deadline_hits, c.guard_stops,
                               self._pending(camera))

    def _pending(self, camera: str) -> int:
        return int(camera in self._slots) + int(camera in self._busy)

    def balanced(self) -> bool:
        """received = processed + dropped + rejected + waiting + in flight, per camera (and
        so in total)."""
        with self._lock:
            return all(c.received == c.processed + c.dropped + c.rejected + self._pending(name)
                       for name, c in self.counts.items())

    # -- load ------------------------------------------------------------------------------
    def rates(self, now: float) -> dict[str, float]:
        """Measured frames per second of each camera."""
        with self._lock:
            return {c: r.per_second(now) for c, r in self._rates.items()}

    def allowances(self, now: float, deadline_ms: float, floor_ms: float) -> dict[str, float]:
        """Milliseconds of model time each camera's frames may take so that every camera keeps
        up, by priority. See ``share_model_time``."""
        return share_model_time(self.rates(now), self.priorities, deadline_ms, floor_ms)


def share_model_time(rates: Mapping[str, float], priorities: Mapping[str, int],
                     deadline_ms: float, floor_ms: float,
                     capacity_ms: float = 1000.0) -> dict[str, float]:
    """Time per frame for each camera, so that the frames the cameras send each second fit in
    the model's second (``capacity_ms``).

    Priority levels are served from the highest: a level gets an equal share per frame of what
    is left, at most ``deadline_ms``, after keeping ``floor_ms`` (the cheapest point) per frame
    for every camera below it; what a level leaves goes to the next. Cameras whose rate is not
    known yet get the deadline. When even the floor does not fit, every level gets the floor:
    frames will be dropped whatever the controller does.
    """
    out = {c: deadline_ms for c, r in rates.items() if r <= 0}
    known = {c: r for c, r in rates.items() if r > 0}
    remaining = capacity_ms
    for level in sorted({priorities.get(c, 0) for c in known}, reverse=True):
        members = [c for c in known if priorities.get(c, 0) == level]
        level_rate = sum(known[c] for c in members)
        lower = sum(r for c, r in known.items() if priorities.get(c, 0) < level)
        share = (remaining - floor_ms * lower) / level_rate
        share = min(deadline_ms, max(share, floor_ms))
        if not math.isfinite(share):
            share = deadline_ms
        remaining = max(remaining - share * level_rate, 0.0)
        for c in members:
            out[c] = share
    return out


class SharedPipeline:
    """One Pipeline (one network, one controller) serving several cameras through a
    CameraScheduler. The caller offers frames as they arrive, takes the next one when the
    model is free, decodes it, runs it here, publishes, and finishes it into a FrameRecord."""

    def __init__(self, pipeline: Pipeline, cameras: Iterable[str],
                 priorities: Mapping[str, int] | None = None) -> None:
        self.pipeline = pipeline
        self.scheduler = CameraScheduler(cameras, priorities)
        self._index = {c: 0 for c in self.scheduler.cameras}

    @property
    def cameras(self) -> list[str]:
        return self.scheduler.cameras

    def offer(self, camera: str, item: Any, now: float) -> None:
        self.scheduler.offer(camera, item, now)

    def rejected(self, waiting: Waiting, reason: str) -> None:
        self.scheduler.rejected(waiting.camera, reason)

    def dropped(self, waiting: Waiting) -> None:
        self.scheduler.dropped(waiting.camera)

    def allowance(self, camera: str, now: float) -> float:
        """The model time this camera's next frame may take (see ``share_model_time``)."""
        ctrl = self.pipeline.controller
        return self.scheduler.allowances(now, ctrl.effective_budget(),
                                         ctrl.predicted_ms(0))[camera]

    def run(self, waiting: Waiting, frame: Frame, signals: Signals, now: float,
            want_exit_map: bool = True) -> StepResult | None:
        """Segment a taken frame. ``now`` (the scheduler's clock) is when inference starts, so
        the frame's wait is ``now - arrival``. None when inference failed (rejected)."""
        camera = waiting.camera
        outcome = FrameCounts()
        result = self.pipeline.step(
            frame, signals, want_exit_map, waited_ms=max(now - waiting.arrival, 0.0) * 1e3,
            limit_ms=self.allowance(camera, now), lane=camera, counts=outcome)
        self.scheduler.settle(camera, outcome)
        return result

    def finish(self, waiting: Waiting, result: StepResult, signals: Signals, stamp_ns: int,
               total_ms: float | None = None, time_s: float | None = None,
               decode_ms: float = 0.0, output_ms: float = 0.0, transport_ms: float = 0.0,
               dispatch_ms: float = 0.0) -> FrameRecord:
        """Count the frame's deadline (``total_ms`` from arrival to publication; default
        waiting + inference + output) and return its record."""
        camera = waiting.camera
        counts = self.scheduler.counts[camera]
        total = result.waited_ms + result.segmentation.latency_ms + output_ms \
            if total_ms is None else total_ms
        self.pipeline.finish(result, total, counts=counts)
        index = self._index[camera]
        self._index[camera] += 1
        return FrameRecord.of(result, signals, total,
                              self.pipeline.controller.settings.latency_budget_ms, stamp_ns,
                              camera=camera, index=index,
                              time_s=waiting.arrival if time_s is None else time_s,
                              decode_ms=decode_ms, output_ms=output_ms,
                              transport_ms=transport_ms, dispatch_ms=dispatch_ms,
                              camera_counts=self.scheduler.snapshot(camera),
                              total_counts=self.scheduler.total())
