"""One exact report for a fleet of bags, merged from the bags' own reports.

Nothing is averaged over bags: mIoU and per-class IoU come from the summed confusion
matrices, latency percentiles and the deadline hit rate from every frame of every bag, frame
counts are summed. The fleet report.json has the top-level fields of a single-bag report plus
``bags``; its ``series`` is empty (the per-frame series stay in each bag's own report).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from ..metrics import ConfusionMatrix
from .fleet import BagOutcome
from .report import _pct

WORST = 5      # bags listed in report.md by mIoU and by deadline hit rate


def frame_columns(report: dict) -> dict:
    """A bag's per-frame series as compact columns (what the merge needs), so a fleet of
    thousands of bags does not hold every frame's dict in memory at once."""
    series = report['series']
    return {'latency_ms': np.array([s['latency_ms'] for s in series], dtype=np.float64),
            # arrival to masks: what a deadline is measured on, as in a single bag's report
            'total_ms': np.array([s['total_ms'] for s in series], dtype=np.float64),
            'wait_ms': np.array([s['wait_ms'] for s in series], dtype=np.float64),
            'camera': np.array([s.get('camera', '') for s in series], dtype=object),
            'exit': np.array([s['exit'] for s in series], dtype=np.int64),
            'gmacs': np.array([s['gmacs'] for s in series], dtype=np.float64),
            'stopped': np.array([s['stopped'] for s in series], dtype=np.float64),
            'point': Counter(s['point'] for s in series)}


def slim(report: dict, name: str) -> dict:
    """A bag's report for merging: its series replaced by columns."""
    return {**{k: v for k, v in report.items() if k != 'series'}, '_name': name,
            '_cols': frame_columns(report)}


def _cols(report: dict) -> dict:
    return report['_cols'] if '_cols' in report else frame_columns(report)


def _sum_dicts(reports: list[dict], key: str) -> dict:
    total: Counter = Counter()
    for r in reports:
        total.update(r.get(key) or {})
    return dict(total)


def _merged_time_split(reports: list[dict]) -> dict[str, float] | None:
    """Each part's mean per frame over all bags: the bags' means weighted by their frames."""
    parts = [(r['time_split_ms'], r['frames_processed']) for r in reports
             if r.get('time_split_ms') and r['frames_processed']]
    frames = sum(n for _, n in parts)
    if not frames:
        return None
    return {k: round(sum(split[k] * n for split, n in parts) / frames, 3) for k in parts[0][0]}


def _matrix_sum(sections: list[dict], key: str, k: int) -> ConfusionMatrix | None:
    if not sections or any(s.get(key) is None for s in sections):
        return None
    total = ConfusionMatrix(k)
    for s in sections:
        total.mat += np.asarray(s[key], dtype=np.int64)
    return total


def merge_cameras(reports: list[dict], opts, k: int) -> dict:
    """Each camera (by name) across the bags, merged as the totals are: counts and confusion
    matrices summed, percentiles and the deadline hit rate over that camera's frames."""
    merged: dict[str, dict] = {}
    for r in reports:
        cols = _cols(r)
        for name, section in (r.get('cameras') or {}).items():
            m = merged.setdefault(name, {'sections': [], 'cols': []})
            m['sections'].append(section)
            pick = cols['camera'] == name
            m['cols'].append({key: cols[key][pick]
                              for key in ('latency_ms', 'total_ms', 'wait_ms', 'gmacs')})
    out = {}
    for name, m in merged.items():
        secs = m['sections']
        col = {key: np.concatenate([c[key] for c in m['cols']])
               for key in ('latency_ms', 'total_ms', 'wait_ms', 'gmacs')}
        confusion = _matrix_sum(secs, 'confusion_matrix', k)
        agreement = _matrix_sum(secs, 'agreement_matrix', k)
        topics = [s['topics'] for s in secs]
        points: Counter = Counter()
        for s in secs:
            points.update(s['operating_points_used'])
        lat, total = col['latency_ms'], col['total_ms']
        counts = {f: sum(s[f] for s in secs) for f in (
            'frames_received', 'frames_processed', 'frames_dropped', 'frames_rejected',
            'guard_stops', 'frames_scored', 'frames_without_label')}
        out[name] = {
            'topics': topics[0] if all(t == topics[0] for t in topics)
            else {'image': 'differs per bag'},
            **counts,
            'rejected_reasons': _sum_dicts(secs, 'rejected_reasons'),
            'frames_accounted': all(s['frames_accounted'] for s in secs),
            'miou': round(confusion.miou() * 100, 3)
            if confusion is not None and confusion.mat.sum() else None,
            'latency_ms_p50': _pct(lat, 50), 'latency_ms_p95': _pct(lat, 95),
            'latency_ms_p99': _pct(lat, 99),
            'total_ms_p50': _pct(total, 50), 'total_ms_p95': _pct(total, 95),
            'total_ms_p99': _pct(total, 99),
            'wait_ms_mean': round(float(col['wait_ms'].mean()), 3) if total.size else None,
            'deadline_hit_rate': round(float((total <= opts.budget_ms).mean()), 4)
            if total.size else None,
            'gmacs_mean': round(float(col['gmacs'].mean()), 4) if total.size else None,
            'operating_points_used': dict(points),
            'label_rejections': _sum_dicts(secs, 'label_rejections'),
            'agreement_miou_with_full': round(agreement.miou() * 100, 3)
            if agreement is not None and agreement.mat.sum() else None,
            'confusion_matrix': confusion.mat.tolist() if confusion is not None else None,
            'agreement_matrix': agreement.mat.tolist() if agreement is not None else None,
        }
    return out


def merge_reports(reports: list[dict], outcomes: list[BagOutcome], opts, bundle,
                  engine: str) -> dict:
    """The fleet report from the reports of the bags that finished (``ok`` or ``skipped``)
    and every bag's outcome."""
    names = bundle.labels.class_names
    k = bundle.labels.num_classes
    num_exits = len(bundle.config['exit_after'])
    cols = [_cols(r) for r in reports]
    lat = np.concatenate([c['latency_ms'] for c in cols]) if cols else np.zeros(0)
    total = np.concatenate([c['total_ms'] for c in cols]) if cols else np.zeros(0)
    wait = np.concatenate([c['wait_ms'] for c in cols]) if cols else np.zeros(0)
    exit_taken = np.concatenate([c['exit'] for c in cols]) if cols else np.zeros(0, int)
    gmacs = np.concatenate([c['gmacs'] for c in cols]) if cols else np.zeros(0)
    stopped = np.concatenate([c['stopped'] for c in cols]) if cols else np.zeros(0)
    confusion = ConfusionMatrix(k)
    for r in reports:
        confusion.mat += np.asarray(r['confusion_matrix'], dtype=np.int64)
    agreement = None
    if reports and all(r.get('agreement_matrix') is not None for r in reports):
        agreement = ConfusionMatrix(k)
        for r in reports:
            agreement.mat += np.asarray(r['agreement_matrix'], dtype=np.int64)
    exits = np.bincount(exit_taken, minlength=num_exits + 1)
    full = [v for r in reports for v in r.get('full_latency_ms') or []]
    full_lat = (float(np.mean(full)) if full
                else (bundle.profile or {}).get('full_latency_ms_p50'))
    points: Counter = Counter()
    for c in cols:
        points.update(c['point'])
    scored = int(confusion.mat.sum() > 0)
    received = sum(r['frames_received'] for r in reports)
    processed = sum(r['frames_processed'] for r in reports)
    dropped = sum(r['frames_dropped'] for r in reports)
    rejected = sum(r['frames_rejected'] for r in reports)
    topics = {}
    for kind in ('image', 'labels', 'battery', 'cpu'):
        values = {r['topics'].get(kind) for r in reports}
        topics[kind] = values.pop() if len(values) == 1 else 'differs per bag'
    by_name = {r['_name']: r for r in reports}
    bags = []
    for o in outcomes:
        r = by_name.get(o.name)
        bags.append({'bag': o.bag, 'name': o.name, 'status': o.status, 'reason': o.reason,
                     'frames_processed': r['frames_processed'] if r else 0,
                     'miou': r['miou'] if r else None,
                     'deadline_hit_rate': r['deadline_hit_rate'] if r else None,
                     'latency_ms_p95': r['latency_ms_p95'] if r else None,
                     'report': f'{o.name}/report.json' if r else None})
    return {
        'bag': f'fleet of {len(outcomes)} bags', 'output_bag': None, 'policy': opts.policy,
        'budget_ms': opts.budget_ms, 'timing': opts.timing, 'topics': topics,
        'engine': engine,
        'bags_ok': sum(o.status == 'ok' for o in outcomes),
        'bags_skipped': sum(o.status == 'skipped' for o in outcomes),
        'bags_failed': sum(o.status == 'failed' for o in outcomes),
        'frames_received': received, 'frames_processed': processed,
        'frames_dropped': dropped, 'frames_rejected': rejected,
        'rejected_reasons': _sum_dicts(reports, 'rejected_reasons'),
        'frames_accounted': received == processed + dropped + rejected
        and all(r['frames_accounted'] for r in reports),
        'latency_ms_p50': _pct(lat, 50), 'latency_ms_p95': _pct(lat, 95),
        'latency_ms_p99': _pct(lat, 99),
        'latency_ms_mean': round(float(lat.mean()), 3) if lat.size else None,
        'total_ms_p50': _pct(total, 50), 'total_ms_p95': _pct(total, 95),
        'total_ms_p99': _pct(total, 99),
        'wait_ms_mean': round(float(wait.mean()), 3) if wait.size else None,
        'time_split_ms': _merged_time_split(reports),
        'deadline_hit_rate': round(float((total <= opts.budget_ms).mean()), 4)
        if total.size else None,
        'guard_stops': sum(r['guard_stops'] for r in reports),
        'gmacs_mean': round(float(gmacs.mean()), 4) if gmacs.size else None,
        'speedup_over_full': round(full_lat / float(lat.mean()), 3)
        if lat.size and full_lat else None,
        'speedup_reference': 'measured full depth on the same frames (--compare full)'
        if full else 'the bundle profile\'s full-depth latency',
        'exit_histogram': {**{f'exit{i}': int(v) for i, v in enumerate(exits[:-1])},
                           'final': int(exits[-1])},
        'stopped_fraction_mean': round(float(stopped.mean()), 4) if stopped.size else None,
        'operating_point_switches': sum(r['operating_point_switches'] for r in reports),
        'operating_points_used': dict(points),
        'miou': round(confusion.miou() * 100, 3) if scored else None,
        'per_class_iou': {n: (None if np.isnan(v) else round(float(v) * 100, 3))
                          for n, v in zip(names, confusion.per_class_iou())}
        if scored else None,
        'frames_scored': sum(r['frames_scored'] for r in reports),
        'frames_without_label': sum(r['frames_without_label'] for r in reports),
        'label_rejections': _sum_dicts(reports, 'label_rejections'),
        'labels_without_frame': sum(r['labels_without_frame'] for r in reports),
        'agreement_miou_with_full': round(agreement.miou() * 100, 3)
        if agreement is not None and agreement.mat.sum() else None,
        'signal_notes': _sum_dicts(reports, 'signal_notes'),
        'wall_s': round(sum(r['wall_s'] for r in reports), 2),
        'confusion_matrix': confusion.mat.tolist(),
        'agreement_matrix': agreement.mat.tolist() if agreement is not None else None,
        'full_latency_ms': [],
        'series': [],
        'cameras': merge_cameras(reports, opts, k),
        'bags': bags,
    }


def _rate(value: float | None) -> str:
    return '' if value is None else f'{value * 100:.1f}%'


def _worst(bags: list[dict], key: str) -> list[dict]:
    done = [b for b in bags if b[key] is not None]
    return sorted(done, key=lambda b: (b[key], b['name']))[:WORST]


def write_fleet_plots(report: dict, reports: list[dict], out: Path) -> dict[str, str]:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    files = {}
    lat = np.concatenate([_cols(r)['latency_ms'] for r in reports]) if reports else []
    if len(lat):
        fig, ax = plt.subplots(figsize=(6, 3.2))
        ax.hist(lat, bins=50)
        ax.axvline(report['budget_ms'], color='red', lw=1, label='budget')
        ax.set_xlabel('latency (ms), every frame of every bag')
        ax.set_ylabel('frames')
        ax.legend(fontsize=8)
        _save(fig, out, 'latency_hist', files)
    pts = [b for b in report['bags'] if b['miou'] is not None
           and b['deadline_hit_rate'] is not None]
    if pts:
        fig, ax = plt.subplots(figsize=(5.5, 3.5))
        ax.plot([b['deadline_hit_rate'] * 100 for b in pts], [b['miou'] for b in pts], 'o',
                ms=4)
        ax.set_xlabel('deadline hit rate (%)')
        ax.set_ylabel('mIoU (%)')
        ax.set_title('one point per bag')
        ax.grid(alpha=0.3)
        _save(fig, out, 'bags', files)
    return files


def _save(fig, out: Path, name: str, files: dict[str, str]) -> None:
    """Write a figure as ``out/NAME.png``, close it, and list it in ``files``."""
    import matplotlib.pyplot as plt
    fig.tight_layout()
    fig.savefig(out / f'{name}.png', dpi=100)
    plt.close(fig)
    files[name] = f'{name}.png'


def write_fleet_report(report: dict, files: dict[str, str], out: Path) -> None:
    """report.md, then report.json through a rename (its presence means a finished run)."""
    from ..outdir import write_text_atomic
    from .report import camera_table, summary_table
    bags = report['bags']
    md = [f'# Fleet replay: {len(bags)} bags', '',
          f'Policy `{report["policy"]}`, budget {report["budget_ms"]} ms, timing '
          f'`{report["timing"]}`, engine {report["engine"]}. Bags: {report["bags_ok"]} ok, '
          f'{report["bags_skipped"]} skipped (finished before, merged), '
          f'{report["bags_failed"]} failed. Figures are over every frame of the finished bags '
          '(mIoU from the summed confusion matrices).', '', summary_table(report), '']
    failed = [b for b in bags if b['status'] == 'failed']
    if failed:
        md += ['## Failed bags', '', '| bag | reason |', '|---|---|']
        md += [f'| `{b["bag"]}` | {b["reason"]} |' for b in failed] + ['']
    for key, title in (('miou', 'mIoU (%)'), ('deadline_hit_rate', 'deadline hit rate')):
        worst = _worst(bags, key)
        if worst:
            md += [f'## Worst bags by {title}', '', '| bag | mIoU (%) | deadline hit rate | '
                   'frames |', '|---|---|---|---|']
            md += [f'| [{b["name"]}]({b["name"]}/report.md) | {b["miou"]} | '
                   f'{_rate(b["deadline_hit_rate"])} | {b["frames_processed"]} |'
                   for b in worst] + ['']
    table = camera_table(report)
    if table:
        md += ['## Cameras over the fleet', '', table, '']
    if report['per_class_iou']:
        md += ['## Per-class IoU over the fleet', '', '| class | IoU (%) |', '|---|---|'] + [
            f'| {k} | {v} |' for k, v in report['per_class_iou'].items()] + ['']
    titles = {'latency_hist': 'Latency of every frame', 'bags': 'Bags: mIoU against '
              'deadline hit rate'}
    for key, title in titles.items():
        if key in files:
            md += [f'## {title}', '', f'![{title}]({files[key]})', '']
    (out / 'report.md').write_text('\n'.join(md))
    write_text_atomic(out / 'report.json', json.dumps(report, indent=1) + '\n')
