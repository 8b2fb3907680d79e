"""``ee-seg compare``: an online report (``ee-seg score`` of a live recording) beside an offline
one (``ee-seg replay`` of the same bag), each difference held against a stated tolerance.

Both reports are written by ``report.build_report``, so the same keys mean the same figures;
this module only reads them back and never re-derives a figure from the series.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from .report import TIME_PARTS


class ReportError(ValueError):
    """A report that cannot be read: one line naming the file and the problem."""


@dataclass(frozen=True)
class Tolerances:
    """How far online may stand from offline before a row is flagged."""

    miou_pp: float = 0.5            # mIoU, percentage points
    deadline_pp: float = 2.0        # deadline hit rate, percentage points
    latency_rel: float = 0.10       # latency percentiles, fraction of the offline value
    gmacs_rel: float = 0.05         # executed GMACs per frame, fraction of the offline value
    frames: int = 0                 # frames received / processed / dropped / rejected


@dataclass(frozen=True)
class Row:
    """One figure of the comparison; ``tolerance`` is None for rows shown, never flagged."""

    figure: str
    online: float | int | str | None
    offline: float | int | str | None
    difference: float | None
    tolerance: str | None
    flagged: bool


def load_report(path: str | Path) -> dict:
    """``report.json`` of a report folder, or the file itself."""
    p = Path(path)
    file = p / 'report.json' if p.is_dir() else p
    if not file.is_file():
        raise ReportError(f'{path}: no report.json there (give a folder written by '
                          f'ee-seg replay or ee-seg score, or its report.json)')
    try:
        report = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ReportError(f'{file}: not a readable report ({type(err).__name__})') from err
    missing = [k for k in ('frames_received', 'frames_processed', 'deadline_hit_rate',
                           'latency_ms_p50', 'miou') if not isinstance(report, dict)
               or k not in report]
    if missing:
        raise ReportError(f'{file}: not a replay report (missing {", ".join(missing)})')
    return report


def _absolute(name: str, on, off, tol: float, scale: float = 1.0, unit: str = '') -> Row:
    if on is None or off is None:
        return Row(name, on, off, None, f'± {tol:g}{unit}', on is not off)
    if scale != 1.0:
        on, off = round(on * scale, 3), round(off * scale, 3)
    diff = round(on - off, 3)
    return Row(name, on, off, diff, f'± {tol:g}{unit}', abs(diff) > tol + 1e-9)


def _relative(name: str, on, off, tol: float) -> Row:
    if on is None or off is None:
        return Row(name, on, off, None, f'± {tol * 100:g}%', on is not off)
    diff = round(on - off, 3)
    return Row(name, on, off, diff, f'± {tol * 100:g}%',
               abs(diff) > tol * abs(off) + 1e-9)


def _top_points(report: dict, n: int = 3) -> str:
    used = report.get('operating_points_used') or {}
    best = sorted(used.items(), key=lambda kv: -kv[1])[:n]
    return ', '.join(f'{p} ({c})' for p, c in best) or 'none'


def compare_reports(online: dict, offline: dict, tol: Tolerances = Tolerances()) -> list[Row]:
    """Rows in the order they are printed. Frames the offline run received and the online
    run did not were lost between player and node."""
    rows = [_absolute(f'frames {k}', online.get(f'frames_{k}'), offline.get(f'frames_{k}'),
                      tol.frames)
            for k in ('received', 'processed', 'dropped', 'rejected')]
    lost = offline['frames_received'] - online['frames_received']
    rows.append(Row('frames lost before the node (offline received - online received)',
                    lost, 0, lost, f'± {tol.frames}', abs(lost) > tol.frames))
    rows.append(_absolute('deadline hit rate (%)', online.get('deadline_hit_rate'),
                          offline.get('deadline_hit_rate'), tol.deadline_pp, scale=100,
                          unit=' pp'))
    rows += [_relative(f'latency p{q} (ms)', online.get(f'latency_ms_p{q}'),
                       offline.get(f'latency_ms_p{q}'), tol.latency_rel) for q in (50, 95, 99)]
    rows.append(_absolute('mIoU (%)', online.get('miou'), offline.get('miou'), tol.miou_pp,
                          unit=' pp'))
    rows.append(_relative('executed GMACs per frame', online.get('gmacs_mean'),
                          offline.get('gmacs_mean'), tol.gmacs_rel))
    on_sw, off_sw = online.get('operating_point_switches'), offline.get('operating_point_switches')
    rows.append(Row('operating-point switches', on_sw, off_sw,
                    None if on_sw is None or off_sw is None else on_sw - off_sw, None, False))
    rows.append(Row('points used most', _top_points(online), _top_points(offline), None, None,
                    False))
    # where each frame's time went (shown, not flagged: the figures above are what must agree)
    on_t, off_t = online.get('time_split_ms') or {}, offline.get('time_split_ms') or {}
    for part in (*TIME_PARTS, 'total'):
        on, off = on_t.get(part), off_t.get(part)
        if on is not None or off is not None:
            rows.append(Row(f'mean {part} per frame (ms)', on, off,
                            None if on is None or off is None else round(on - off, 3),
                            None, False))
    return rows


def format_rows(rows: list[Row], online_name: str, offline_name: str) -> str:
    lines = [f'| figure | online ({online_name}) | offline ({offline_name}) | difference '
             '| tolerance | |', '|---|---|---|---|---|---|']
    for r in rows:
        diff = '' if r.difference is None else f'{r.difference:+g}'
        lines.append(f'| {r.figure} | {r.online} | {r.offline} | {diff} | {r.tolerance or ""} '
                     f'| {"**differs**" if r.flagged else ""} |')
    return '\n'.join(lines)


def comparison_json(rows: list[Row], tol: Tolerances, online: str, offline: str) -> dict:
    return {'online': online, 'offline': offline, 'tolerances': asdict(tol),
            'rows': [asdict(r) for r in rows], 'flagged': [r.figure for r in rows if r.flagged],
            'within_tolerance': not any(r.flagged for r in rows)}
