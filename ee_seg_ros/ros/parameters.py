"""The node's parameters as data: defaults, descriptions, ranges, validation, and the settings
record a change turns into.

Kept free of rclpy so the rules ``ros2 param set`` is held to are testable without ROS; the
node turns each entry into a ParameterDescriptor.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from ..control import ControllerSettings
from ..control.controller import MODES
from ..model import ExitPolicy
from ..signals import BATTERY_SCALES, CPU_SOURCES


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any
    description: str
    read_only: bool = False
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    number: bool = False      # a double that accepts an integer (stored as a double)
    array: str = ''           # 'string' / 'integer': an array whose default may be empty


PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec('model.path', '', 'Model bundle folder; empty for the bundled default model.',
              read_only=True),
    ParamSpec('model.backend', 'torch', 'Inference backend: torch, or onnxruntime (needs the '
              'bundle exported with ee-seg export-onnx).', read_only=True,
              choices=('torch', 'onnxruntime')),
    ParamSpec('model.device', 'cpu', 'Torch device: cpu or cuda.', read_only=True),
    ParamSpec('model.threads', 2, 'CPU threads for inference.', read_only=True, low=1, high=256),
    ParamSpec('model.input_width', 0, 'Resize frames to this width before inference '
              '(0 keeps the camera resolution).', read_only=True, low=0, high=7680),
    ParamSpec('input.compressed', False, 'Subscribe to image/compressed (JPEG/PNG) instead '
              'of image.', read_only=True),
    ParamSpec('input.reliable', False, 'Reliable image subscription instead of best effort.',
              read_only=True),
    ParamSpec('output.resolution', 'input', 'Publish masks at the input resolution or at '
              'the network resolution.', choices=('input', 'network')),
    ParamSpec('latency_budget_ms', 100.0, 'Per-frame latency budget in milliseconds '
              '(1..60000; an integer is accepted).', low=1.0, high=60000.0, number=True),
    ParamSpec('policy.mode', 'adaptive', 'adaptive: steer by budget, battery and CPU; fixed: '
              'always policy.point; full: always full depth.', choices=MODES),
    ParamSpec('policy.point', '', 'Operating point for mode fixed, e.g. cbt:0.5,0.99 or one '
              'of the bundle profile points.'),
    ParamSpec('policy.margin', 0.1, 'Fraction of the budget kept free.', low=0.0, high=0.9,
              number=True),
    ParamSpec('battery.low', 0.3, 'Below this state of charge the budget is scaled down.',
              low=0.0, high=1.0, number=True),
    ParamSpec('battery.critical', 0.15, 'Below this state of charge only the cheapest '
              'points are used.', low=0.0, high=1.0, number=True),
    ParamSpec('battery.low_budget_scale', 0.6, 'Budget factor while the battery is low.',
              low=0.05, high=1.0, number=True),
    ParamSpec('battery.percentage_scale', 'auto', 'BatteryState.percentage as unit (0..1), '
              'percent (0..100) or auto.', choices=BATTERY_SCALES),
    ParamSpec('cpu_load.source', 'topic', 'CPU load from the cpu_load topic (Float32), '
              '/diagnostics (cpu_monitor), the local machine, the higher of a reported and '
              'the local load (topic+local, diagnostics+local), or none.', choices=CPU_SOURCES,
              read_only=True),
    ParamSpec('cpu_load.high', 0.8, 'CPU load above which the controller expects slower '
              'frames.', low=0.05, high=1.0, number=True),
    ParamSpec('cpu_load.slowdown', 1.5, 'Expected slowdown of inference while the CPU load is '
              'high (fed forward into the latency estimate).', low=1.0, high=100.0,
              number=True),
    ParamSpec('cpu_load.threads', 1, 'Inference threads while the CPU load is high (0: keep '
              'model.threads); fewer threads stall less on a CPU shared with other work.',
              low=0, high=256),
    ParamSpec('signals.stale_after_s', 5.0, 'Battery and CPU readings older than this count '
              'as unknown.', low=0.1, high=3600.0, number=True),
    ParamSpec('enabled', True, 'Process frames (false: count and drop them).'),
    ParamSpec('overlay.alpha', 0.5, 'Opacity of the class colours in the overlay.',
              low=0.0, high=1.0, number=True),
    ParamSpec('palette', [0], 'Class colours as flat [r, g, b, ...]; [0] for the bundle '
              'palette.'),
    ParamSpec('cameras', [], 'Camera names, e.g. [front, rear]: each N is served from N/image '
              '(or N/image/compressed) and published on ~/N/mask ...; empty: one camera on '
              'image, published on ~/mask ...', read_only=True, array='string'),
    ParamSpec('camera_priorities', [], 'One integer per camera in cameras (higher is served '
              'first and gets the more accurate point when not every camera can); empty: all '
              'equal.', read_only=True, array='integer'),
)

CAMERA_NAME = re.compile(r'^[A-Za-z][A-Za-z0-9_]*$')

SPECS = {p.name: p for p in PARAMS}


def check(name: str, value: Any, num_classes: int | None = None) -> str | None:
    """Why ``value`` is not acceptable for ``name``, or None if it is."""
    spec = SPECS.get(name)
    if spec is None:
        return None  # not ours (use_sim_time and friends)
    default = spec.default
    if spec.number:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f'{name} must be a number, got {value!r}'
        if not math.isfinite(value):
            return f'{name} must be finite, got {value}'
    elif isinstance(default, bool):
        if not isinstance(value, bool):
            return f'{name} must be true or false, got {value!r}'
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            return f'{name} must be an integer, got {value!r}'
    elif isinstance(default, str) and not isinstance(value, str):
        return f'{name} must be a string, got {value!r}'
    if spec.low is not None and not spec.low <= value <= spec.high:
        return f'{name} must be in [{spec.low:g}, {spec.high:g}], got {value}'
    if spec.choices and value not in spec.choices:
        return f'{name} must be one of {list(spec.choices)}, got {value!r}'
    if name == 'policy.point' and value:
        try:
            ExitPolicy.parse(value)
        except ValueError as err:
            return str(err)
    if name == 'cameras':
        names = list(value)
        bad = [n for n in names if not isinstance(n, str) or not CAMERA_NAME.match(n)]
        if bad:
            return (f'cameras must be names of letters, digits and _ starting with a letter '
                    f'(they become topic names), got {bad!r}')
        if len(set(names)) != len(names):
            return f'cameras must be different names, got {names!r}'
    if name == 'camera_priorities':
        if any(isinstance(v, bool) or not isinstance(v, int) for v in value):
            return f'camera_priorities must be integers, got {list(value)!r}'
    if name == 'palette':
        values = list(value)
        if values != [0]:
            if len(values) % 3 or any(not 0 <= v <= 255 for v in values):
                return 'palette must be [0] or a flat list of r, g, b values in 0..255'
            if num_classes is not None and len(values) != 3 * num_classes:
                return f'palette needs {3 * num_classes} values ({num_classes} classes), ' \
                       f'got {len(values)}'
    return None


def controller_settings(values: dict[str, Any]) -> ControllerSettings:
    """Controller settings from parameter values (raises ValueError when inconsistent)."""
    settings = ControllerSettings(
        latency_budget_ms=float(values['latency_budget_ms']),
        mode=values['policy.mode'],
        fixed_point=values['policy.point'],
        margin=float(values['policy.margin']),
        battery_low=float(values['battery.low']),
        battery_critical=float(values['battery.critical']),
        battery_low_budget_scale=float(values['battery.low_budget_scale']),
        cpu_high=float(values['cpu_load.high']),
        cpu_slowdown=float(values['cpu_load.slowdown']),
        cpu_high_threads=int(values['cpu_load.threads']),
    )
    settings.validate()
    return settings


def as_double(name: str, value: Any) -> Any:
    """An integer given for a number parameter, as the double it stands for (``ros2 param set
    N latency_budget_ms 80`` sends an integer); anything else unchanged."""
    spec = SPECS.get(name)
    if spec is not None and spec.number and isinstance(value, int) \
            and not isinstance(value, bool):
        return float(value)
    return value


def complete_changes(changes: dict[str, Any], current: dict[str, Any],
                     point_in_use: str) -> dict[str, Any]:
    """The changes with what a user means filled in: integers for doubles become doubles, and
    ``policy.mode: fixed`` with no point named (neither in the change nor set before) takes
    the point in use, so ``mode fixed`` then ``point X`` works as well as the other order."""
    done = {name: as_double(name, value) for name, value in changes.items()}
    if done.get('policy.mode') == 'fixed' and not done.get(
            'policy.point', current.get('policy.point')):
        done['policy.point'] = point_in_use
    return done


@dataclass(frozen=True)
class LiveSettings:
    """Everything a live parameter can change, applied as one between frames."""

    controller: ControllerSettings
    palette: tuple[int, ...]      # (0,): the bundle's palette
    overlay_alpha: float
    enabled: bool
    battery_scale: str
    stale_after_s: float
    output_resolution: str


def live_settings(values: dict[str, Any]) -> LiveSettings:
    """The live settings from parameter values (raises ValueError when inconsistent)."""
    return LiveSettings(controller=controller_settings(values),
                        palette=tuple(int(v) for v in values['palette']),
                        overlay_alpha=float(values['overlay.alpha']),
                        enabled=bool(values['enabled']),
                        battery_scale=values['battery.percentage_scale'],
                        stale_after_s=float(values['signals.stale_after_s']),
                        output_resolution=values['output.resolution'])


def camera_setup(values: dict[str, Any]) -> tuple[list[str], dict[str, int]]:
    """The cameras and their priorities from ``cameras`` and ``camera_priorities`` (raises
    ValueError when they do not fit together). No cameras: one camera named ''."""
    names = [str(n) for n in values.get('cameras') or []]
    priorities = [int(p) for p in values.get('camera_priorities') or []]
    if priorities and len(priorities) != len(names):
        raise ValueError(f'camera_priorities has {len(priorities)} values for '
                         f'{len(names)} cameras {names}: give one per camera')
    if not names:
        return [''], {}
    return names, dict(zip(names, priorities))
