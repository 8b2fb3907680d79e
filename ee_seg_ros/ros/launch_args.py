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
        if text.strip():
            flag = text.strip().lower()
            if flag not in ('true', 'false'):
                raise LaunchArgumentError(f'{name}:={text!r} must be true or false')
            overrides[key] = flag == 'true'
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
