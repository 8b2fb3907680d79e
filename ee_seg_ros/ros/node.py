"""The ee_segmenter node: camera in; mask, confidence, exit map, colours and statistics out.

Thin by design (after ros2/demos demo_nodes_py): parameters, subscriptions and publishers
here; every decision about frames lives in runtime.Pipeline, shared with replay.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_system_default)
from sensor_msgs.msg import BatteryState, CompressedImage, Image
from std_msgs.msg import Float32

from ..image_codec import ImageDecodeError, compressed_to_rgb8, to_rgb8
from ..runtime import Frame, Pipeline, Segmenter, frame_values
from ..signals import (CHARGING_STATUSES, SignalError, SignalState, battery_fraction,
                       LocalCpuLoad, cpu_fraction, cpu_from_diagnostics)
from ..visualize import colorize, overlay, palette_array
from .messages import image_msg, status
from .parameters import (PARAMS, LiveSettings, as_double, check, complete_changes,
                         live_settings)
from .pending import Pending

try:  # vision_msgs is optional: LabelInfo is published where it exists
    from vision_msgs.msg import LabelInfo, VisionClass
except ImportError:  # pragma: no cover - depends on the installation
    LabelInfo = VisionClass = None

OK, WARN = DiagnosticStatus.OK, DiagnosticStatus.WARN


def _descriptor(spec) -> ParameterDescriptor:
    # statically typed: with dynamic typing an integer set on a double turns the parameter
    # into an integer for `ros2 param get/describe` (and rclpy stamps the descriptor with the
    # type of a refused value too); integers for doubles are converted before rclpy checks
    d = ParameterDescriptor(description=spec.description, read_only=spec.read_only)
    if spec.choices:
        d.additional_constraints = 'one of: ' + ', '.join(spec.choices)
    if spec.number:
        d.floating_point_range = [FloatingPointRange(from_value=float(spec.low),
                                                     to_value=float(spec.high))]
    elif spec.low is not None:
        d.integer_range = [IntegerRange(from_value=int(spec.low), to_value=int(spec.high))]
    return d


class SegmenterNode(Node):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__('ee_segmenter', **kwargs)
        # the command line's and the params file's values: rclpy keeps them here (Humble to
        # Jazzy); `latency_budget_ms: 80` there must start the node as 80.0, not fail
        overrides = getattr(self, '_parameter_overrides', {})
        for spec in PARAMS:
            given = overrides.get(spec.name)
            value = as_double(spec.name, given.value) if given is not None else None
            if isinstance(value, float) and given.type_ == Parameter.Type.INTEGER:
                self.declare_parameter(spec.name, value, _descriptor(spec),
                                       ignore_override=True)
            else:
                self.declare_parameter(spec.name, spec.default, _descriptor(spec))
        values = self._values()
        for name, value in values.items():
            problem = check(name, value)
            if problem:
                raise ValueError(f'parameter {problem}')
        segmenter = Segmenter(values['model.path'] or None, device=values['model.device'],
                              threads=values['model.threads'],
                              backend=values['model.backend'])
        settings = live_settings(values)
        self.pipeline = Pipeline(segmenter, settings.controller)
        self.pipeline.warm_up()
        self.labels = segmenter.bundle.labels
        self.num_classes = self.labels.num_classes
        self.signals = SignalState(settings.stale_after_s)
        self.input_width = int(values['model.input_width'])
        self._use(settings)
        ctrl = self.pipeline.controller
        self._point_in_use = ctrl.points[ctrl.index].policy   # updated after each frame
        self._pending: Pending[LiveSettings] = Pending()
        self._param_lock = threading.Lock()
        self._accepted = values        # the last accepted values (rclpy stores them later)
        self._lock = threading.Lock()
        self._frame_ready = threading.Condition(self._lock)
        self._slot = None
        self._window = []      # (deadline met) of frames since the last summary
        self._publish_ms = 0.0
        self._warned: dict[str, float] = {}

        intake = MutuallyExclusiveCallbackGroup()
        telemetry = MutuallyExclusiveCallbackGroup()
        reliability = (ReliabilityPolicy.RELIABLE if values['input.reliable']
                       else ReliabilityPolicy.BEST_EFFORT)
        camera_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                                reliability=reliability)
        if values['input.compressed']:
            self.create_subscription(CompressedImage, 'image/compressed', self._on_image,
                                     camera_qos, callback_group=intake)
        else:
            self.create_subscription(Image, 'image', self._on_image, camera_qos,
                                     callback_group=intake)
        self.create_subscription(BatteryState, 'battery_state', self._on_battery, 10,
                                 callback_group=telemetry)
        source = values['cpu_load.source']
        if source == 'topic':
            self.create_subscription(Float32, 'cpu_load', self._on_cpu, 10,
                                     callback_group=telemetry)
        elif source == 'diagnostics':
            self.create_subscription(DiagnosticArray, '/diagnostics', self._on_cpu_diagnostics,
                                     10, callback_group=telemetry)
        elif source == 'local':
            self._local_cpu = LocalCpuLoad()
            self.create_timer(1.0, self._on_local_cpu, callback_group=telemetry)

        out_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=2,
                             reliability=ReliabilityPolicy.RELIABLE)
        self.pub_mask = self.create_publisher(Image, '~/mask', out_qos)
        self.pub_conf = self.create_publisher(Image, '~/confidence', out_qos)
        self.pub_exit = self.create_publisher(Image, '~/exit_map', out_qos)
        self.pub_color = self.create_publisher(Image, '~/mask_color', out_qos)
        self.pub_overlay = self.create_publisher(Image, '~/overlay', out_qos)
        self.pub_stats = self.create_publisher(DiagnosticArray, '~/exit_stats', 10)
        self.pub_diag = self.create_publisher(DiagnosticArray, '/diagnostics',
                                              qos_profile_system_default)
        if LabelInfo is not None:
            latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                                 reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL)
            self.pub_labels = self.create_publisher(LabelInfo, '~/label_info', latched)
            self._publish_label_info()
        self.create_timer(1.0, self._publish_summary, callback_group=telemetry)
        if hasattr(self, 'add_pre_set_parameters_callback'):   # Iron and later
            self.add_pre_set_parameters_callback(self._before_set_parameters)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.get_logger().info(
            f'ee_segmenter ready: bundle {segmenter.bundle.path}, '
            f'{len(self.pipeline.controller.points)} operating points, budget '
            f'{values["latency_budget_ms"]} ms, mode {values["policy.mode"]}')

    # -- parameters ----------------------------------------------------------------------------
    def _values(self) -> dict[str, Any]:
        return {spec.name: self.get_parameter(spec.name).value for spec in PARAMS}

    def _use(self, settings: LiveSettings) -> None:
        """Switch to new live settings. Inference thread only, between frames."""
        self.pipeline.update_settings(settings.controller)
        palette = list(settings.palette)
        self.lut = palette_array(self.labels.palette if palette == [0] else
                                 np.reshape(palette, (-1, 3)), self.num_classes)
        self.alpha = settings.overlay_alpha
        self.enabled = settings.enabled
        self.battery_scale = settings.battery_scale
        self.signals.stale_after_s = settings.stale_after_s
        self.output_resolution = settings.output_resolution

    def apply_pending(self) -> None:
        """Apply the newest accepted parameter change, if any (see pending.py). Called by the
        inference loop before each frame and while it waits for one."""
        settings = self._pending.take()
        if settings is not None:
            try:
                self._use(settings)
            except Exception as err:   # validated already; a backend failing must not stop us
                self.get_logger().error(f'could not apply a parameter change: {err}')

    def _before_set_parameters(self, params: list[Parameter]) -> list[Parameter]:
        """Iron and later, before rclpy checks types: an integer for a double is stored as the
        double, and mode fixed with no point takes the point in use (visible as policy.point)."""
        changes = complete_changes({p.name: p.value for p in params}, self._accepted,
                                   self._point_in_use)
        return [Parameter(name, value=value) for name, value in changes.items()]

    def _on_set_parameters(self, params) -> SetParametersResult:
        """Validate at once, all or nothing; the inference thread applies what is accepted
        before its next frame."""
        with self._param_lock:
            values = dict(self._accepted)
            # on Humble (no pre-set hook) mode fixed with no point is completed here, for the
            # controller only; on Iron and later this changes nothing
            changes = complete_changes({p.name: p.value for p in params}, values,
                                       self._point_in_use)
            for name, value in changes.items():
                problem = check(name, value, self.num_classes)
                if problem:
                    return SetParametersResult(successful=False, reason=problem)
            values.update(changes)
            try:
                settings = live_settings(values)
            except ValueError as err:
                return SetParametersResult(successful=False, reason=str(err))
            self._accepted = values
            self._pending.offer(settings)
        return SetParametersResult(successful=True)

    # -- inputs --------------------------------------------------------------------------------
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _warn(self, key: str, message: str, period: float = 5.0) -> None:
        now = time.monotonic()
        if now - self._warned.get(key, -period) >= period:
            self._warned[key] = now
            self.get_logger().warning(message)

    def _on_image(self, msg) -> None:
        """Keep only the newest frame; a frame replaced before processing is counted dropped."""
        with self._lock:
            self.pipeline.received()
            if self._slot is not None:
                self.pipeline.dropped()
            self._slot = msg
            self._frame_ready.notify()

    def serve_frames(self, running: Callable[[], bool], poll_s: float = 0.1) -> None:
        """Run inference on the calling thread, frame by frame, while ``running()`` is true.

        Call it from the thread that built the node (its warm-up ran there) and spin the
        executor elsewhere. PyTorch's OpenMP pool belongs to the thread that runs it: frames
        handed to executor threads start more pools, and with more OpenMP threads than cores
        libgomp (by its documentation) stops spinning between parallel regions. On the 2-core
        machines here inference on executor threads was 1.4-1.8x slower than in offline
        replay, and once a second thread had run the network even the first one slowed.
        """
        while running():
            self.apply_pending()
            with self._frame_ready:
                if self._slot is None:
                    self._frame_ready.wait(poll_s)
                    continue
            try:
                self._process()
            except Exception:
                if running():
                    raise
                return  # shut down (Ctrl-C) while this frame ran: its outputs can't be sent

    def _on_battery(self, msg: BatteryState) -> None:
        charging = msg.power_supply_status in CHARGING_STATUSES
        try:
            fraction = battery_fraction(msg.percentage, self.battery_scale)
        except SignalError as err:
            self._warn('battery', f'ignoring battery reading: {err}')
            fraction = None
        self.signals.set_battery(fraction, charging, self._now())

    def _on_cpu(self, msg: Float32) -> None:
        try:
            fraction, note = cpu_fraction(msg.data)
        except SignalError as err:
            self._warn('cpu', f'ignoring CPU load reading: {err}')
            return
        if note:
            self._warn('cpu', note)
        self.signals.set_cpu(fraction, self._now())

    def _on_cpu_diagnostics(self, msg: DiagnosticArray) -> None:
        try:
            fraction = cpu_from_diagnostics(msg.status)
        except SignalError as err:
            self._warn('cpu', f'ignoring CPU load diagnostics: {err}')
            return
        if fraction is not None:
            self.signals.set_cpu(fraction, self._now())

    def _on_local_cpu(self) -> None:
        self.signals.set_cpu(self._local_cpu.read(), self._now())

    # -- one frame -----------------------------------------------------------------------------
    def _process(self) -> None:
        with self._lock:
            msg, self._slot = self._slot, None
        if msg is None:
            return
        if not self.enabled:
            self.pipeline.dropped()
            return
        t0 = time.perf_counter()
        try:
            if isinstance(msg, CompressedImage):
                rgb = compressed_to_rgb8(msg.data)
            else:
                rgb = to_rgb8(msg)
        except ImageDecodeError as err:
            self.pipeline.rejected(f'bad image: {err}')
            self._warn('image', f'rejected a frame: {err}')
            return
        in_h, in_w = rgb.shape[:2]
        if self.input_width and in_w != self.input_width:
            scale = self.input_width / in_w
            rgb = cv2.resize(rgb, (self.input_width, max(1, round(in_h * scale))),
                             interpolation=cv2.INTER_AREA)
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        decode_ms = (time.perf_counter() - t0) * 1e3
        signals = self.signals.snapshot(self._now())
        result = self.pipeline.step(Frame(rgb, stamp, msg.header.frame_id), signals,
                                    want_exit_map=self.pub_exit.get_subscription_count() > 0)
        if result is None:
            self.get_logger().error(f'inference failed on a frame (counted as rejected):\n'
                                    f'{self.pipeline.last_error}')
            return
        self._window.append(result.deadline_met)
        self._point_in_use = result.decision.point.policy
        t1 = time.perf_counter()
        self._publish(msg.header, rgb, result, signals, (in_h, in_w), decode_ms)
        self._publish_ms = (time.perf_counter() - t1) * 1e3

    def _publish(self, header, rgb: np.ndarray, result, signals, input_size,
                 decode_ms: float) -> None:
        seg = result.segmentation
        labels, conf, exits = seg.labels, seg.confidence, seg.exit_map
        if self.output_resolution == 'input' and labels.shape != input_size:
            size = (input_size[1], input_size[0])
            labels = cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST)
            conf = cv2.resize(conf, size, interpolation=cv2.INTER_LINEAR)
            if exits is not None:
                exits = cv2.resize(exits, size, interpolation=cv2.INTER_NEAREST)
            rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR)
        mask_encoding = 'mono8' if labels.dtype == np.uint8 else '16UC1'
        self.pub_mask.publish(image_msg(header, labels, mask_encoding))
        self.pub_conf.publish(image_msg(header, conf, 'mono8'))
        if exits is not None:
            self.pub_exit.publish(image_msg(header, exits, 'mono8'))
        want_color = self.pub_color.get_subscription_count()
        want_overlay = self.pub_overlay.get_subscription_count()
        if want_color or want_overlay:
            colours = colorize(labels, self.lut)
            if want_color:
                self.pub_color.publish(image_msg(header, colours, 'rgb8'))
            if want_overlay:
                self.pub_overlay.publish(image_msg(header, overlay(rgb, colours, self.alpha),
                                                   'rgb8'))
        stats = DiagnosticArray()
        stats.header = header
        values = frame_values(result, signals, self.pipeline.counts)
        values['decode_ms'] = f'{decode_ms:.3f}'
        # publishing this very message is not included: the previous frame's figure is
        values['publish_ms_previous'] = f'{self._publish_ms:.3f}'
        stats.status = [status(f'{self.get_fully_qualified_name()}: frame',
                               self.get_fully_qualified_name(), OK, seg.policy, values)]
        self.pub_stats.publish(stats)

    # -- telemetry -----------------------------------------------------------------------------
    def _publish_summary(self) -> None:
        c = self.pipeline.counts
        window, self._window = self._window, []
        misses = window.count(False)
        sig = self.signals.snapshot(self._now())
        problems = []
        if window and misses / len(window) > 0.05:
            problems.append(f'{misses} of {len(window)} frames missed the deadline')
        if sig.stale:
            problems.append('battery or CPU-load input is stale')
        ctrl = self.pipeline.controller
        values = {'frames_received': c.received, 'frames_processed': c.processed,
                  'frames_dropped': c.dropped, 'frames_rejected': c.rejected,
                  'rejected_reasons': dict(c.reasons), 'deadline_hits': c.deadline_hits,
                  'guard_stops': c.guard_stops, 'operating_point': ctrl.points[ctrl.index].policy
                  if ctrl.index >= 0 else ctrl.settings.fixed_point,
                  'latency_budget_ms': ctrl.settings.latency_budget_ms,
                  'effective_budget_ms': f'{ctrl.effective_budget():.2f}',
                  'battery_tier': ctrl.battery_tier, 'cpu_tier': ctrl.cpu_tier,
                  'switches': ctrl.switches, 'frames_last_second': len(window)}
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        name = self.get_fully_qualified_name()
        msg.status = [status(f'{name}: Status', name,
                             WARN if problems else OK, '; '.join(problems) or 'OK', values)]
        self.pub_diag.publish(msg)

    def _publish_label_info(self) -> None:
        msg = LabelInfo()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.class_map = [VisionClass(class_id=i, class_name=n)
                         for i, n in enumerate(self.labels.class_names)]
        msg.threshold = 0.0
        self.pub_labels.publish(msg)
