"""Replaying one bag through the node's pipeline: the same frame intake, camera scheduler,
controller, segmenter and counting as the live node, with battery and CPU messages from the
bag steering the controller in bag time.

A bag with several cameras goes through one network and one controller as in a node with
``cameras`` set: with ``--timing realtime`` the model is busy in bag time for as long as each
frame took (decoding, inference and outputs, as the node's inference thread is), every camera
keeps only its newest frame meanwhile, and the scheduler picks the next one; with
``every-frame`` (the default) every frame is run as it comes. ``paced`` is ``realtime`` on the
wall clock too: the replay waits until each frame is due, so between frames the network idles
as it does in a live node (back to back, a CPU's caches and idle cores stay warm, and the same
network ran 1.17-1.45x faster here), and the replay takes as long as the bag.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..control import ControllerSettings
from ..data.labels import IGNORE
from ..metrics import ConfusionMatrix
from ..runtime import Frame, FrameCounts, FrameRecord, Pipeline, Segmenter
from ..runtime.cameras import SharedPipeline, Waiting
from ..runtime.intake import FrameIntake, ImageDecodeError, at_input_size
from ..signals import SignalInputs, SignalState
from .bagio import (BATTERY, COMPRESSED, DIAGNOSTICS, FLOAT32, IMAGE, BagError, BagReader,
                    BagWriter, stamp_ns)
from .cameras import CameraTopics, camera_names, colour_camera_topics, label_topic_for

TIMINGS = ('every-frame', 'realtime', 'paced')
NODE = '/ee_segmenter'


@dataclass
class ReplayOptions:
    image_topics: tuple[str, ...] = ()   # empty: every colour camera topic of the bag
    labels_topics: tuple[str, ...] = ()  # one per image topic, or one for a single camera
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
    input_width: int = 0                 # as the node's model.input_width
    priorities: dict[str, int] = field(default_factory=dict)   # camera name -> priority


@dataclass
class ReplayState:
    """Everything measured for one camera (or, merged, for all); report.build_report turns
    it into figures."""

    topics: dict = field(default_factory=dict)
    confusion: ConfusionMatrix | None = None
    agreement: ConfusionMatrix | None = None
    series: list[FrameRecord] = field(default_factory=list)
    full_latency_ms: list[float] = field(default_factory=list)
    frames_without_label: int = 0
    label_rejections: Counter = field(default_factory=Counter)
    labels_without_frame: int = 0
    samples: list[tuple] = field(default_factory=list)
    signal_notes: Counter = field(default_factory=Counter)
    wall_s: float = 0.0


def merge_states(states: list[ReplayState], topics: dict) -> ReplayState:
    """All cameras as one: confusion matrices summed, series in time order, counts added."""
    out = ReplayState(topics=topics)
    seen_notes: set[int] = set()       # cameras of one replay share the bag's signal notes
    for s in states:
        if id(s.signal_notes) not in seen_notes:
            seen_notes.add(id(s.signal_notes))
            out.signal_notes.update(s.signal_notes)
        if s.confusion is not None:
            if out.confusion is None:
                out.confusion = ConfusionMatrix(s.confusion.k)
            out.confusion.mat += s.confusion.mat
        if s.agreement is not None:
            if out.agreement is None:
                out.agreement = ConfusionMatrix(s.agreement.k)
            out.agreement.mat += s.agreement.mat
        out.series += s.series
        out.full_latency_ms += s.full_latency_ms
        out.frames_without_label += s.frames_without_label
        out.label_rejections.update(s.label_rejections)
        out.labels_without_frame += s.labels_without_frame
        out.samples += s.samples
        out.wall_s = max(out.wall_s, s.wall_s)
    out.series.sort(key=lambda r: (r.time_s, r.camera))
    return out


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


class CameraScore:
    """One camera's ground truth and scoring: labels from its topic by stamp (whichever of
    frame and label comes first) or from a folder."""

    def __init__(self, state: ReplayState, labels_dir: LabelSource | None, by_topic: bool,
                 num_classes: int, table: np.ndarray, valid: np.ndarray) -> None:
        self.state = state
        self.labels_dir = labels_dir
        self.by_topic = by_topic
        self.table, self.valid = table, valid
        state.confusion = ConfusionMatrix(num_classes)
        self.pending: dict[int, np.ndarray] = {}      # stamp -> prediction awaiting a label
        self.early: dict[int, object] = {}            # stamp -> label that came first

    def prediction(self, index: int, stamp: int, labels: np.ndarray) -> None:
        """A camera's mask; ``index`` is the frame's position among the camera's frames in
        the bag (what a label folder without stamps is matched by)."""
        if self.labels_dir is not None:
            try:
                label = self.labels_dir.for_frame(index, stamp)
            except ValueError as err:
                self.state.label_rejections[str(err)] += 1
                return
            if label is None:
                self.state.frames_without_label += 1
            else:
                self.score(labels, label)
        elif self.by_topic:
            if stamp in self.early:
                self.score(labels, self.early.pop(stamp))
            else:
                self.pending[stamp] = labels
        else:
            self.state.frames_without_label += 1

    def label(self, msg) -> None:
        if msg is None:
            self.state.label_rejections['label message does not deserialise'] += 1
            return
        stamp = stamp_ns(msg)
        if stamp in self.pending:
            self.score(self.pending.pop(stamp), msg)
        else:
            self.early[stamp] = msg

    def close(self) -> None:
        self.state.frames_without_label += len(self.pending)
        self.state.labels_without_frame += len(self.early)
        self.pending, self.early = {}, {}

    def score(self, prediction: np.ndarray, label) -> None:
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


class Replayer:
    def __init__(self, bag: BagReader, out_bag: Path, segmenter: Segmenter,
                 opts: ReplayOptions, log=print) -> None:
        if opts.timing not in TIMINGS:
            raise BagError(f'timing must be one of {TIMINGS}, got {opts.timing!r}')
        self.bag, self.opts, self.seg, self.log = bag, opts, segmenter, log
        self.out_bag = out_bag
        # a missing topic or labels folder is refused here, before run() writes anything
        self.cameras = self._choose_cameras()
        if opts.labels_dir and len(self.cameras) > 1:
            raise BagError('--labels-dir gives labels for one camera; this replay has '
                           f'{len(self.cameras)} ({", ".join(c.name for c in self.cameras)}): '
                           'give each camera a labels topic, or one --image-topic')
        labels_dir = LabelSource(opts.labels_dir) if opts.labels_dir else None
        self.signal_topics = self._choose_signals()
        names = [c.name for c in self.cameras]
        unknown = set(opts.priorities) - set(names)
        if unknown:
            raise BagError(f'priority for cameras {sorted(unknown)} that this replay does not '
                           f'have; cameras: {names}')
        self.pipeline = Pipeline(segmenter, controller_settings_for(opts.policy, opts.budget_ms))
        self.pipeline.warm_up()                          # as the node does before its first frame
        self.shared = SharedPipeline(self.pipeline, names, opts.priorities)
        self.intake = FrameIntake(opts.input_width)
        self.signals = SignalState(stale_after_s=1e9)   # bag time; no staleness in replay
        self.signal_inputs = SignalInputs(self.signals, opts.battery_scale)
        self.signal_notes: Counter = Counter()
        self._wall_origin: tuple[float, float] | None = None   # (bag time, perf_counter)
        table, valid = segmenter.bundle.labels.lookup()
        valid[IGNORE] = True
        k = segmenter.num_classes
        self.states: dict[str, ReplayState] = {}
        self.scores: dict[str, CameraScore] = {}
        for cam in self.cameras:
            state = ReplayState(topics={'image': cam.image, 'labels': cam.labels,
                                        **self.signal_topics})
            state.agreement = ConfusionMatrix(k) if opts.compare_full else None
            self.states[cam.name] = state
            self.scores[cam.name] = CameraScore(state, labels_dir, cam.labels is not None, k,
                                                table, valid)
        self.by_image = {c.image: c.name for c in self.cameras}
        self.by_labels = {c.labels: c.name for c in self.cameras if c.labels}
        self.single = len(self.cameras) == 1
        if bag.skipped:
            self.log(f'left out {len(bag.skipped)} topic(s) whose types cannot be read: '
                     + '; '.join(f'{t} ({why})' for t, why in sorted(bag.skipped.items())))
        self.log('replay topics: ' + '; '.join(
            f'{c.name}: image {c.image}' + (f', labels {c.labels}' if c.labels else '')
            for c in self.cameras) + ''.join(f', {k} {v}' for k, v in
                                             self.signal_topics.items() if v))

    # -- topics --------------------------------------------------------------------------------
    def _choose_cameras(self) -> list[CameraTopics]:
        b, o = self.bag, self.opts
        if o.image_topics:
            images = [b.require(t, (IMAGE, COMPRESSED), 'image') for t in o.image_topics]
            if len(set(images)) != len(images):
                raise BagError(f'--image-topic names a topic twice: {list(o.image_topics)}')
        else:
            images = colour_camera_topics(b)
        if o.labels_topics:
            if len(o.labels_topics) != len(images):
                raise BagError(f'{len(o.labels_topics)} --labels-topic for {len(images)} '
                               'image topics: give one per image topic, in the same order')
            labels = [b.require(t, (IMAGE,), 'labels') for t in o.labels_topics]
        elif o.labels_dir:
            labels = [None] * len(images)
        else:
            cands = [t for t, m in b.topics.items() if m == IMAGE and 'label' in t
                     and t not in images]
            labels = [label_topic_for(t, cands, len(images) == 1) for t in images]
        return [CameraTopics(n, i, lbl) for n, i, lbl in zip(camera_names(images), images,
                                                              labels)]

    def _choose_signals(self) -> dict[str, str | None]:
        b, o = self.bag, self.opts
        battery = (b.require(o.battery_topic, (BATTERY,), 'battery')
                   if o.battery_topic else b.pick((BATTERY,)))
        cpu = (b.require(o.cpu_topic, (FLOAT32, DIAGNOSTICS), 'CPU load')
               if o.cpu_topic else (b.pick((FLOAT32,), ('cpu',)) if any(
                   'cpu' in t for t, m in b.topics.items() if m == FLOAT32) else None))
        return {'battery': battery, 'cpu': cpu}

    def topics(self) -> dict:
        """The topics of the whole replay, for the report: the one-camera layout as before;
        with several cameras, image and labels topics by camera name."""
        if self.single:
            return self.states[self.cameras[0].name].topics
        return {'image': {c.name: c.image for c in self.cameras},
                'labels': {c.name: c.labels for c in self.cameras}, **self.signal_topics}

    def output_topic(self, camera: str, leaf: str) -> str:
        """The node's topic names: ``~/mask`` for one camera, ``~/NAME/mask`` for several."""
        return f'{NODE}/{leaf}' if self.single else f'{NODE}/{camera}/{leaf}'

    # -- messages ------------------------------------------------------------------------------
    def run(self) -> dict[str, ReplayState]:
        start = time.perf_counter()
        wanted = ([c.image for c in self.cameras] + list(self.by_labels)
                  + [t for t in self.signal_topics.values() if t])
        self.free_at = -np.inf          # bag time (s) at which the model is free again
        self.arrived = {c.name: 0 for c in self.cameras}   # frames of each camera so far
        self.writer = BagWriter(self.out_bag, self.opts.output_storage)
        try:
            for m in self.bag.messages(wanted):
                t = m.time_ns * 1e-9
                if m.topic in self.by_image:
                    camera = self.by_image[m.topic]
                    self._advance(t)
                    index = self.arrived[camera]
                    self.arrived[camera] += 1
                    if m.msg is None:
                        self.shared.scheduler.refuse(camera,
                                                     'bad image: message does not deserialise')
                        continue
                    self.shared.offer(camera, (m, index), t)
                    self._advance(t)
                elif m.topic in self.by_labels:
                    self.scores[self.by_labels[m.topic]].label(m.msg)
                elif m.topic == self.signal_topics['battery']:
                    self._signal(self.signal_inputs.battery, m, t)
                elif m.topic == self.signal_topics['cpu']:
                    reader = (self.signal_inputs.cpu if m.msgtype == FLOAT32
                              else self.signal_inputs.cpu_diagnostics)
                    self._signal(reader, m, t)
            self._advance(np.inf)
        finally:
            self.writer.close()
        wall = time.perf_counter() - start
        for name, score in self.scores.items():
            score.close()
            self.states[name].wall_s = wall
            self.states[name].signal_notes = self.signal_notes
        return self.states

    def results(self) -> tuple[ReplayState, FrameCounts, dict]:
        """After ``run``: all cameras merged with the total counts, and each camera's state
        and counts by name (what ``report.build_report`` takes)."""
        sched = self.shared.scheduler
        cameras = {name: (state, sched.snapshot(name)) for name, state in self.states.items()}
        return merge_states(list(self.states.values()), self.topics()), sched.total(), cameras

    def _signal(self, reader, m, t: float) -> None:
        if m.msg is None:
            return
        note = reader(m.msg, t)
        if note:
            self.signal_notes[note] += 1

    def _advance(self, until: float) -> None:
        """Run waiting frames whose turn comes by bag time ``until``. Every frame: each as it
        comes, no waiting. Realtime: the model starts the next frame when it is free, on the
        frame the scheduler picks; frames that arrive meanwhile replace their camera's."""
        sched = self.shared.scheduler
        while sched.waiting():
            if self.opts.timing == 'every-frame':
                waiting = sched.take()
                self._frame(waiting, waiting.arrival)
                continue
            start = max(self.free_at, min(sched.peek_arrivals().values()))
            if start > until:
                return
            if self.opts.timing == 'paced':
                self._wait_until(start)
            waiting = sched.take()
            self.free_at = start + self._frame(waiting, start)

    def _wait_until(self, bag_time: float) -> None:
        """Sleep until ``bag_time`` comes on the wall clock (bag time runs at wall speed from
        the first frame on)."""
        now = time.perf_counter()
        if self._wall_origin is None:
            self._wall_origin = (bag_time, now)
        due = self._wall_origin[1] + (bag_time - self._wall_origin[0])
        if due > now:
            time.sleep(due - now)

    def _frame(self, waiting: Waiting, start: float) -> float:
        """Process one taken frame starting at bag time ``start``; returns the seconds the
        model's thread was busy. As in the node, that is decoding, inference and the outputs
        at the input size, and the deadline counts all three (and any wait before them)."""
        (m, index), camera = waiting.item, waiting.camera
        msg = m.msg
        try:
            decoded = self.intake.decode(msg)
        except ImageDecodeError as err:
            self.shared.rejected(waiting, f'bad image: {err}')
            return 0.0
        stamp = stamp_ns(msg)
        sig = self.signals.snapshot(start)
        result = self.shared.run(waiting, Frame(decoded.rgb, stamp * 1e-9, msg.header.frame_id),
                                 sig, now=start + decoded.decode_ms * 1e-3,
                                 want_exit_map=False)
        if result is None:
            return 0.0
        seg = result.segmentation
        t0 = time.perf_counter()
        out = at_input_size(seg, decoded.rgb, decoded.input_size)
        output_ms = (time.perf_counter() - t0) * 1e3
        record = self.shared.finish(waiting, result, sig, stamp, decode_ms=decoded.decode_ms,
                                    output_ms=output_ms)
        header = self.writer.header(stamp, msg.header.frame_id)
        self.writer.image(self.output_topic(camera, 'mask'), m.time_ns, header, out.labels,
                          'mono8' if out.labels.dtype == np.uint8 else '16UC1')
        self.writer.diagnostics(self.output_topic(camera, 'exit_stats'), m.time_ns, header,
                                f'{NODE.strip("/")}: frame', seg.policy, record.to_values())
        state = self.states[camera]
        state.series.append(record)
        if self.opts.compare_full:
            full = self.seg.segment(decoded.rgb, 'full', want_exit_map=False)
            state.full_latency_ms.append(full.latency_ms)
            state.agreement.update(seg.labels, full.labels)
        if len(state.samples) < self.opts.samples and record.index % 10 == 0:
            state.samples.append((out.rgb, out.labels))
        self.scores[camera].prediction(index, stamp, out.labels)
        return (decoded.decode_ms + seg.latency_ms + output_ms) * 1e-3


def _mono(msg) -> np.ndarray:
    from ..image_codec import image_array
    return np.ascontiguousarray(image_array(msg))
