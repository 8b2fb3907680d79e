"""The exit-policy controller: profiled points, an online slowdown estimate, quantile margin,
hysteresis, battery and CPU tiers, and an in-frame deadline guard.

Shape (after ApproxDet, ALERT and the measurements in docs/controller.md): predicted latency of
a point = its profiled latency x exp(k + m + z sqrt(v)), where m, v are a smoothed mean and
variance of the log slowdown of the machine and k the point's smoothed log ratio of executed to
profiled multiply-adds (frames harder than the calibration data). The most accurate point
predicted to fit (1 - margin) of the effective budget is the target; the controller goes down at
once, up one step after a dwell.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

MODES = ('adaptive', 'fixed', 'full')


@dataclass(frozen=True)
class OperatingPoint:
    policy: str
    latency_ms: float
    miou: float
    gmacs: float = 0.0


@dataclass
class ControllerSettings:
    latency_budget_ms: float = 100.0
    mode: str = 'adaptive'
    fixed_point: str = ''
    margin: float = 0.1
    quantile_z: float = 1.64
    smoothing: float = 0.2
    dwell_frames: int = 15
    up_headroom: float = 0.85
    battery_low: float = 0.3
    battery_critical: float = 0.15
    battery_hysteresis: float = 0.05
    battery_low_budget_scale: float = 0.6
    battery_critical_latency_fraction: float = 0.4
    cpu_high: float = 0.8
    cpu_hysteresis: float = 0.1
    cpu_slowdown: float = 1.5
    cpu_high_threads: int = 1      # inference threads while the CPU is loaded; 0 = unchanged

    def validate(self) -> None:
        checks = [
            (self.latency_budget_ms > 0 and math.isfinite(self.latency_budget_ms),
             f'latency_budget_ms must be a positive number, got {self.latency_budget_ms}'),
            (self.mode in MODES, f'mode must be one of {MODES}, got {self.mode!r}'),
            (self.mode != 'fixed' or bool(self.fixed_point),
             'mode fixed needs an operating point (policy.point)'),
            (0 <= self.margin < 1, f'margin must be in [0, 1), got {self.margin}'),
            (0 < self.smoothing <= 1, f'smoothing must be in (0, 1], got {self.smoothing}'),
            (0 < self.battery_critical < self.battery_low < 1,
             'battery thresholds need 0 < critical < low < 1, got '
             f'critical {self.battery_critical}, low {self.battery_low}'),
            (0 < self.battery_low_budget_scale <= 1,
             f'battery low budget scale must be in (0, 1], got {self.battery_low_budget_scale}'),
            (0 < self.cpu_high <= 1, f'cpu high threshold must be in (0, 1], got {self.cpu_high}'),
            (self.cpu_slowdown >= 1, f'cpu slowdown must be >= 1, got {self.cpu_slowdown}'),
            (self.cpu_high_threads >= 0,
             f'cpu high threads must be >= 0 (0 = unchanged), got {self.cpu_high_threads}'),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


@dataclass
class Signals:
    """What the robot says about itself; None means unknown (never received, or stale)."""

    battery: float | None = None     # state of charge, 0..1
    charging: bool = False           # charging or full: no battery constraint
    cpu_load: float | None = None    # 0..1 of all cores
    stale: bool = False              # an input that was arriving has gone quiet


@dataclass(frozen=True)
class Decision:
    index: int
    point: OperatingPoint
    budget_ms: float          # effective budget after battery tiers
    predicted_ms: float       # predicted latency of the point at the high quantile
    battery_tier: str
    cpu_tier: str
    threads: int = 0          # inference threads for this frame; 0 = as configured


@dataclass
class _Lane:
    """Where one camera stands on the table: the machine's slowdown is shared by every
    camera (one network on one CPU), but hysteresis is per camera, or a camera whose frames
    may take less (it waited, or its share of the load is smaller) would pull the others down
    and reset their dwell on every frame."""

    index: int
    since_switch: int = 0
    misses: int = 0
    last_budget: float | None = None
    budget: float = math.inf     # the last decision's deadline, for counting misses


def _lane_field(name: str) -> property:
    return property(lambda self: getattr(self._lane, name),
                    lambda self, value: setattr(self._lane, name, value))


class Controller:
    """Chooses an operating point per frame; ``observe`` feeds back the measured latency.

    ``choose(..., lane=camera)`` keeps one position on the table per camera; ``observe``
    belongs to the lane of the last ``choose`` (the pipeline calls them in pairs)."""

    index = _lane_field('index')
    since_switch = _lane_field('since_switch')
    misses = _lane_field('misses')
    _last_budget = _lane_field('last_budget')

    def __init__(self, points: Sequence[OperatingPoint], settings: ControllerSettings,
                 stage_costs: dict | None = None) -> None:
        if not points:
            raise ValueError('the controller needs at least one operating point')
        settings.validate()
        self.points = sorted(points, key=lambda p: p.latency_ms)
        self.settings = settings
        self.stage_costs = stage_costs or {}
        self._lanes: dict[str | None, _Lane] = {None: _Lane(len(self.points) - 1)}
        self._lane = self._lanes[None]
        self.m = 0.0
        self.v = 0.0
        self.cost = [0.0] * len(self.points)   # per point: log(executed / profiled GMACs)
        self.switches = 0
        self.battery_tier = 'ok'
        self.cpu_tier = 'normal'
        self._battery_smooth: float | None = None

    # -- settings changed live -----------------------------------------------------------------
    def update_settings(self, settings: ControllerSettings) -> None:
        settings.validate()
        self.settings = settings

    def index_of(self, policy: str) -> int:
        for i, p in enumerate(self.points):
            if p.policy == policy:
                return i
        raise ValueError(f'operating point {policy!r} is not in the profile; known: '
                         f'{[p.policy for p in self.points]}')

    # -- tiers ---------------------------------------------------------------------------------
    def _update_battery(self, signals: Signals) -> None:
        """Tiers with hysteresis (Android style): worse at once, better only ``hysteresis``
        above the boundary. Charging lifts the constraint; unknown counts as no constraint
        (and, when stale, holds upgrades), never as the last value."""
        s = self.settings
        if signals.charging or signals.battery is None:
            self._battery_smooth = None
            self.battery_tier = 'charging' if signals.charging else 'unknown'
            return
        level = min(max(signals.battery, 0.0), 1.0)
        b = level if self._battery_smooth is None else 0.7 * self._battery_smooth + 0.3 * level
        self._battery_smooth = b
        rank = {'critical': 2, 'low': 1}
        raw = 'critical' if b < s.battery_critical else 'low' if b < s.battery_low else 'ok'
        current = self.battery_tier if self.battery_tier in rank else 'ok'
        if rank.get(raw, 0) >= rank.get(current, 0):
            self.battery_tier = raw
        elif b >= s.battery_low + s.battery_hysteresis:
            self.battery_tier = 'ok'
        elif b >= s.battery_critical + s.battery_hysteresis:
            self.battery_tier = 'low'
        else:
            self.battery_tier = current

    def _update_cpu(self, signals: Signals) -> None:
        s = self.settings
        load = signals.cpu_load
        high = self.cpu_tier == 'high'
        if load is None:
            now_high = False
        elif high:
            now_high = load >= s.cpu_high - s.cpu_hysteresis
        else:
            now_high = load >= s.cpu_high
        if now_high != high:
            jump = math.log(s.cpu_slowdown)
            self.m += jump if now_high else -jump
            self.cpu_tier = 'high' if now_high else 'normal'

    def effective_budget(self) -> float:
        s = self.settings
        budget = s.latency_budget_ms
        if self.battery_tier in ('low', 'critical'):
            budget *= s.battery_low_budget_scale
        return budget

    def allowed_max_index(self) -> int:
        if self.battery_tier != 'critical':
            return len(self.points) - 1
        limit = self.settings.battery_critical_latency_fraction * self.points[-1].latency_ms
        fitting = [i for i, p in enumerate(self.points) if p.latency_ms <= limit]
        return max(fitting) if fitting else 0

    def predicted_ms(self, index: int) -> float:
        z = self.settings.quantile_z
        return self.points[index].latency_ms * math.exp(self.cost[index] + self.m
                                                        + z * math.sqrt(self.v))

    # -- per frame -----------------------------------------------------------------------------
    def lane_index(self, lane: str | None = None) -> int:
        """The table index a camera (lane) last ran at."""
        found = self._lanes.get(lane)
        return found.index if found is not None else self._lanes[None].index

    def choose(self, signals: Signals, limit_ms: float | None = None,
               lane: str | None = None, waited_ms: float = 0.0) -> Decision:
        """The point for the next frame. The frame may take what is left of its deadline
        after ``waited_ms`` spent waiting for the model, and at most ``limit_ms`` (the share of
        the model the cameras' frame rates leave it); the deadline itself stays the decision's
        budget, for the in-frame guard and for counting misses."""
        s = self.settings
        if lane not in self._lanes:
            self._lanes[lane] = _Lane(self._lanes[None].index)
        self._lane = self._lanes[lane]
        self._update_battery(signals)
        self._update_cpu(signals)
        budget = self.effective_budget()
        tightening = self._last_budget is not None and budget < self._last_budget
        self._last_budget = budget
        self._lane.budget = budget
        if s.mode == 'fixed':
            return self._fixed(budget)
        if s.mode == 'full':
            target = len(self.points) - 1
        else:
            plan = budget - max(waited_ms, 0.0)
            if limit_ms is not None:
                plan = min(plan, limit_ms)
            plan = max(plan, 0.0)
            target = self._adaptive_target(plan, signals.stale or tightening)
        if target != self.index:
            self.index = target
            self.since_switch = 0
            self.switches += 1
        return Decision(self.index, self.points[self.index], budget,
                        self.predicted_ms(self.index), self.battery_tier, self.cpu_tier,
                        self.threads())

    def threads(self) -> int:
        """Fewer threads while other processes load the CPU: a parallel region waits for its
        slowest thread, and on an oversubscribed CPU one of them is often descheduled, so two
        threads stall far more than one runs slower (measured in bench/controller_contention).
        """
        return self.settings.cpu_high_threads if self.cpu_tier == 'high' else 0

    def _fixed(self, budget: float) -> Decision:
        """Mode fixed: the named point, from the profile when it is there (any policy string
        is allowed; one outside the profile is predicted at full-depth cost)."""
        spec = self.settings.fixed_point
        try:
            index = self.index_of(spec)
            point = self.points[index]
        except ValueError:
            index, point = -1, OperatingPoint(spec, self.points[-1].latency_ms, math.nan)
        if index != self.index:
            self.index = index
            self.since_switch = 0
            self.switches += 1
        predicted = self.predicted_ms(index) if index >= 0 else point.latency_ms * math.exp(
            self.m + self.settings.quantile_z * math.sqrt(self.v))
        return Decision(index, point, budget, predicted, self.battery_tier, self.cpu_tier,
                        self.threads())

    def _adaptive_target(self, budget: float, hold: bool) -> int:
        s = self.settings
        cap = self.allowed_max_index()
        limit = (1.0 - s.margin) * budget
        fitting = [i for i in range(cap + 1) if self.predicted_ms(i) <= limit]
        target = max(fitting) if fitting else 0
        current = min(max(self.index, 0), cap)
        if self.misses >= 2:
            self.misses = 0
            return min(target, max(current - 2, 0))
        if target <= current:
            return target
        can_up = (not hold and self.since_switch >= s.dwell_frames
                  and self.predicted_ms(current + 1) <= s.up_headroom * limit)
        return current + 1 if can_up else current

    def observe(self, latency_ms: float, cost_ratio: float | None = None,
                elapsed_ms: float | None = None) -> None:
        """Feed back a frame's measured latency. ``cost_ratio`` is the multiply-adds the frame
        executed over its point's profiled mean, when known. The machine's slowdown is learned
        from latency over the profile scaled by that ratio, so a hard frame is not mistaken for
        a slow machine; the point's own cost factor learns the ratio, so frames that stay harder
        than profiled (a scene unlike the calibration data: fewer tokens stop) make that point
        dearer in the predictions instead of going unnoticed. ``elapsed_ms`` (default: the
        latency) is the time since the frame arrived, waiting included: a miss is counted when
        it exceeds the frame's deadline."""
        if self.index < 0:  # a fixed point outside the profile: nothing to learn from
            self.since_switch += 1
            return
        a = self.settings.smoothing
        ratio = cost_ratio if cost_ratio is not None and cost_ratio > 0 else None
        if ratio is not None:
            k = self.cost[self.index]
            self.cost[self.index] = k + a * (math.log(ratio) - k)
        expected = self.points[self.index].latency_ms * (ratio or 1.0)
        r = math.log(max(latency_ms, 1e-3) / max(expected, 1e-3))
        old = self.m
        self.m += a * (r - old)
        self.v = (1 - a) * (self.v + a * (r - old) ** 2)
        self.since_switch += 1
        elapsed = latency_ms if elapsed_ms is None else elapsed_ms
        if elapsed > min(self.effective_budget(), self._lane.budget):
            self.misses += 1
        else:
            self.misses = 0

    # -- in-frame deadline guard ---------------------------------------------------------------
    def guard(self, start: float, budget_ms: float, decoder_after: bool = True,
              clock: Callable[[], float] = time.perf_counter) -> Callable[[int], bool]:
        """A callable for the network: after exit n, stop the frame there if the next stage
        and the finishing decoder would not fit in the budget any more."""
        costs = self.stage_costs
        if not costs:
            return lambda exit_index: False
        slow = math.exp(self.m)
        n = costs['tokens']
        block = costs['block_ms_intercept'] + costs['block_ms_per_token'] * n
        per_stage = [k * block + costs['exit_token_head_ms'] for k in costs['blocks_per_stage']]
        finish = costs['decoder_ms'] if decoder_after else costs['exit_dense_head_ms']

        def stop_here(exit_index: int) -> bool:
            elapsed = (clock() - start) * 1e3
            nxt = per_stage[exit_index + 1] if exit_index + 1 < len(per_stage) else 0.0
            return elapsed + (nxt + finish) * slow > budget_ms

        return stop_here
