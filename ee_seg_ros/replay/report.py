"""Turning a replay into figures: report.json, report.md and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..runtime import FrameCounts
from ..visualize import colorize, overlay, palette_array


def _pct(values, q):
    return round(float(np.percentile(values, q)), 3) if len(values) else None


# where a frame's time goes, in the order it is spent; transport and dispatch come before the
# callback (arrival) and are not in the deadline, the other parts add up to ``total_ms``
TIME_PARTS = ('transport', 'dispatch', 'queue', 'decode', 'inference', 'output')


def time_split(series) -> dict[str, float] | None:
    """Mean milliseconds per processed frame in each part of ``TIME_PARTS``, and ``total``
    (arrival to masks out). Replay has no transport or dispatch (0)."""
    if not series:
        return None
    parts = {'transport': [r.transport_ms for r in series],
             'dispatch': [r.dispatch_ms for r in series],
             'queue': [max(r.wait_ms - r.decode_ms, 0.0) for r in series],
             'decode': [r.decode_ms for r in series],
             'inference': [r.latency_ms for r in series],
             'output': [r.output_ms for r in series],
             'total': [r.total_ms for r in series]}
    return {k: round(float(np.mean(v)), 3) for k, v in parts.items()}


CAMERA_KEYS = ('frames_received', 'frames_processed', 'frames_dropped', 'frames_rejected',
               'rejected_reasons', 'frames_accounted', 'miou', 'latency_ms_p50',
               'latency_ms_p95', 'latency_ms_p99', 'total_ms_p50', 'total_ms_p95',
               'total_ms_p99', 'wait_ms_mean', 'deadline_hit_rate', 'gmacs_mean',
               'operating_points_used', 'guard_stops', 'frames_scored', 'frames_without_label',
               'label_rejections', 'agreement_miou_with_full')


def build_report(state, counts: FrameCounts, opts, bundle, bag: str, out_bag: str,
                 cameras: dict | None = None) -> dict:
    """Figures of a replay (or a scored recording). ``cameras`` maps each camera's name to
    its (state, counts): the report then has a section per camera under ``cameras`` beside the
    totals, which come from ``state`` and ``counts`` (all cameras merged)."""
    names = bundle.labels.class_names
    num_exits = len(bundle.config['exit_after'])
    series = state.series
    lat = np.array([r.latency_ms for r in series])
    total = np.array([r.total_ms for r in series])
    points = [r.point for r in series]
    exits = np.bincount([r.exit for r in series], minlength=num_exits + 1) \
        if series else np.zeros(num_exits + 1, int)
    profile = bundle.profile or {}
    full_lat = (float(np.mean(state.full_latency_ms)) if state.full_latency_ms
                else profile.get('full_latency_ms_p50'))
    scored = int(state.confusion.mat.sum() > 0)
    report = {
        'bag': bag, 'output_bag': out_bag, 'policy': opts.policy, 'budget_ms': opts.budget_ms,
        'timing': opts.timing, 'topics': state.topics,
        'frames_received': counts.received, 'frames_processed': counts.processed,
        'frames_dropped': counts.dropped, 'frames_rejected': counts.rejected,
        'rejected_reasons': dict(counts.reasons),
        'frames_accounted': counts.balanced(),
        'latency_ms_p50': _pct(lat, 50), 'latency_ms_p95': _pct(lat, 95),
        'latency_ms_p99': _pct(lat, 99),
        'latency_ms_mean': round(float(lat.mean()), 3) if lat.size else None,
        # the deadline runs from a frame's arrival: waiting for the model counts
        'total_ms_p50': _pct(total, 50), 'total_ms_p95': _pct(total, 95),
        'total_ms_p99': _pct(total, 99),
        'wait_ms_mean': round(float(np.mean([r.wait_ms for r in series])), 3)
        if series else None,
        'time_split_ms': time_split(series),
        'deadline_hit_rate': round(float((total <= opts.budget_ms).mean()), 4)
        if total.size else None,
        'guard_stops': counts.guard_stops,
        'gmacs_mean': round(float(np.mean([r.gmacs for r in series])), 4)
        if series else None,
        'speedup_over_full': round(full_lat / float(lat.mean()), 3)
        if lat.size and full_lat else None,
        'speedup_reference': 'measured full depth on the same frames (--compare full)'
        if state.full_latency_ms else 'the bundle profile\'s full-depth latency',
        'exit_histogram': {**{f'exit{i}': int(v) for i, v in enumerate(exits[:-1])},
                           'final': int(exits[-1])},
        'stopped_fraction_mean': round(float(np.mean([r.stopped for r in series])), 4)
        if series else None,
        'operating_point_switches': sum(a != b for a, b in zip(points, points[1:])),
        'operating_points_used': {p: points.count(p) for p in dict.fromkeys(points)},
        'miou': round(state.confusion.miou() * 100, 3) if scored else None,
        'per_class_iou': {n: (None if np.isnan(v) else round(float(v) * 100, 3))
                          for n, v in zip(names, state.confusion.per_class_iou())}
        if scored else None,
        'frames_scored': counts.processed - state.frames_without_label
        - sum(state.label_rejections.values()),
        'frames_without_label': state.frames_without_label,
        'label_rejections': dict(state.label_rejections),
        'labels_without_frame': state.labels_without_frame,
        'agreement_miou_with_full': round(state.agreement.miou() * 100, 3)
        if state.agreement is not None and state.agreement.mat.sum() else None,
        'signal_notes': dict(state.signal_notes),
        'wall_s': round(state.wall_s, 2),
        # the raw counts behind the figures, so reports of several bags merge exactly
        'confusion_matrix': state.confusion.mat.tolist(),
        'agreement_matrix': state.agreement.mat.tolist()
        if state.agreement is not None else None,
        'full_latency_ms': [float(v) for v in state.full_latency_ms],
        'series': [r.row() for r in series],
    }
    if cameras:
        report['cameras'] = {}
        for name, (cam_state, cam_counts) in cameras.items():
            section = build_report(cam_state, cam_counts, opts, bundle, bag, out_bag)
            report['cameras'][name] = {'topics': cam_state.topics,
                                       **{k: section[k] for k in CAMERA_KEYS},
                                       # raw counts, so the same camera merges across bags
                                       'confusion_matrix': section['confusion_matrix'],
                                       'agreement_matrix': section['agreement_matrix']}
    return report


def _finish(fig, ax, xlabel: str, ylabel: str, out: Path, name: str,
            files: dict[str, str]) -> None:
    import matplotlib.pyplot as plt
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / f'{name}.png', dpi=100)
    plt.close(fig)
    files[name] = f'{name}.png'


def write_plots(report: dict, state, bundle, out: Path) -> dict[str, str]:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    series = report['series']
    files = {}
    if series:
        t = np.array([r['time_s'] for r in series])
        t = t - t[0]
        fig, ax = plt.subplots(figsize=(8, 3.2))
        ax.plot(t, [r['latency_ms'] for r in series], '.', ms=3, label='inference')
        if any(r['wait_ms'] for r in series):
            ax.plot(t, [r['total_ms'] for r in series], '.', ms=3,
                    label='arrival to masks (waiting included)')
        ax.axhline(report['budget_ms'], color='red', lw=1, label='budget')
        ax.plot(t, [r['budget_ms'] for r in series], color='orange', lw=1,
                label='effective budget')
        _finish(fig, ax, 'bag time (s)', 'ms', out, 'latency', files)

        order = {p['policy']: i for i, p in enumerate((bundle.profile or {})
                                                       .get('points', []))}
        order.setdefault('full', len(order))     # the controller always has full depth
        fig, axes = plt.subplots(3, 1, figsize=(8, 5), sharex=True)
        for cam in dict.fromkeys(r['camera'] for r in series):
            mine = [i for i, r in enumerate(series) if r['camera'] == cam]
            axes[0].plot(t[mine], [order.get(series[i]['point'], -1) for i in mine],
                         drawstyle='steps-post', label=cam or None)
        if len({r['camera'] for r in series}) > 1:
            axes[0].legend(fontsize=7)
        axes[0].set_ylabel('point\n(cheap→full)')
        axes[1].plot(t, [np.nan if r['battery'] is None else r['battery'] * 100
                         for r in series])
        axes[1].set_ylabel('battery %')
        axes[2].plot(t, [np.nan if r['cpu_load'] is None else r['cpu_load'] * 100
                         for r in series])
        axes[2].set_ylabel('CPU %')
        axes[2].set_xlabel('bag time (s)')
        for a in axes:
            a.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / 'policy.png', dpi=100)
        plt.close(fig)
        files['policy'] = 'policy.png'

    fig, ax = plt.subplots(figsize=(5, 3))
    hist = report['exit_histogram']
    ax.bar(list(hist), list(hist.values()))
    ax.set_ylabel('frames')
    ax.set_title('exit taken')
    fig.tight_layout()
    fig.savefig(out / 'exits.png', dpi=100)
    plt.close(fig)
    files['exits'] = 'exits.png'

    profile = (bundle.profile or {}).get('points', [])
    if profile or report['miou'] is not None:
        fig, ax = plt.subplots(figsize=(5.5, 3.5))
        if profile:
            ax.plot([p['gmacs_mean'] for p in profile], [p['miou'] for p in profile], 'o-',
                    ms=3, label=f'profile ({bundle.profile.get("split", "")})')
        if report['miou'] is not None:
            ax.plot([report['gmacs_mean']], [report['miou']], 'r*', ms=12, label='this replay')
        _finish(fig, ax, 'executed GMACs per frame', 'mIoU (%)', out, 'miou_vs_cost', files)

    if state.samples:
        import cv2
        lut = palette_array(bundle.labels.palette, bundle.labels.num_classes)
        rows = []
        for rgb, labels in state.samples:
            colours = colorize(labels, lut)
            row = np.concatenate([rgb, colours, overlay(rgb, colours, 0.5)], axis=1)
            scale = 720 / row.shape[1]
            rows.append(cv2.resize(row, (720, round(row.shape[0] * scale)),
                                   interpolation=cv2.INTER_AREA))
        strip = np.concatenate(rows, axis=0)
        cv2.imwrite(str(out / 'samples.png'), cv2.cvtColor(strip, cv2.COLOR_RGB2BGR))
        files['samples'] = 'samples.png'
    return files


SUMMARY_ROWS = [('frames in the input bag / lost before the node', 'frames_lost'),
                ('frames received / processed / dropped / rejected', None),
                ('mIoU (%)', 'miou'), ('agreement with full depth, mIoU (%)',
                                       'agreement_miou_with_full'),
                ('latency p50 / p95 / p99 (ms)', None),
                ('arrival to masks p50 / p95 / p99 (ms)', 'total'),
                ('deadline hit rate', 'deadline_hit_rate'),
                ('executed GMACs per frame', 'gmacs_mean'),
                ('speed-up over full depth', 'speedup_over_full'),
                ('stopped fraction', 'stopped_fraction_mean'),
                ('operating-point switches', 'operating_point_switches'),
                ('guard stops', 'guard_stops')]


def summary_table(report: dict) -> str:
    lines = ['| | |', '|---|---|']
    for title, key in SUMMARY_ROWS:
        if key is None and title.startswith('frames'):
            value = (f"{report['frames_received']} / {report['frames_processed']} / "
                     f"{report['frames_dropped']} / {report['frames_rejected']}")
        elif key is None:
            value = (f"{report['latency_ms_p50']} / {report['latency_ms_p95']} / "
                     f"{report['latency_ms_p99']}")
        elif key == 'frames_lost':
            if 'frames_in_bag' not in report:
                continue          # a replay, or a score without the input bag
            value = f"{report['frames_in_bag']} / {report['frames_lost']}"
        elif key == 'total':
            if not report.get('wait_ms_mean'):
                continue          # nothing waited: the same as the latency
            value = (f"{report['total_ms_p50']} / {report['total_ms_p95']} / "
                     f"{report['total_ms_p99']}")
        else:
            value = report.get(key)
            if value is None:
                continue
            if key == 'deadline_hit_rate':
                value = f'{value * 100:.1f}% (budget {report["budget_ms"]} ms)'
        lines.append(f'| {title} | {value} |')
    # why frames or labels were refused, on the terminal too, not only in report.md
    for title, key in (('rejected frames', 'rejected_reasons'),
                       ('labels refused', 'label_rejections')):
        if report.get(key):
            reasons = '; '.join(f'{k} ({v})' for k, v in report[key].items())
            lines.append(f'| {title} | {reasons.replace("|", "/")} |')
    return '\n'.join(lines)


def write_report(report: dict, files: dict[str, str], out: Path) -> None:
    """report.md first, report.json last and through a rename: a folder with a report.json
    holds a complete report (fleet runs resume on that)."""
    from ..outdir import write_text_atomic
    md = [f'# Replay of `{report["bag"]}`', '',
          f'Policy `{report["policy"]}`, budget {report["budget_ms"]} ms, timing '
          f'`{report["timing"]}`; topics: ' +
          ', '.join(f'{k} `{v}`' for k, v in report['topics'].items() if v) + '.', '',
          summary_table(report), '']
    if report['frames_without_label']:
        md += [f'Frames without a label: {report["frames_without_label"]}.', '']
    if report['per_class_iou']:
        md += ['| class | IoU (%) |', '|---|---|'] + [
            f'| {k} | {v} |' for k, v in report['per_class_iou'].items()] + ['']
    titles = {'latency': 'Latency per frame against the budget',
              'policy': 'Operating point, battery and CPU load over time',
              'exits': 'Exit histogram', 'miou_vs_cost': 'mIoU against cost',
              'samples': 'Sample frames: image, mask, overlay'}
    for key, title in titles.items():
        if key in files:
            md += [f'## {title}', '', f'![{title}]({files[key]})', '']
    table = camera_table(report)
    if table:
        md += ['## Cameras', '', table, '']
    (out / 'report.md').write_text('\n'.join(md))
    write_text_atomic(out / 'report.json', json.dumps(report, indent=1) + '\n')


def camera_table(report: dict) -> str:
    """One row per camera (empty with a single camera: the summary is that camera)."""
    cameras = report.get('cameras') or {}
    if len(cameras) < 2:
        return ''
    lines = ['| camera | frames received / processed / dropped / rejected | mIoU (%) | '
             'arrival to masks p50 / p95 / p99 (ms) | deadline hit rate | GMACs | points |',
             '|---|---|---|---|---|---|---|']
    for name, c in cameras.items():
        hit = '' if c['deadline_hit_rate'] is None else f"{c['deadline_hit_rate'] * 100:.1f}%"
        topic = c['topics'].get('image') or c['topics'].get('mask')
        lines.append(f"| {name} (`{topic}`) | {c['frames_received']} / "
                     f"{c['frames_processed']} / {c['frames_dropped']} / "
                     f"{c['frames_rejected']} | {c['miou']} | {c['total_ms_p50']} / "
                     f"{c['total_ms_p95']} / {c['total_ms_p99']} | {hit} | "
                     f"{c['gmacs_mean']} | " + ', '.join(
                         f'`{p}` {n}' for p, n in c['operating_points_used'].items()) + ' |')
    return '\n'.join(lines)
