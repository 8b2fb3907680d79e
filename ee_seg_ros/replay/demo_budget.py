"""The demo's latency budget, sized from what this machine measures at warm-up.

A fixed budget only fits the machine the profile was measured on: on a CPU that runs the
network 1.7x slower, a 60 ms budget cannot be met by any point and the demo shows nothing but
misses. So the demo times the profile's cheapest operating point on its own first frames and
gives the controller a fixed multiple of that: the same room above the cheapest point on every
machine, which leaves the controller a choice of points to trade accuracy for time.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..runtime import Segmenter

DEFAULT_MULTIPLE = 2.0


@dataclass(frozen=True)
class MeasuredBudget:
    """How the demo's budget was chosen (printed, and kept in the report)."""
    budget_ms: float
    source: str              # 'measured' or 'given' (--budget-ms)
    cheapest_point: str      # the profile's fastest operating point
    cheapest_ms: float       # its median latency here, over the timed runs (0 when given)
    profiled_ms: float       # its p50 in the bundle's profile (the calibration machine)
    multiple: float
    timed_runs: int

    def describe(self) -> str:
        if self.source == 'given':
            return f'budget {self.budget_ms:.1f} ms (given with --budget-ms)'
        return (f'budget {self.budget_ms:.1f} ms = {self.multiple:g} x {self.cheapest_ms:.1f} ms, '
                f'the median latency of the cheapest point `{self.cheapest_point}` measured here '
                f'over {self.timed_runs} warm-up runs (profile: {self.profiled_ms:.1f} ms on '
                f'the calibration machine)')

    def as_dict(self) -> dict:
        return asdict(self)


def cheapest_point(segmenter: Segmenter) -> tuple[str, float]:
    """The profile's fastest point and its profiled p50 latency (ms)."""
    points = (segmenter.bundle.profile or {}).get('points') or []
    if not points:
        raise ValueError(f'bundle {segmenter.bundle.path} has no operating-point profile; '
                         'run ee-seg calibrate on it first')
    best = min(points, key=lambda p: p['latency_ms_p50'])
    return best['policy'], float(best['latency_ms_p50'])


def measure_budget(segmenter: Segmenter, frames: Sequence[np.ndarray],
                   multiple: float = DEFAULT_MULTIPLE, runs: int = 10,
                   untimed: int = 2) -> MeasuredBudget:
    """Time the cheapest point on ``frames`` (cycled; ``untimed`` runs first pay for lazy
    initialisation) and return ``multiple`` x its median latency as the budget."""
    if multiple <= 1.0:
        raise ValueError(f'the budget multiple must be above 1 (the cheapest point alone '
                         f'would use the whole budget), got {multiple}')
    if not frames:
        raise ValueError('measuring the budget needs at least one frame')
    policy, profiled = cheapest_point(segmenter)
    times = []
    for i in range(untimed + runs):
        start = time.perf_counter()
        segmenter.segment(frames[i % len(frames)], policy, want_exit_map=False)
        if i >= untimed:
            times.append((time.perf_counter() - start) * 1e3)
    cheapest = statistics.median(times)
    return MeasuredBudget(budget_ms=round(multiple * cheapest, 1), source='measured',
                          cheapest_point=policy, cheapest_ms=round(cheapest, 2),
                          profiled_ms=profiled, multiple=multiple, timed_runs=runs)


def given_budget(segmenter: Segmenter, budget_ms: float) -> MeasuredBudget:
    if not budget_ms > 0:
        raise ValueError(f'--budget-ms must be positive, got {budget_ms}')
    policy, profiled = cheapest_point(segmenter)
    return MeasuredBudget(budget_ms=budget_ms, source='given', cheapest_point=policy,
                          cheapest_ms=0.0, profiled_ms=profiled, multiple=0.0, timed_runs=0)


def what_the_demo_measures(budget: MeasuredBudget, frames: int, rate: float, seed: int) -> str:
    """The paragraph the demo puts at the top of its report: what its figures mean."""
    return '\n'.join([
        '## What this demo measures', '',
        f'{frames} synthetic street scenes (seed {seed}, drawn by `ee_seg_ros.data.synthetic` '
        'with exact CamVid class ids; `ee-seg train --synthetic` draws seed 1 by default, so '
        f'these frames are not among its training scenes) replayed at {rate:g} Hz through the '
        'same pipeline and controller as the ROS 2 node, with a battery draining from 60% to '
        '8% and a CPU-load spike (a signal in the bag that does not load the CPU; the '
        'controller reacts to it as the node would, and runs on one thread during the spike).',
        '', f'- Budget: {budget.describe()}.',
        '- Deadline hit rate and latency: wall-clock time per frame on this machine against '
        'that budget; they move from run to run and with whatever else runs on the CPU.',
        '- mIoU: the adaptive points\' masks against the scenes\' exact labels, over all '
        'frames; agreement with full depth: the same masks against full depth\'s masks.',
        '- GMACs, exits and stopped fractions: what the network executed, counted per frame.',
        '- What it does not measure: accuracy on real camera images (see the CamVid figures '
        'in the README) or the ROS 2 transport.', ''])


def annotate_report(out: Path, budget: MeasuredBudget, note: str) -> None:
    """Put the demo's note under the report's first line and its budget into report.json."""
    import json
    md = out / 'report.md'
    lines = md.read_text().split('\n')
    md.write_text('\n'.join(lines[:2] + [note] + lines[2:]))
    js = out / 'report.json'
    report = json.loads(js.read_text())
    report['demo_budget'] = budget.as_dict()
    js.write_text(json.dumps(report, indent=1) + '\n')
