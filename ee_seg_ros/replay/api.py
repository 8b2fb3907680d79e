"""``ee-seg replay``, ``ee-seg score`` and the demo, as functions."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..outdir import check_out, staged_output
from ..runtime import FrameCounts, Segmenter
from .bagio import DIAGNOSTICS, IMAGE, BagError, BagReader, stamp_ns
from .report import build_report, summary_table, write_plots, write_report
from .run import ReplayOptions, ReplayState, Replayer


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
        state = replayer.run()
        counts = replayer.pipeline.counts
        report = build_report(state, counts, opts, segmenter.bundle, str(bag),
                              str(out / 'output_bag'))
        report['backend'] = backend
        files = write_plots(report, state, segmenter.bundle, tmp)
        write_report(report, files, tmp)
    return report


def score_recording(recorded: str | Path, out: str | Path, labels: str | None = None,
                    model: str | None = None, budget_ms: float | None = None,
                    overwrite: bool = False, log=print) -> dict:
    """The replay report from what the live node published (masks and exit statistics
    recorded with ros2 bag record), so offline and online results can be compared.

    ``labels`` is a bag with a mono8 labels topic or a folder of label PNGs named by stamp;
    default: a labels topic in the recording itself.
    """
    from ..bundle import load_bundle
    from ..metrics import ConfusionMatrix
    from .run import LabelSource
    out = Path(out)
    check_out(out, (recorded, labels, model), overwrite)
    bundle = load_bundle(model)
    table, valid = bundle.labels.lookup()
    valid[255] = True
    k = bundle.labels.num_classes
    confusion = ConfusionMatrix(k)
    state = ReplayState(confusion=confusion)
    masks: dict[int, np.ndarray] = {}
    gt: dict[int, np.ndarray] = {}
    stats: list[dict] = []
    with BagReader(recorded) as bag:
        mask_topic = next((t for t, m in bag.topics.items() if m == IMAGE
                           and t.endswith('mask')), None)
        stats_topic = next((t for t, m in bag.topics.items() if m == DIAGNOSTICS
                            and t.endswith('exit_stats')), None)
        if mask_topic is None or stats_topic is None:
            raise BagError(f'{recorded} has no recorded ~/mask and ~/exit_stats topics; '
                           f'its topics: {bag.describe()}')
        label_topic = next((t for t, m in bag.topics.items() if m == IMAGE and 'label' in t),
                           None)
        log(f'scoring {mask_topic} with {stats_topic}')
        for m in bag.messages([t for t in (mask_topic, stats_topic, label_topic) if t]):
            if m.msg is None:
                continue
            if m.topic == mask_topic:
                masks[stamp_ns(m.msg)] = np.asarray(m.msg.data).reshape(m.msg.height,
                                                                        m.msg.width)
            elif m.topic == stats_topic:
                row = {kv.key: kv.value for kv in m.msg.status[0].values}
                row['stamp_ns'] = stamp_ns(m.msg)
                row['bag_time_s'] = m.time_ns * 1e-9
                stats.append(row)
            elif labels is None:
                gt[stamp_ns(m.msg)] = np.asarray(m.msg.data).reshape(m.msg.height,
                                                                     m.msg.width)
    if labels is not None:
        if Path(labels).is_dir() and not (Path(labels) / 'metadata.yaml').exists():
            source = LabelSource(labels)
            gt = {s: source.for_frame(0, s) for s in masks if s in source.by_stamp}
        else:
            with BagReader(labels) as lb:
                topic = next((t for t, m in lb.topics.items() if m == IMAGE and 'label' in t),
                             None)
                if topic is None:
                    raise BagError(f'{labels} has no labels topic; its topics: '
                                   f'{lb.describe()}')
                for m in lb.messages([topic]):
                    if m.msg is not None:
                        gt[stamp_ns(m.msg)] = np.asarray(m.msg.data).reshape(m.msg.height,
                                                                             m.msg.width)
    for stamp, mask in masks.items():
        label = gt.get(stamp)
        if label is None:
            state.frames_without_label += 1
        elif label.shape != mask.shape or not valid[np.unique(label)].all():
            state.label_rejections['label size or ids do not fit'] += 1
        else:
            confusion.update(mask, table[label])
    counts = FrameCounts()
    if stats:
        last = stats[-1]
        counts.received = int(last.get('frames_received', len(stats)))
        counts.processed = int(last.get('frames_processed', len(stats)))
        counts.dropped = int(last.get('frames_dropped', 0))
        counts.rejected = int(last.get('frames_rejected', 0))
    budget = budget_ms or (float(stats[0]['budget_ms']) if stats else 0.0)
    for row in stats:
        state.series.append({
            'stamp_ns': row['stamp_ns'], 'bag_time_s': row['bag_time_s'],
            'latency_ms': float(row['latency_ms']), 'budget_ms': float(row['budget_ms']),
            'point': row['operating_point'], 'exit': int(row['exit_taken']),
            'stopped': float(row['stopped_fraction']), 'gmacs': float(row['gmacs']),
            'battery': None if row['battery'] == 'unknown' else float(row['battery']),
            'cpu_load': None if row['cpu_load'] == 'unknown' else float(row['cpu_load'])})
        counts.guard_stops += row.get('guard_stop') == 'True'
    opts = ReplayOptions(budget_ms=budget, policy='recorded from the node', timing='live')

    report = build_report(state, counts, opts, bundle, str(recorded), str(recorded))
    report['frames_accounted'] = counts.balanced()
    with staged_output(out, (recorded, labels, model), overwrite, 'score') as tmp:
        files = write_plots(report, state, bundle, tmp)
        write_report(report, files, tmp)
    return report


def print_summary(report: dict, out: Path, log=print) -> None:
    log(summary_table(report))
    log(f'report: {out / "report.md"} (JSON: {out / "report.json"}, output bag: '
        f'{report["output_bag"]})')


