"""Replaying one bag through the node's Pipeline: same decoding, controller, segmenter and
counting as the live node, with battery and CPU messages from the bag steering the controller
in bag time."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..control import ControllerSettings
from ..data.labels import IGNORE
from ..image_codec import ImageDecodeError, compressed_to_rgb8, to_rgb8
from ..metrics import ConfusionMatrix
from ..runtime import Frame, Pipeline, Segmenter, frame_values
from ..signals import (CHARGING_STATUSES, SignalError, SignalState, battery_fraction,
                       cpu_fraction, cpu_from_diagnostics)
from .bagio import (BATTERY, COMPRESSED, DIAGNOSTICS, FLOAT32, IMAGE, BagError, BagReader,
                    BagWriter, stamp_ns)

TIMINGS = ('every-frame', 'realtime')


@dataclass
class ReplayOptions:
    image_topic: str | None = None
    labels_topic: str | None = None
    labels_dir: str | None = None
    battery_topic: str | None = None
    cpu_topic: str | None = None
    budget_ms: float = 100.0
    policy: str = 'adaptive'
    timing: str = 'every-frame'
    compare_full: bool = False
    output_storage: str = 'sqlite3'
    battery_scale: str = 'auto'
    samples: int = 6


@dataclass
class ReplayState:
    """Everything measured while replaying; report.build_report turns it into figures."""

    topics: dict = field(default_factory=dict)
    confusion: ConfusionMatrix | None = None
    agreement: ConfusionMatrix | None = None
    series: list[dict] = field(default_factory=list)
    full_latency_ms: list[float] = field(default_factory=list)
    frames_without_label: int = 0
    label_rejections: Counter = field(default_factory=Counter)
    labels_without_frame: int = 0
    samples: list[tuple] = field(default_factory=list)
    signal_notes: Counter = field(default_factory=Counter)
    wall_s: float = 0.0


def controller_settings_for(policy: str, budget_ms: float) -> ControllerSettings:
    """'adaptive' steers; 'full' runs full depth; any other policy string is fixed."""
    if policy == 'adaptive':
        return ControllerSettings(latency_budget_ms=budget_ms)
    if policy == 'full':
        return ControllerSettings(latency_budget_ms=budget_ms, mode='full')
    return ControllerSettings(latency_budget_ms=budget_ms, mode='fixed', fixed_point=policy)


class LabelSource:
    """Ground truth for frames: a label topic matched by identical header stamp, or a folder
    of label PNGs matched by order or, when named by stamp (``<stamp_ns>.png``), by name."""

    def __init__(self, folder: str | None) -> None:
        self.files: list[Path] = []
        self.by_stamp: dict[int, Path] = {}
        if folder:
            path = Path(folder)
            if not path.is_dir():
                raise BagError(f'labels folder {path} does not exist')
            self.files = sorted(p for p in path.iterdir() if p.suffix.lower() == '.png')
            if not self.files:
                raise BagError(f'no label PNGs in {path}')
            if all(p.stem.isdigit() for p in self.files):
                self.by_stamp = {int(p.stem): p for p in self.files}

    def for_frame(self, index: int, stamp: int) -> np.ndarray | None:
        if self.by_stamp:
            path = self.by_stamp.get(stamp)
        else:
            path = self.files[index] if index < len(self.files) else None
        if path is None:
            return None
        label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if label is None:
            raise ValueError(f'cannot read label {path}')
        return label


class Replayer:
    def __init__(self, bag: BagReader, out_bag: Path, segmenter: Segmenter,
                 opts: ReplayOptions, log=print) -> None:
        self.bag, self.opts, self.seg, self.log = bag, opts, segmenter, log
        self.out_bag = out_bag
        self.state = ReplayState()
        # a missing topic or labels folder is refused here, before run() writes anything
        self.labels_dir = LabelSource(opts.labels_dir)
        self._choose_topics()
        self.pipeline = Pipeline(segmenter, controller_settings_for(opts.policy, opts.budget_ms))
        self.pipeline.warm_up()                          # as the node does before its first frame
        self.signals = SignalState(stale_after_s=1e9)   # bag time; no staleness in replay
        k = segmenter.num_classes
        self.state.confusion = ConfusionMatrix(k)
        self.state.agreement = ConfusionMatrix(k) if opts.compare_full else None
        self.table, self.valid = segmenter.bundle.labels.lookup()
        self.valid[IGNORE] = True
        self.pending: dict[int, np.ndarray] = {}      # stamp -> prediction awaiting a label
        self.early: dict[int, object] = {}            # stamp -> label that came first
        self.frame_index = 0

    # -- topics --------------------------------------------------------------------------------
    def _choose_topics(self) -> None:
        b, o, chosen = self.bag, self.opts, {}
        if o.image_topic:
            chosen['image'] = b.require(o.image_topic, (IMAGE, COMPRESSED), 'image')
        else:
            chosen['image'] = b.camera_topic().topic   # colour first, never depth or labels
        if o.labels_topic:
            chosen['labels'] = b.require(o.labels_topic, (IMAGE,), 'labels')
        elif not o.labels_dir:
            cands = [t for t, m in b.topics.items() if m == IMAGE and 'label' in t
                     and t != chosen['image']]
            chosen['labels'] = cands[0] if cands else None
        chosen['battery'] = (b.require(o.battery_topic, (BATTERY,), 'battery')
                             if o.battery_topic else b.pick((BATTERY,)))
        chosen['cpu'] = (b.require(o.cpu_topic, (FLOAT32, DIAGNOSTICS), 'CPU load')
                         if o.cpu_topic else (b.pick((FLOAT32,), ('cpu',)) if any(
                             'cpu' in t for t, m in b.topics.items() if m == FLOAT32)
                             else None))
        self.state.topics = chosen
        if b.skipped:
            self.log(f'left out {len(b.skipped)} topic(s) whose types cannot be read: '
                     + '; '.join(f'{t} ({why})' for t, why in sorted(b.skipped.items())))
        self.log('replay topics: ' + ', '.join(f'{k} {v}' for k, v in chosen.items() if v))

    # -- messages ------------------------------------------------------------------------------
    def run(self) -> ReplayState:
        start = time.perf_counter()
        topics = [t for t in self.state.topics.values() if t]
        t_kind = self.state.topics
        busy_until = -1
        slot = None
        self.writer = BagWriter(self.out_bag, self.opts.output_storage)
        try:
            for m in self.bag.messages(topics):
                if m.topic == t_kind['image']:
                    self.pipeline.received()
                    if m.msg is None:
                        self.pipeline.rejected('bad image: message does not deserialise')
                        continue
                    if self.opts.timing == 'every-frame':
                        self._frame(m)
                        continue
                    # realtime: newest frame only while busy, as the node's intake does
                    while slot is not None and busy_until <= m.time_ns:
                        busy_until = busy_until + self._frame(slot)
                        slot = None
                    if m.time_ns >= busy_until:
                        busy_until = m.time_ns + self._frame(m)
                    else:
                        if slot is not None:
                            self.pipeline.dropped()
                        slot = m
                elif m.topic == t_kind.get('labels'):
                    self._label(m)
                elif m.topic == t_kind.get('battery'):
                    self._battery(m)
                elif m.topic == t_kind.get('cpu'):
                    self._cpu(m)
            if slot is not None:
                self._frame(slot)
        finally:
            self.writer.close()
        self.state.frames_without_label += len(self.pending)
        self.state.labels_without_frame += len(self.early)
        self.state.wall_s = time.perf_counter() - start
        return self.state

    def _battery(self, m) -> None:
        if m.msg is None:
            return
        try:
            level = battery_fraction(m.msg.percentage, self.opts.battery_scale)
        except SignalError as err:
            self.state.signal_notes[f'battery: {err}'] += 1
            level = None
        self.signals.set_battery(level, m.msg.power_supply_status in CHARGING_STATUSES,
                                 m.time_ns * 1e-9)

    def _cpu(self, m) -> None:
        if m.msg is None:
            return
        try:
            if m.msgtype == FLOAT32:
                value, note = cpu_fraction(m.msg.data)
                if note:
                    self.state.signal_notes[note] += 1
            else:
                value = cpu_from_diagnostics(m.msg.status)
                if value is None:
                    return
        except SignalError as err:
            self.state.signal_notes[f'cpu: {err}'] += 1
            return
        self.signals.set_cpu(value, m.time_ns * 1e-9)

    def _label(self, m) -> None:
        if m.msg is None:
            self.state.label_rejections['label message does not deserialise'] += 1
            return
        stamp = stamp_ns(m.msg)
        if stamp in self.pending:
            self._score(self.pending.pop(stamp), m.msg)
        else:
            self.early[stamp] = m.msg

    def _frame(self, m) -> int:
        """Process one frame; returns its processing time in ns (for realtime timing)."""
        msg = m.msg
        index = self.frame_index
        self.frame_index += 1
        try:
            rgb = compressed_to_rgb8(msg.data) if m.msgtype == COMPRESSED else to_rgb8(msg)
        except ImageDecodeError as err:
            self.pipeline.rejected(f'bad image: {err}')
            return 0
        stamp = stamp_ns(msg)
        sig = self.signals.snapshot(m.time_ns * 1e-9)
        result = self.pipeline.step(Frame(rgb, stamp * 1e-9, msg.header.frame_id), sig,
                                    want_exit_map=False)
        if result is None:
            return 0
        seg, d = result.segmentation, result.decision
        header = self.writer.header(stamp, msg.header.frame_id)
        self.writer.image('/ee_segmenter/mask', m.time_ns, header, seg.labels,
                          'mono8' if seg.labels.dtype == np.uint8 else '16UC1')
        row = {'index': index, 'stamp_ns': stamp, 'bag_time_s': m.time_ns * 1e-9,
               'latency_ms': round(seg.latency_ms, 3), 'budget_ms': round(d.budget_ms, 3),
               'point': d.point.policy, 'exit': seg.exit_taken,
               'stopped': round(seg.stopped_fraction[-1] if seg.stopped_fraction else 0.0, 4),
               'gmacs': round(seg.gmacs, 4), 'battery': sig.battery, 'cpu_load': sig.cpu_load,
               'battery_tier': d.battery_tier, 'cpu_tier': d.cpu_tier,
               'guard_stop': seg.guard_stop,
               'deadline_met': result.deadline_met}
        self.writer.diagnostics('/ee_segmenter/exit_stats', m.time_ns, header,
                                'ee_segmenter: frame', seg.policy,
                                frame_values(result, sig, self.pipeline.counts))
        self.state.series.append(row)
        if self.opts.compare_full:
            full = self.seg.segment(rgb, 'full', want_exit_map=False)
            self.state.full_latency_ms.append(full.latency_ms)
            self.state.agreement.update(seg.labels, full.labels)
        if len(self.state.samples) < self.opts.samples and index % 10 == 0:
            self.state.samples.append((rgb, seg.labels))
        # ground truth: a folder, or the labels topic by identical stamp
        if self.opts.labels_dir:
            try:
                label = self.labels_dir.for_frame(index, stamp)
            except ValueError as err:
                self.state.label_rejections[str(err)] += 1
                label = None
            if label is None:
                self.state.frames_without_label += 1
            else:
                self._score(seg.labels, label)
        elif self.state.topics.get('labels'):
            if stamp in self.early:
                self._score(seg.labels, self.early.pop(stamp))
            else:
                self.pending[stamp] = seg.labels
        else:
            self.state.frames_without_label += 1
        return int(seg.latency_ms * 1e6)

    def _score(self, prediction: np.ndarray, label) -> None:
        """Check a label and add it to the confusion matrix, or count why it was refused."""
        if not isinstance(label, np.ndarray):
            if label.encoding not in ('mono8', '8UC1'):
                self.state.label_rejections[f'label encoding {label.encoding}'] += 1
                return
            try:
                label = _mono(label)
            except ImageDecodeError as err:
                self.state.label_rejections[f'label: {err}'] += 1
                return
        if label.ndim != 2 or label.dtype != np.uint8:
            self.state.label_rejections['label is not a mono8 image'] += 1
            return
        if label.shape != prediction.shape:
            self.state.label_rejections[
                f'label size {label.shape[1]}x{label.shape[0]} differs from the frame '
                f'{prediction.shape[1]}x{prediction.shape[0]}'] += 1
            return
        if not self.valid[np.unique(label)].all():
            self.state.label_rejections['label ids outside the class range'] += 1
            return
        self.state.confusion.update(prediction, self.table[label])


def _mono(msg) -> np.ndarray:
    from ..image_codec import image_array
    return np.ascontiguousarray(image_array(msg))
