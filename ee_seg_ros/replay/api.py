"""``ee-seg replay``, ``ee-seg score`` and the demo, as functions."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..outdir import check_out, staged_output
from ..runtime import FrameCounts, FrameRecord, Segmenter
from .bagio import DIAGNOSTICS, IMAGE, BagError, BagReader, stamp_ns
from .report import build_report, camera_table, summary_table, write_plots, write_report
from .run import ReplayOptions, ReplayState, Replayer, merge_states


def no_work_reason(report: dict) -> str | None:
    """Why a run processed no frame, in one line; ``None`` when it processed some.

    A replay or score that did no work is a failure, not an empty success: the command line
    prints this and exits non-zero."""
    if report.get('frames_processed', 0) > 0:
        return None
    image = (report.get('topics') or {}).get('image')
    received = report.get('frames_received', 0)
    if received == 0:
        where = f'image topic {image!r}' if image else 'the recording'
        what = 'messages' if image else '~/mask messages'
        return f'no frame processed: {where} in {report["bag"]} holds no {what}'
    reasons = report.get('rejected_reasons') or {}
    if reasons:
        return (f'no frame processed: all {received} frames were rejected: ' +
                '; '.join(f'{k} ({v})' for k, v in reasons.items()))
    return f'no frame processed out of {received} received'


def replay_bag(bag: str | Path, out: str | Path, opts: ReplayOptions, model: str | None = None,
               backend: str = 'torch', threads: int = 2, overwrite: bool = False,
               log=print, segmenter: Segmenter | None = None) -> dict:
    """Replay one bag into the folder ``out`` (written beside it, renamed into place at the end:
    see ``ee_seg_ros.outdir``). ``segmenter`` (already loaded) lets a fleet worker reuse one
    model for all its bags."""
    out = Path(out)
    inputs = (bag, opts.labels_dir, model)
    check_out(out, inputs, overwrite)        # refused before the model or the bag is loaded
    if segmenter is None:
        segmenter = Segmenter(model, threads=threads, backend=backend)
    with BagReader(bag) as reader, staged_output(out, inputs, overwrite, 'replay') as tmp:
        replayer = Replayer(reader, tmp / 'output_bag', segmenter, opts, log)
        replayer.run()
        state, counts, cameras = replayer.results()
        report = build_report(state, counts, opts, segmenter.bundle, str(bag),
                              str(out / 'output_bag'), cameras)
        report['backend'] = backend
        files = write_plots(report, state, segmenter.bundle, tmp)
        write_report(report, files, tmp)
    return report


@dataclass
class _Recorded:
    """One camera in a recording of the node: its mask and exit-statistics topics."""

    prefix: str
    mask_topic: str
    stats_topic: str
    masks: dict = field(default_factory=dict)          # stamp -> mask
    records: list = field(default_factory=list)        # FrameRecord, in time order
    bad_records: Counter = field(default_factory=Counter)

    @property
    def name(self) -> str:
        return self.records[0].camera if self.records else ''


def _recorded_cameras(bag: BagReader) -> list[_Recorded]:
    """Pairs of ``.../mask`` and ``.../exit_stats`` topics with the same prefix: the node's
    ``~/mask`` and ``~/exit_stats``, or ``~/NAME/mask`` and ``~/NAME/exit_stats`` per camera."""
    masks = {t[: -len('/mask')]: t for t, m in bag.topics.items()
             if m == IMAGE and t.endswith('/mask')}
    stats = {t[: -len('/exit_stats')]: t for t, m in bag.topics.items()
             if m == DIAGNOSTICS and t.endswith('/exit_stats')}
    return [_Recorded(p, masks[p], stats[p]) for p in sorted(set(masks) & set(stats))]


def _mono_array(msg) -> np.ndarray:
    return np.asarray(msg.data).reshape(msg.height, msg.width)


def _frames_in_bag(bag: BagReader, names: list[str]) -> dict[str, int]:
    """Each recorded camera's frames in the input bag: its one camera topic, or with several
    cameras the topic whose camera name matches."""
    from .cameras import camera_names, colour_camera_topics
    if len(names) == 1:
        return {names[0]: bag.count(bag.camera_topic().topic)}
    topics = colour_camera_topics(bag)
    by_name = dict(zip(camera_names(topics), topics))
    return {n: bag.count(by_name[n]) for n in names if n in by_name}


def score_recording(recorded: str | Path, out: str | Path, labels: str | None = None,
                    model: str | None = None, budget_ms: float | None = None,
                    overwrite: bool = False, log=print) -> dict:
    """The replay report from what the live node published (masks and exit statistics
    recorded with ros2 bag record), so offline and online results can be compared; a node
    with several cameras gives a section per camera.

    ``labels`` is a bag with a mono8 labels topic (one per camera, in the camera's namespace,
    with several) or a folder of label PNGs named by stamp; default: the labels topics in the
    recording itself.
    """
    from ..bundle import load_bundle
    from ..metrics import ConfusionMatrix
    from .cameras import label_topic_for
    from .run import LabelSource
    out = Path(out)
    check_out(out, (recorded, labels, model), overwrite)
    bundle = load_bundle(model)
    table, valid = bundle.labels.lookup()
    valid[255] = True
    k = bundle.labels.num_classes
    gt: dict[str, dict[int, np.ndarray]] = {}          # labels topic -> stamp -> label
    with BagReader(recorded) as bag:
        cameras = _recorded_cameras(bag)
        if not cameras:
            raise BagError(f'{recorded} has no recorded ~/mask and ~/exit_stats topics; '
                           f'its topics: {bag.describe()}')
        label_topics = [t for t, m in bag.topics.items() if m == IMAGE and 'label' in t]
        by_topic = {c.mask_topic: c for c in cameras}
        by_topic.update({c.stats_topic: c for c in cameras})
        log('scoring ' + ', '.join(f'{c.mask_topic} with {c.stats_topic}' for c in cameras))
        wanted = list(by_topic) + (label_topics if labels is None else [])
        for m in bag.messages(wanted):
            if m.msg is None:
                continue
            cam = by_topic.get(m.topic)
            if cam is None:
                gt.setdefault(m.topic, {})[stamp_ns(m.msg)] = _mono_array(m.msg)
            elif m.topic == cam.mask_topic:
                cam.masks[stamp_ns(m.msg)] = _mono_array(m.msg)
            else:
                values = {kv.key: kv.value for kv in m.msg.status[0].values}
                try:
                    cam.records.append(FrameRecord.from_values(
                        values, stamp_ns(m.msg), m.msg.header.frame_id, m.time_ns * 1e-9))
                except ValueError as err:
                    cam.bad_records[str(err)] += 1
    folder = None
    in_bag: dict[str, int] = {}          # camera name -> its frames in the input bag
    if labels is not None:
        if Path(labels).is_dir() and not (Path(labels) / 'metadata.yaml').exists():
            folder = LabelSource(labels)
        else:
            with BagReader(labels) as lb:
                label_topics = [t for t, m in lb.topics.items() if m == IMAGE and 'label' in t]
                if not label_topics:
                    raise BagError(f'{labels} has no labels topic; its topics: '
                                   f'{lb.describe()}')
                for m in lb.messages(label_topics):
                    if m.msg is not None:
                        gt.setdefault(m.topic, {})[stamp_ns(m.msg)] = _mono_array(m.msg)
                in_bag = _frames_in_bag(lb, [c.name or 'camera' for c in cameras])
    single = len(cameras) == 1
    states, per_camera = [], {}
    for cam in cameras:
        state = ReplayState(confusion=ConfusionMatrix(k),
                            topics={'mask': cam.mask_topic, 'exit_stats': cam.stats_topic})
        if folder is not None:
            truth = {s: folder.for_frame(0, s) for s in cam.masks if s in folder.by_stamp}
        else:
            topic = label_topic_for('/' + (cam.name or 'camera') + '/image',
                                    sorted(gt), single)
            truth = gt.get(topic, {}) if topic else {}
            state.topics['labels'] = topic
        for stamp, mask in cam.masks.items():
            label = truth.get(stamp)
            if label is None:
                state.frames_without_label += 1
            elif label.shape != mask.shape or not valid[np.unique(label)].all():
                state.label_rejections['label size or ids do not fit'] += 1
            else:
                state.confusion.update(mask, table[label])
        state.label_rejections.update(cam.bad_records)
        state.series = cam.records
        counts = FrameCounts()
        if cam.records:
            last = cam.records[-1].camera_counts
            counts.received, counts.processed = last.received, last.processed
            counts.dropped, counts.rejected = last.dropped, last.rejected
        counts.guard_stops = sum(r.guard_stop for r in cam.records)
        states.append(state)
        per_camera[cam.name or 'camera'] = (state, counts)
    total = FrameCounts()
    for _, c in per_camera.values():
        total.received += c.received
        total.processed += c.processed
        total.dropped += c.dropped
        total.rejected += c.rejected
        total.guard_stops += c.guard_stops
    everything = [r for cam in cameras for r in cam.records]
    budget = budget_ms or (everything[0].budget_ms if everything else 0.0)
    topics = states[0].topics if single else {
        name: st.topics for name, (st, _) in per_camera.items()}
    state = merge_states(states, topics)
    opts = ReplayOptions(budget_ms=budget, policy='recorded from the node', timing='live')
    report = build_report(state, total, opts, bundle, str(recorded), str(recorded), per_camera)
    report['frames_accounted'] = total.balanced()
    if in_bag and len(in_bag) == len(cameras):
        # what the player sent and the node never counted: lost on the way (the node's
        # counts are those of its last processed frame)
        report['frames_in_bag'] = sum(in_bag.values())
        report['frames_lost'] = max(report['frames_in_bag'] - total.received, 0)
    with staged_output(out, (recorded, labels, model), overwrite, 'score') as tmp:
        files = write_plots(report, state, bundle, tmp)
        write_report(report, files, tmp)
    return report


def print_summary(report: dict, out: Path, log=print) -> None:
    log(summary_table(report))
    table = camera_table(report)
    if table:
        log(table)
    log(f'report: {out / "report.md"} (JSON: {out / "report.json"}, output bag: '
        f'{report["output_bag"]})')


