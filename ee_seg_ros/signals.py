"""Battery and CPU-load readings as the controller needs them, from whatever robots publish.

Shared by the node and replay: both turn BatteryState / Float32 / DiagnosticArray values into
the same numbers, so a replayed bag steers the controller as the live robot would.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from .control import Signals

BATTERY_SCALES = ('auto', 'unit', 'percent')
# 'topic+local' / 'diagnostics+local': the reported load and this machine's own, whichever is
# higher (a replayed drive's recorded load, and what the bag player and recorder really take)
CPU_SOURCES = ('topic', 'diagnostics', 'local', 'topic+local', 'diagnostics+local', 'none')
CHARGING_STATUSES = (1, 4)  # BatteryState.POWER_SUPPLY_STATUS_CHARGING, _FULL
CPU_DIAGNOSTIC_KEY = 'CPU Load Average'


class SignalError(ValueError):
    """A reading that cannot be used; the message says why."""


def battery_fraction(percentage: float, scale: str = 'auto') -> float | None:
    """State of charge in 0..1 from BatteryState.percentage; None when unmeasured (NaN).

    The message defines 0..1, but many drivers publish 0..100: 'auto' reads values above 1 as
    percent (so 0.5% would be misread as 50%: set 'percent' for such drivers).
    """
    if scale not in BATTERY_SCALES:
        raise SignalError(f'battery percentage scale must be one of {BATTERY_SCALES}')
    value = float(percentage)
    if math.isnan(value):
        return None
    if value < 0 or math.isinf(value):
        raise SignalError(f'battery percentage {value} is negative or infinite')
    if scale == 'percent' or (scale == 'auto' and value > 1.0):
        value /= 100.0
    if value > 1.0:
        raise SignalError(f'battery percentage {percentage} is above 100%')
    return value


def cpu_fraction(value: float, scale: str = 'auto') -> tuple[float, str | None]:
    """CPU load in 0..1 from a Float32 (0..1 or percent); loads above 100% (an overloaded
    machine's load average) saturate at 1 with a note rather than being dropped."""
    v = float(value)
    if math.isnan(v) or v < 0 or math.isinf(v):
        raise SignalError(f'CPU load {value} is not a non-negative number')
    if scale == 'percent' or (scale == 'auto' and v > 1.0):
        v /= 100.0
    if v > 1.0:
        return 1.0, f'CPU load {value} is above 100%: treated as fully loaded'
    return v, None


def cpu_from_diagnostics(statuses) -> float | None:
    """The 'CPU Load Average' of diagnostics' cpu_monitor (a percentage string), if present."""
    for status in statuses:
        for kv in status.values:
            if kv.key == CPU_DIAGNOSTIC_KEY:
                try:
                    return cpu_fraction(float(str(kv.value).strip().rstrip('%')), 'percent')[0]
                except ValueError as err:
                    raise SignalError(f'{CPU_DIAGNOSTIC_KEY} {kv.value!r}: {err}') from None
    return None


class LocalCpuLoad:
    """How much of the CPU time this process left free the *other* processes took, 0..1, since
    the last read.

    Our own work is left out: counted in, a node busy with its own frames would read as a loaded
    machine and cut its own threads and exits for nothing. And the others' plain share of the
    cores is no measure of their demand: two busy processes competing with our two threads get
    only half the cores. Their share of what we left free reads 1.0 whenever they would take any
    core we free, which is exactly when a second inference thread starts to stall. A load
    average would also react a minute late; differences of CPU times react within one read.
    """

    def __init__(self) -> None:
        import psutil
        self._psutil = psutil
        self._own = psutil.Process()
        self._cores = psutil.cpu_count() or 1
        self._last = self._sample()

    def _sample(self) -> tuple[float, float, float]:
        t = self._psutil.cpu_times()
        busy = t.user + t.system + sum(getattr(t, f, 0.0) for f in
                                       ('nice', 'irq', 'softirq', 'steal'))
        own = self._own.cpu_times()
        return time.monotonic(), busy, own.user + own.system

    def read(self) -> float | None:
        """The others' share of the CPU time we left free since the previous read (None when
        no time has passed)."""
        now, busy, own = self._sample()
        then, busy0, own0 = self._last
        self._last = (now, busy, own)
        capacity = (now - then) * self._cores
        if capacity <= 0:
            return None
        ours = own - own0
        others = (busy - busy0) - ours
        # when we used nearly all of it, the others' share of a sliver would be noise
        left = max(capacity - ours, 0.25 * capacity)
        return min(max(others / left, 0.0), 1.0)


@dataclass
class _Reading:
    value: float | None = None
    stamp: float | None = None


class SignalState:
    """Latest battery and CPU readings with their arrival times; old ones count as unknown."""

    def __init__(self, stale_after_s: float = 5.0) -> None:
        self.stale_after_s = stale_after_s
        self.battery = _Reading()
        self.charging = False
        self.cpu = _Reading()          # reported: a topic, /diagnostics or a bag
        self.cpu_local = _Reading()    # measured on this machine (LocalCpuLoad)

    def set_battery(self, fraction: float | None, charging: bool, now: float) -> None:
        self.battery = _Reading(fraction, now)
        self.charging = charging

    def set_cpu(self, fraction: float | None, now: float) -> None:
        self.cpu = _Reading(fraction, now)

    def set_local_cpu(self, fraction: float | None, now: float) -> None:
        self.cpu_local = _Reading(fraction, now)

    def _fresh(self, reading: _Reading, now: float) -> tuple[float | None, bool]:
        if reading.stamp is None:
            return None, False
        if now - reading.stamp > self.stale_after_s:
            return None, True
        return reading.value, False

    def snapshot(self, now: float) -> Signals:
        battery, b_stale = self._fresh(self.battery, now)
        cpu, c_stale = self._fresh(self.cpu, now)
        local, l_stale = self._fresh(self.cpu_local, now)
        if local is not None:       # the controller is never blind to CPU really taken
            cpu = local if cpu is None else max(cpu, local)
        c_stale = (c_stale or l_stale) and cpu is None
        charging = self.charging and not b_stale
        return Signals(battery=battery, charging=charging, cpu_load=cpu,
                       stale=b_stale or c_stale)


class SignalInputs:
    """Battery and CPU-load messages (rclpy or rosbags alike) into a SignalState, for the node
    and replay alike. Each method returns a note when a reading was ignored or adjusted (the
    node logs it, replay counts it), else None."""

    def __init__(self, state: SignalState, battery_scale: str = 'auto') -> None:
        self.state = state
        self.battery_scale = battery_scale

    def battery(self, msg, now: float) -> str | None:
        """sensor_msgs/BatteryState."""
        note = None
        try:
            fraction = battery_fraction(msg.percentage, self.battery_scale)
        except SignalError as err:
            note, fraction = f'ignoring battery reading: {err}', None
        self.state.set_battery(fraction, msg.power_supply_status in CHARGING_STATUSES, now)
        return note

    def cpu(self, msg, now: float) -> str | None:
        """std_msgs/Float32, 0..1 or percent."""
        try:
            fraction, note = cpu_fraction(msg.data)
        except SignalError as err:
            return f'ignoring CPU load reading: {err}'
        self.state.set_cpu(fraction, now)
        return note

    def cpu_diagnostics(self, msg, now: float) -> str | None:
        """diagnostic_msgs/DiagnosticArray from cpu_monitor."""
        try:
            fraction = cpu_from_diagnostics(msg.status)
        except SignalError as err:
            return f'ignoring CPU load diagnostics: {err}'
        if fraction is not None:
            self.state.set_cpu(fraction, now)
        return None
