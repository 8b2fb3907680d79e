"""Turning the latency budget, battery, CPU load and measured latencies into an operating
point (see docs in the README, 'Keeping a deadline')."""

from .controller import Controller, ControllerSettings, Decision, OperatingPoint, Signals

__all__ = ['Controller', 'ControllerSettings', 'Decision', 'OperatingPoint', 'Signals']
