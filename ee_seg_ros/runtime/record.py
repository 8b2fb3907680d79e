"""One typed record per processed frame, from the pipeline to every place that reports it.

The node publishes it on ``~/exit_stats`` (a DiagnosticArray, so as key/value strings), replay
keeps it as its rows and writes it to the output bag, ``ee-seg score`` reads it back from a
recording, and reports summarise it. The conversion to and from strings lives here and only
here, so no reader parses a field differently from the writer (``'True'`` against ``True``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from .pipeline import FrameCounts, StepResult

from ..control import Signals  # noqa: I100


@dataclass(frozen=True)
class Counts:
    """Frame counts at one moment: received = processed + dropped + rejected + pending."""

    received: int = 0
    processed: int = 0
    dropped: int = 0
    rejected: int = 0
    pending: int = 0     # waiting for or in the model when counted

    @classmethod
    def of(cls, counts: FrameCounts) -> 'Counts':
        return cls(counts.received, counts.processed, counts.dropped, counts.rejected,
                   counts.pending)


@dataclass(frozen=True)
class FrameRecord:
    """What one processed frame did, in the units the reports use."""

    camera: str                  # camera name ('' for the node's single camera)
    index: int                   # this camera's processed-frame number, from 0
    stamp_ns: int                # the input header stamp
    frame_id: str
    time_s: float                # arrival, on the run's clock (ROS time; bag time in replay)
    # named as in replay's report series since before this record (fleet merges read them)
    point: str                   # the operating point
    exit: int                    # the exit taken (number of exits = final decoder)
    stopped: float               # stopped fraction after the last exit reached
    gmacs: float                 # executed multiply-adds / 1e9
    latency_ms: float            # inference
    wait_ms: float               # arrival to the start of inference (the model was busy)
    total_ms: float              # arrival to masks published: what the deadline measures
    budget_ms: float             # this frame's deadline after battery tiers
    deadline_met: bool
    guard_stop: bool
    battery: float | None
    battery_tier: str
    cpu_load: float | None
    cpu_tier: str
    decode_ms: float = 0.0       # image message to network input (inside wait_ms)
    output_ms: float = 0.0       # outputs at the input size, and published by the node
    transport_ms: float = 0.0    # publisher's write to delivery in the node (0 in replay)
    dispatch_ms: float = 0.0     # delivery to the node's callback: arrival (0 in replay)
    camera_counts: Counts = Counts()
    total_counts: Counts = Counts()

    @classmethod
    def of(cls, result: StepResult, signals: Signals, total_ms: float, deadline_ms: float,
           stamp_ns: int, camera: str = '', index: int = 0, time_s: float = 0.0,
           decode_ms: float = 0.0, output_ms: float = 0.0,
           transport_ms: float = 0.0, dispatch_ms: float = 0.0,
           camera_counts: FrameCounts | None = None,
           total_counts: FrameCounts | None = None) -> 'FrameRecord':
        seg, d, frame = result.segmentation, result.decision, result.frame
        cam = Counts.of(camera_counts) if camera_counts is not None else Counts()
        return cls(
            camera=camera, index=index, stamp_ns=int(stamp_ns),
            frame_id=frame.frame_id, time_s=time_s, point=d.point.policy,
            exit=int(seg.exit_taken),
            stopped=float(seg.stopped_fraction[-1]) if seg.stopped_fraction else 0.0,
            gmacs=float(seg.gmacs), latency_ms=float(seg.latency_ms),
            wait_ms=float(result.waited_ms), total_ms=float(total_ms),
            budget_ms=float(d.budget_ms), deadline_met=total_ms <= deadline_ms,
            guard_stop=bool(seg.guard_stop), battery=signals.battery,
            battery_tier=d.battery_tier, cpu_load=signals.cpu_load, cpu_tier=d.cpu_tier,
            decode_ms=float(decode_ms), output_ms=float(output_ms),
            transport_ms=float(transport_ms), dispatch_ms=float(dispatch_ms),
            camera_counts=cam,
            total_counts=Counts.of(total_counts) if total_counts is not None else cam)

    # -- as ~/exit_stats key/value pairs ---------------------------------------------------
    def to_values(self) -> dict[str, str]:
        """The key/value strings of ``~/exit_stats``. The keys of the one-camera node are
        kept (``frames_*`` are this camera's counts); ``total_frames_*`` are all cameras'."""
        c, t = self.camera_counts, self.total_counts
        return {
            'camera': self.camera, 'frame_index': str(self.index),
            'exit_taken': str(self.exit),
            'stopped_fraction': f'{self.stopped:.4f}', 'gmacs': f'{self.gmacs:.4f}',
            'latency_ms': f'{self.latency_ms:.2f}', 'wait_ms': f'{self.wait_ms:.2f}',
            'total_ms': f'{self.total_ms:.2f}', 'budget_ms': f'{self.budget_ms:.2f}',
            'deadline_met': _flag(self.deadline_met), 'guard_stop': _flag(self.guard_stop),
            'operating_point': self.point,
            'battery': 'unknown' if self.battery is None else f'{self.battery:.3f}',
            'battery_tier': self.battery_tier,
            'cpu_load': 'unknown' if self.cpu_load is None else f'{self.cpu_load:.3f}',
            'cpu_tier': self.cpu_tier, 'decode_ms': f'{self.decode_ms:.3f}',
            'output_ms': f'{self.output_ms:.3f}', 'transport_ms': f'{self.transport_ms:.3f}',
            'dispatch_ms': f'{self.dispatch_ms:.3f}',
            'frames_received': str(c.received), 'frames_processed': str(c.processed),
            'frames_dropped': str(c.dropped), 'frames_rejected': str(c.rejected),
            'frames_pending': str(c.pending),
            'total_frames_received': str(t.received),
            'total_frames_processed': str(t.processed),
            'total_frames_dropped': str(t.dropped), 'total_frames_rejected': str(t.rejected),
            'total_frames_pending': str(t.pending)}

    @classmethod
    def from_values(cls, values: dict[str, str], stamp_ns: int, frame_id: str = '',
                    time_s: float = 0.0) -> 'FrameRecord':
        """Read back what ``to_values`` wrote (also from recordings of an older node, which
        lacks the camera, waiting and total fields). Raises ValueError naming a bad field."""
        def num(key: str, default: float | None = None) -> float:
            raw = values.get(key)
            if raw is None:
                if default is None:
                    raise ValueError(f'exit statistics lack {key!r}')
                return default
            try:
                return float(raw)
            except ValueError:
                raise ValueError(f'exit statistics field {key}={raw!r} is not a number') \
                    from None

        def opt(key: str) -> float | None:
            raw = values.get(key, 'unknown')
            return None if raw == 'unknown' else num(key)

        latency = num('latency_ms')
        cam = Counts(*(int(num(f'frames_{k}', 0)) for k in _COUNT_KEYS))
        total = Counts(*(int(num(f'total_frames_{k}', getattr(cam, k))) for k in _COUNT_KEYS))
        return cls(
            camera=values.get('camera', ''), index=int(num('frame_index', 0)),
            stamp_ns=stamp_ns, frame_id=frame_id, time_s=time_s,
            point=values.get('operating_point', ''),
            exit=int(num('exit_taken')), stopped=num('stopped_fraction', 0.0),
            gmacs=num('gmacs', 0.0), latency_ms=latency, wait_ms=num('wait_ms', 0.0),
            total_ms=num('total_ms', latency), budget_ms=num('budget_ms'),
            deadline_met=_read_flag(values, 'deadline_met'),
            guard_stop=_read_flag(values, 'guard_stop'), battery=opt('battery'),
            battery_tier=values.get('battery_tier', ''), cpu_load=opt('cpu_load'),
            cpu_tier=values.get('cpu_tier', ''), decode_ms=num('decode_ms', 0.0),
            output_ms=num('output_ms', 0.0), transport_ms=num('transport_ms', 0.0),
            dispatch_ms=num('dispatch_ms', 0.0),
            camera_counts=cam, total_counts=total)

    def row(self) -> dict[str, Any]:
        """Plain data for JSON (report series)."""
        out = asdict(self)
        for key in ('camera_counts', 'total_counts'):
            out.pop(key)
        return {k: (None if isinstance(v, float) and math.isnan(v) else v)
                for k, v in out.items()}


_COUNT_KEYS = tuple(f.name for f in fields(Counts))


def _flag(value: bool) -> str:
    return str(value)   # 'True' / 'False', as the node has always published them


def _read_flag(values: dict[str, str], key: str) -> bool:
    """'True'/'False' (case-insensitive)."""
    raw = values.get(key, 'false').strip().lower()
    if raw not in ('true', 'false'):
        raise ValueError(f'exit statistics field {key}={values[key]!r} is not true or false')
    return raw == 'true'
