"""What segmenter.launch.py makes of its arguments, kept free of launch so it is testable
without a ROS install.

A launch argument overrides the params file only when it is given: with defaults passed after
the file, a file saying `latency_budget_ms: 75.0` would start at the default.
"""

from __future__ import annotations

import os
from typing import Any


class LaunchArgumentError(RuntimeError):
    """A launch argument that cannot start the node (launch then exits non-zero)."""


def camera_names(text: str) -> list[str]:
    """``cameras:="['front','rear']"`` (a YAML list, as ``-p`` takes it; ``front,rear`` too)
    as a list of names."""
    import yaml
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = None
    if isinstance(value, str):
        value = [v.strip() for v in value.split(',') if v.strip()]
    if not isinstance(value, list) or not value or not all(
            isinstance(v, str) and v for v in value):
        raise LaunchArgumentError(f"cameras:={text!r} is not a list of camera names, e.g. "
                                  "cameras:=\"['front','rear']\"")
    return value


def _flag(name: str, text: str) -> bool | None:
    """A true/false launch argument; None when not given."""
    if not text.strip():
        return None
    flag = text.strip().lower()
    if flag not in ('true', 'false'):
        raise LaunchArgumentError(f'{name}:={text!r} must be true or false')
    return flag == 'true'


def _number(name: str, text: str, zero_ok: bool = False) -> str:
    """A number above 0 (or at least 0), as the text to pass on."""
    try:
        value = float(text)
    except ValueError:
        value = float('nan')
    if not (value >= 0 if zero_ok else value > 0):
        bound = 'of 0 or more' if zero_ok else 'above 0'
        raise LaunchArgumentError(f'{name}:={text!r} must be a number {bound}')
    return text.strip()


def drain_seconds(text: str) -> float:
    """replay.launch.py's ``drain_s``: the wait after the bag ends, before shutting down."""
    return float(_number('drain_s', text, zero_ok=True))


def niced(nice: str) -> list[str]:
    """The prefix that runs the replay harness's own processes (player, recorder) ``nice``
    steps below the node, so they take the cores it leaves idle instead of its own: on a
    robot they are not there."""
    try:
        steps = int(nice)
    except ValueError:
        steps = -1
    if not 0 <= steps <= 19:
        raise LaunchArgumentError(f'harness_nice:={nice!r} must be an integer from 0 to 19')
    return ['nice', '-n', str(steps)] if steps else []


def play_command(bag: str, rate: str = '1.0', delay_s: str = '5.0', use_sim_time: str = 'false',
                 clock_hz: str = '10', nice: str = '0') -> list[str]:
    """replay.launch.py's ``ros2 bag play``. ``/clock`` only for a node on sim time: every
    message wakes the node's executor (its CPU per frame: 1.6 ms with /clock at 10 Hz, 1.3
    without, bench/live_loop.py on a 2-core AMD EPYC), which a robot's node does not pay."""
    cmd = [*niced(nice), 'ros2', 'bag', 'play', bag, '--rate', _number('rate', rate),
           '--delay', _number('play_delay_s', delay_s, zero_ok=True),
           '--disable-keyboard-controls',
           # before exiting, wait (up to 3 s) until the reliable subscribers, the recorder
           # among them, have acknowledged every message
           '--wait-for-all-acked', '3000']
    if _flag('use_sim_time', use_sim_time):
        cmd += ['--clock', _number('clock_hz', clock_hz)]
    return cmd


def node_parameters(params_file: str, latency_budget_ms: str = '',
                    use_sim_time: str = '', cameras: str = '',
                    cpu_load_source: str = '', reliable_input: str = '') -> list[Any]:
    """The node's ``parameters``: the file, then only the launch arguments that were given
    (later entries win in launch_ros)."""
    if not os.path.isfile(params_file):
        raise LaunchArgumentError(f'params_file {params_file!r} is not a file')
    overrides: dict[str, Any] = {}
    if latency_budget_ms.strip():
        try:
            overrides['latency_budget_ms'] = float(latency_budget_ms)
        except ValueError:
            raise LaunchArgumentError(f'latency_budget_ms:={latency_budget_ms!r} is not a '
                                      'number') from None
    for name, key, text in (('use_sim_time', 'use_sim_time', use_sim_time),
                            ('reliable_input', 'input.reliable', reliable_input)):
        flag = _flag(name, text)
        if flag is not None:
            overrides[key] = flag
    if cameras.strip():
        overrides['cameras'] = camera_names(cameras)
    if cpu_load_source.strip():
        from ..signals import CPU_SOURCES
        if cpu_load_source.strip() not in CPU_SOURCES:
            raise LaunchArgumentError(f'cpu_load_source:={cpu_load_source!r} must be one of '
                                      f"{', '.join(CPU_SOURCES)}")
        overrides['cpu_load.source'] = cpu_load_source.strip()
    return [params_file] + ([overrides] if overrides else [])


def exit_problem(name: str, returncode: int, shutting_down: bool) -> str | None:
    """Why a node's exit should fail the launch, or None: a node that stops by itself with an
    error (at start-up, typically); not one stopped by the launch shutting down."""
    if returncode == 0 or shutting_down:
        return None
    return f'{name} exited with code {returncode} (its reason is in the lines above)'
