"""The ee_segmenter node: cameras in; mask, confidence, exit map, colours and statistics out.

Thin by design (after ros2/demos demo_nodes_py): parameters, subscriptions and publishers
here; every decision about frames lives below ros/ and is shared with replay: the frame intake
(decode, resize), the camera scheduler (newest frame per camera, who runs next, the time each
camera's frames may take), the Pipeline (one network, one controller) and the FrameRecord
that ~/exit_stats publishes.

Without ``cameras`` the node serves one camera on ``image`` and publishes ``~/mask`` ...; with
``cameras: [front, rear]`` it serves ``front/image`` and ``rear/image`` from the same network
and publishes ``~/front/mask``, ``~/rear/mask`` ... with each camera's input header.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                ParameterType, SetParametersResult)
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_system_default)
from sensor_msgs.msg import BatteryState, CompressedImage, Image
from std_msgs.msg import Float32

from ..runtime import Frame, Pipeline, Segmenter
from ..runtime.cameras import SharedPipeline, Waiting
from ..runtime.intake import FrameIntake, ImageDecodeError, at_input_size
from ..signals import LocalCpuLoad, SignalInputs, SignalState
from ..visualize import colorize, overlay, palette_array
from .delivery import Delivered
from .messages import image_msg, status
from .parameters import (PARAMS, LiveSettings, as_double, camera_setup, check,
                         complete_changes, live_settings)
from .pending import Pending

try:  # vision_msgs is optional: LabelInfo is published where it exists
    from vision_msgs.msg import LabelInfo, VisionClass
except ImportError:  # pragma: no cover - depends on the installation
    LabelInfo = VisionClass = None

OK, WARN = DiagnosticStatus.OK, DiagnosticStatus.WARN
ARRAY_TYPES = {'string': ParameterType.PARAMETER_STRING_ARRAY,
               'integer': ParameterType.PARAMETER_INTEGER_ARRAY}
RELIABLE_INPUT_DEPTH = 10
NAV2_MAX_CLASSES = 256   # the semantic segmentation layer reads masks as 8-bit ids


class _Camera:
    """One camera's publishers and its deadline window for the 1 Hz summary."""

    def __init__(self, node: Node, name: str, qos: QoSProfile) -> None:
        self.name = name
        prefix = f'~/{name}/' if name else '~/'
        self.mask = node.create_publisher(Image, prefix + 'mask', qos)
        self.conf = node.create_publisher(Image, prefix + 'confidence', qos)
        self.exit = node.create_publisher(Image, prefix + 'exit_map', qos)
        self.color = node.create_publisher(Image, prefix + 'mask_color', qos)
        self.overlay = node.create_publisher(Image, prefix + 'overlay', qos)
        self.stats = node.create_publisher(DiagnosticArray, prefix + 'exit_stats', 10)
        self.window: list = []          # FrameRecords since the last summary


def _descriptor(spec) -> ParameterDescriptor:
    # statically typed: with dynamic typing an integer set on a double turns the parameter
    # into an integer for `ros2 param get/describe` (and rclpy stamps the descriptor with the
    # type of a refused value too); integers for doubles are converted before rclpy checks
    d = ParameterDescriptor(description=spec.description, read_only=spec.read_only)
    if spec.array:
        # an empty default would make rclpy take the parameter for a byte array
        # (ros2/rclpy#912): typed, with dynamic typing so a given list is accepted
        d.type = ARRAY_TYPES[spec.array]
        d.dynamic_typing = True
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
        cameras, priorities = camera_setup(values)
        segmenter = Segmenter(values['model.path'] or None, device=values['model.device'],
                              threads=values['model.threads'],
                              backend=values['model.backend'])
        settings = live_settings(values)
        self.pipeline = Pipeline(segmenter, settings.controller)
        self.pipeline.warm_up()
        self.labels = segmenter.bundle.labels
        self.num_classes = self.labels.num_classes
        self.signals = SignalState(settings.stale_after_s)
        self.signal_inputs = SignalInputs(self.signals, settings.battery_scale)
        self.intake = FrameIntake(int(values['model.input_width']))
        self.shared = SharedPipeline(self.pipeline, cameras, priorities)
        self._use(settings)
        ctrl = self.pipeline.controller
        self._point_in_use = ctrl.points[ctrl.index].policy   # updated after each frame
        self._pending: Pending[LiveSettings] = Pending()
        self._param_lock = threading.Lock()
        self._accepted = values        # the last accepted values (rclpy stores them later)
        self._publish_ms = 0.0
        self._warned: dict[str, float] = {}

        intake = MutuallyExclusiveCallbackGroup()
        telemetry = MutuallyExclusiveCallbackGroup()
        # reliable input (bag replay) keeps a few frames in the middleware: a frame repaired
        # after a lost datagram arrives just before the next one, and with depth 1 the next
        # would overwrite it unseen; here the camera scheduler keeps the newest and counts
        # the one it replaces as dropped
        reliable = values['input.reliable']
        camera_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST,
                                depth=RELIABLE_INPUT_DEPTH if reliable else 1,
                                reliability=(ReliabilityPolicy.RELIABLE if reliable
                                             else ReliabilityPolicy.BEST_EFFORT))
        kind, leaf = ((CompressedImage, 'image/compressed') if values['input.compressed']
                      else (Image, 'image'))
        for camera in cameras:   # relative names: they remap and namespace as usual
            self.create_subscription(kind, f'{camera}/{leaf}' if camera else leaf,
                                     lambda msg, info, c=camera: self._on_image(c, msg, info),
                                     camera_qos, callback_group=intake)
        self.create_subscription(BatteryState, 'battery_state', self._on_battery, 10,
                                 callback_group=telemetry)
        sources = values['cpu_load.source'].split('+')
        if 'topic' in sources:
            self.create_subscription(Float32, 'cpu_load', self._on_cpu, 10,
                                     callback_group=telemetry)
        if 'diagnostics' in sources:
            self.create_subscription(DiagnosticArray, '/diagnostics', self._on_cpu_diagnostics,
                                     10, callback_group=telemetry)
        if 'local' in sources:
            self._local_cpu = LocalCpuLoad()
            self.create_timer(1.0, self._on_local_cpu, callback_group=telemetry)

        out_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=2,
                             reliability=ReliabilityPolicy.RELIABLE)
        self.cameras = {c: _Camera(self, c, out_qos) for c in cameras}
        self.pub_diag = self.create_publisher(DiagnosticArray, '/diagnostics',
                                              qos_profile_system_default)
        if LabelInfo is not None:
            latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                                 reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL)
            self.pub_labels = self.create_publisher(LabelInfo, '~/label_info', latched)
            self._publish_label_info()
        else:
            self.get_logger().warning(
                'vision_msgs is not installed: ~/label_info (vision_msgs/LabelInfo) is NOT '
                'published. Nav2\'s semantic segmentation layer needs it (without it the layer '
                'never uses a mask); install ros-$ROS_DISTRO-vision-msgs.')
        if self.num_classes > NAV2_MAX_CLASSES:
            self.get_logger().warning(
                f'the bundle has {self.num_classes} classes: masks are published as 16UC1, '
                f'and Nav2\'s semantic segmentation layer reads only 8-bit ids (at most '
                f'{NAV2_MAX_CLASSES} classes)')
        self.create_timer(1.0, self._publish_summary, callback_group=telemetry)
        if hasattr(self, 'add_pre_set_parameters_callback'):   # Iron and later
            self.add_pre_set_parameters_callback(self._before_set_parameters)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        served = (', cameras ' + ', '.join(cameras)) if cameras != [''] else ''
        self.get_logger().info(
            f'ee_segmenter ready: bundle {segmenter.bundle.path}, '
            f'{len(self.pipeline.controller.points)} operating points, budget '
            f'{values["latency_budget_ms"]} ms, mode {values["policy.mode"]}{served}')

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
        self.signal_inputs.battery_scale = settings.battery_scale
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

    def _on_image(self, camera: str, msg, info: dict) -> None:
        """Keep only each camera's newest frame; a frame replaced before the model took it is
        counted as dropped for that camera."""
        self.shared.offer(camera, Delivered.of(msg, info, time.time_ns()), time.perf_counter())

    def serve_frames(self, running: Callable[[], bool], poll_s: float = 0.1) -> None:
        """Run inference on the calling thread, frame by frame, while ``running()`` is true;
        the scheduler picks which camera's frame runs next.

        Call it from the thread that built the node (its warm-up ran there) and spin the
        executor elsewhere. PyTorch's OpenMP pool belongs to the thread that runs it: frames
        handed to executor threads start more pools, and with more OpenMP threads than cores
        libgomp (by its documentation) stops spinning between parallel regions. On the 2-core
        machines here inference on executor threads was 1.4-1.8x slower than in offline
        replay, and once a second thread had run the network even the first one slowed.
        """
        while running():
            self.apply_pending()
            waiting = self.shared.scheduler.wait(poll_s)
            if waiting is None:
                continue
            try:
                self._process(waiting)
            except Exception:
                if running():
                    raise
                return  # shut down (Ctrl-C) while this frame ran: its outputs can't be sent

    def _note(self, key: str, note: str | None) -> None:
        if note:
            self._warn(key, note)

    def _on_battery(self, msg: BatteryState) -> None:
        self._note('battery', self.signal_inputs.battery(msg, self._now()))

    def _on_cpu(self, msg: Float32) -> None:
        self._note('cpu', self.signal_inputs.cpu(msg, self._now()))

    def _on_cpu_diagnostics(self, msg: DiagnosticArray) -> None:
        self._note('cpu', self.signal_inputs.cpu_diagnostics(msg, self._now()))

    def _on_local_cpu(self) -> None:
        self.signals.set_local_cpu(self._local_cpu.read(), self._now())

    # -- one frame -----------------------------------------------------------------------------
    def _process(self, waiting: Waiting) -> None:
        if not self.enabled:
            self.shared.dropped(waiting)
            return
        camera, delivered = self.cameras[waiting.camera], waiting.item
        msg = delivered.msg
        where = f' on camera {camera.name}' if camera.name else ''
        try:
            decoded = self.intake.decode(msg)
        except ImageDecodeError as err:
            self.shared.rejected(waiting, f'bad image: {err}')
            self._warn(f'image:{camera.name}', f'rejected a frame{where}: {err}')
            return
        stamp = msg.header.stamp
        stamp_ns = stamp.sec * 1_000_000_000 + stamp.nanosec
        signals = self.signals.snapshot(self._now())
        result = self.shared.run(waiting, Frame(decoded.rgb, stamp_ns * 1e-9,
                                                msg.header.frame_id),
                                 signals, now=time.perf_counter(),
                                 want_exit_map=camera.exit.get_subscription_count() > 0)
        if result is None:
            self.get_logger().error(f'inference failed on a frame{where} (counted as '
                                    f'rejected):\n{self.pipeline.last_error}')
            return
        self._point_in_use = result.decision.point.policy
        t1 = time.perf_counter()
        self._publish_images(camera, msg.header, decoded, result)
        t2 = time.perf_counter()
        # the deadline runs from arrival to masks published: waiting for the model counts
        total_ms = (t2 - waiting.arrival) * 1e3
        record = self.shared.finish(waiting, result, signals, stamp_ns, total_ms=total_ms,
                                    time_s=self._now() - total_ms * 1e-3,
                                    decode_ms=decoded.decode_ms, output_ms=(t2 - t1) * 1e3,
                                    transport_ms=delivered.transport_ms,
                                    dispatch_ms=delivered.dispatch_ms)
        camera.window.append(record)
        stats = DiagnosticArray()
        stats.header = msg.header
        values = record.to_values()
        # publishing this very message is not included: the previous frame's figure is
        values['publish_ms_previous'] = f'{self._publish_ms:.3f}'
        name = self.get_fully_qualified_name()
        stats.status = [status(f'{name}: frame', name, OK, result.segmentation.policy, values)]
        camera.stats.publish(stats)
        self._publish_ms = (time.perf_counter() - t1) * 1e3

    def _publish_images(self, camera: _Camera, header, decoded, result) -> None:
        seg = result.segmentation
        if self.output_resolution == 'input':
            out = at_input_size(seg, decoded.rgb, decoded.input_size)
            labels, conf, exits, rgb = out.labels, out.confidence, out.exit_map, out.rgb
        else:
            labels, conf, exits, rgb = seg.labels, seg.confidence, seg.exit_map, decoded.rgb
        mask_encoding = 'mono8' if labels.dtype == np.uint8 else '16UC1'
        camera.mask.publish(image_msg(header, labels, mask_encoding))
        camera.conf.publish(image_msg(header, conf, 'mono8'))
        if exits is not None:
            camera.exit.publish(image_msg(header, exits, 'mono8'))
        want_color = camera.color.get_subscription_count()
        want_overlay = camera.overlay.get_subscription_count()
        if want_color or want_overlay:
            colours = colorize(labels, self.lut)
            if want_color:
                camera.color.publish(image_msg(header, colours, 'rgb8'))
            if want_overlay:
                camera.overlay.publish(image_msg(header, overlay(rgb, colours, self.alpha),
                                                 'rgb8'))

    # -- telemetry -----------------------------------------------------------------------------
    def _publish_summary(self) -> None:
        """1 Hz on /diagnostics: the node's status (all cameras), and with several cameras one
        status per camera. WARN when more than 5% of the last second's frames missed the
        deadline, or an input is stale."""
        sig = self.signals.snapshot(self._now())
        ctrl = self.pipeline.controller
        name = self.get_fully_qualified_name()
        windows = {c: cam.window for c, cam in self.cameras.items()}
        for cam in self.cameras.values():
            cam.window = []
        everything = [r for w in windows.values() for r in w]
        total = self.shared.scheduler.total()
        values = self._summary_values(total, everything)
        values.update({'operating_point': ctrl.points[ctrl.index].policy
                       if ctrl.index >= 0 else ctrl.settings.fixed_point,
                       'latency_budget_ms': ctrl.settings.latency_budget_ms,
                       'effective_budget_ms': f'{ctrl.effective_budget():.2f}',
                       'battery_tier': ctrl.battery_tier, 'cpu_tier': ctrl.cpu_tier,
                       'switches': ctrl.switches})
        several = len(self.cameras) > 1
        if several:
            values['cameras'] = ','.join(self.cameras)
        stale = ['battery or CPU-load input is stale'] if sig.stale else []
        problems = self._misses(everything) + stale
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status = [status(f'{name}: Status', name,
                             WARN if problems else OK, '; '.join(problems) or 'OK', values)]
        if several:
            now = time.perf_counter()
            rates = self.shared.scheduler.rates(now)
            for camera, window in windows.items():
                counts = self.shared.scheduler.snapshot(camera)
                v = self._summary_values(counts, window)
                lane = ctrl.lane_index(camera)
                v.update({'operating_point': ctrl.points[lane].policy if lane >= 0
                          else ctrl.settings.fixed_point,
                          'priority': self.shared.scheduler.priorities[camera],
                          'frame_rate_hz': f'{rates[camera]:.2f}',
                          'allowance_ms': f'{self.shared.allowance(camera, now):.2f}'})
                problems = self._misses(window) + stale
                msg.status.append(status(f'{name}: camera {camera}', name,
                                         WARN if problems else OK,
                                         '; '.join(problems) or 'OK', v))
        self.pub_diag.publish(msg)

    @staticmethod
    def _misses(window: list) -> list[str]:
        misses = sum(not r.deadline_met for r in window)
        if window and misses / len(window) > 0.05:
            return [f'{misses} of {len(window)} frames missed the deadline']
        return []

    @staticmethod
    def _summary_values(counts, window: list) -> dict[str, Any]:
        total = np.array([r.total_ms for r in window]) if window else None
        out = {'frames_received': counts.received, 'frames_processed': counts.processed,
               'frames_dropped': counts.dropped, 'frames_rejected': counts.rejected,
               'frames_pending': counts.pending,
               'rejected_reasons': dict(counts.reasons), 'deadline_hits': counts.deadline_hits,
               'guard_stops': counts.guard_stops, 'frames_last_second': len(window)}
        if total is not None:   # arrival to masks published, over the last second
            for q in (50, 95, 99):
                out[f'total_ms_p{q}'] = f'{np.percentile(total, q):.2f}'
        return out

    def _publish_label_info(self) -> None:
        msg = LabelInfo()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.class_map = [VisionClass(class_id=i, class_name=n)
                         for i, n in enumerate(self.labels.class_names)]
        msg.threshold = 0.0
        self.pub_labels.publish(msg)
