"""``ee-seg bench``: the speed/accuracy picture of one bundle on one split, in one process.

Every setting runs on the same frames, interleaved per frame after warm-up (see evaluate.sweep),
so each speed-up is a ratio measured within one run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .points import machine_description, pareto_front, sweep_policies
from .evaluate import format_table, sweep
from .runtime import Segmenter


def _interp_cost(front: list[dict], miou: float, cost: str) -> float | None:
    """Cost at which a Pareto front reaches ``miou`` (linear between its points)."""
    ms = [p['miou'] for p in front]
    cs = [p[cost] for p in front]
    if not ms or miou < ms[0] or miou > ms[-1]:
        return None
    return float(np.interp(miou, ms, cs))


def cbt_vs_global(rows: list[dict], full_miou: float) -> dict:
    """GMACs CBT saves against a global threshold at equal mIoU, on the two Pareto fronts.

    Also the most that *any* per-token stop rule could save at that level: no rule costs less
    than every token stopping at the first exit (the cheapest point of either sweep), so when the
    global curve already sits close to that floor a large saving is out of reach, whatever the
    thresholds. The level is full depth minus 1 point, clamped into the overlap of the curves.
    """
    glob = pareto_front([r for r in rows if r['policy'].startswith('global:')
                         and '@' not in r['policy']], 'gmacs_mean')
    cbt = pareto_front([r for r in rows if r['policy'].startswith('cbt:')
                        and '@' not in r['policy']], 'gmacs_mean')
    lo = max(min((p['miou'] for p in glob), default=np.inf),
             min((p['miou'] for p in cbt), default=np.inf))
    hi = min(max((p['miou'] for p in glob), default=-np.inf),
             max((p['miou'] for p in cbt), default=-np.inf))
    result = {'level_miou': None, 'saving': None, 'saving_mean_over_overlap': None,
              'overlap_miou': None if lo > hi else [lo, hi], 'floor_gmacs': None,
              'global_gmacs_at_level': None, 'cbt_gmacs_at_level': None,
              'max_possible_saving': None}
    if lo > hi:
        return result
    level = min(max(full_miou - 1.0, lo), hi)
    g, c = _interp_cost(glob, level, 'gmacs_mean'), _interp_cost(cbt, level, 'gmacs_mean')
    floor = min(p['gmacs_mean'] for p in glob + cbt)
    levels = np.linspace(lo, hi, 21)
    savings = [1 - _interp_cost(cbt, m, 'gmacs_mean') / _interp_cost(glob, m, 'gmacs_mean')
               for m in levels]
    result.update(level_miou=round(level, 3), saving=round(1 - c / g, 4),
                  saving_mean_over_overlap=round(float(np.mean(savings)), 4),
                  floor_gmacs=round(floor, 4), global_gmacs_at_level=round(g, 4),
                  cbt_gmacs_at_level=round(c, 4), max_possible_saving=round(1 - floor / g, 4))
    return result


def analyse(rows: list[dict], num_exits: int) -> dict:
    """The headline figures of the bench JSON."""
    by = {r['policy']: r for r in rows}
    full = by['full']
    fm, fl, fg = full['miou'], full['latency_ms_p50'], full['gmacs_mean']
    within = [r for r in rows if r['miou'] >= fm - 1.0]
    fastest = min(within, key=lambda r: r['latency_ms_p50'])
    leanest = min(within, key=lambda r: r['gmacs_mean'])
    static_names = ([f'exit:{n}' for n in range(num_exits)]
                    + [f'full@cap={n}' for n in range(num_exits)] + ['full'])
    static = [by[n] for n in static_names if n in by]
    adaptive = [r for r in rows if r['policy'] not in static_names]
    best_gain, best_pair = None, None
    for r in adaptive:
        cheaper = [s for s in static if s['latency_ms_p50'] <= r['latency_ms_p50']]
        if not cheaper:
            continue
        ref = max(cheaper, key=lambda s: s['miou'])
        gain = r['miou'] - ref['miou']
        if best_gain is None or gain > best_gain:
            best_gain, best_pair = gain, (r['policy'], ref['policy'])
    cvg = cbt_vs_global(rows, fm)
    return {
        'full_miou': fm, 'full_latency_ms_p50': fl, 'full_latency_ms_p95':
            full['latency_ms_p95'], 'full_gmacs': fg,
        'speedup_at_1pp': round(fl / fastest['latency_ms_p50'], 3),
        'speedup_at_1pp_policy': fastest['policy'], 'speedup_at_1pp_miou': fastest['miou'],
        'gmacs_saving_at_1pp': round(1 - leanest['gmacs_mean'] / fg, 4),
        'gmacs_saving_at_1pp_policy': leanest['policy'],
        'cbt_gmacs_saving_vs_global': cvg['saving'], 'cbt_vs_global': cvg,
        'static_points': {s['policy']: {'miou': s['miou'], 'latency_ms_p50':
                                        s['latency_ms_p50'], 'gmacs': s['gmacs_mean']}
                          for s in static},
        'adaptive_gain_over_static_pp': None if best_gain is None else round(best_gain, 3),
        'adaptive_gain_pair': best_pair,
    }


def plot(rows: list[dict], families: dict[str, list[str]], out: Path) -> list[Path]:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    by = {r['policy']: r for r in rows}
    paths = []
    for cost, label, name in (('gmacs_mean', 'executed GMACs per frame', 'miou_vs_gmacs.png'),
                              ('latency_ms_p50', 'latency p50 (ms)', 'miou_vs_latency.png')):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for fam, specs in families.items():
            pts = sorted((by[s][cost], by[s]['miou']) for s in specs if s in by)
            if not pts:
                continue
            xs, ys = zip(*pts)
            style = 'o' if fam in ('static', 'full', 'frame_exit') else 'o-'
            ax.plot(xs, ys, style, label=fam, markersize=4)
        ax.axhline(by['full']['miou'] - 1.0, color='grey', lw=0.8, ls='--',
                   label='full - 1 pp')
        ax.set_xlabel(label)
        ax.set_ylabel('mIoU (%)')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        paths.append(out / name)
    return paths


def run_bench(segmenter: Segmenter, frames: Sequence, split: str, out: Path,
              threads: int, progress: bool = True) -> dict:
    families = sweep_policies(segmenter.num_exits, dense=True)
    policies = list(dict.fromkeys(p for fam in families.values() for p in fam))
    stats = sweep(segmenter, frames, policies, progress=progress, desc='bench')
    names = segmenter.bundle.labels.class_names
    rows = [s.summary(names, segmenter.num_exits) for s in stats.values()]
    report = analyse(rows, segmenter.num_exits)
    report.update(frames=len(frames), split=split, machine=machine_description(threads),
                  bundle=str(segmenter.bundle.path), settings=rows)
    out.mkdir(parents=True, exist_ok=True)
    report['plots'] = [str(p) for p in plot(rows, families, out)]
    return report


def bench_table(report: dict) -> str:
    rows = sorted(report['settings'], key=lambda r: r['latency_ms_p50'])
    for r in rows:
        r['speedup'] = report['full_latency_ms_p50'] / r['latency_ms_p50']
    return format_table(rows, [('policy', 'setting'), ('miou', 'mIoU'),
                               ('gmacs_mean', 'GMACs'), ('latency_ms_p50', 'p50 ms'),
                               ('latency_ms_p95', 'p95 ms'), ('speedup', 'speed-up'),
                               ('stopped_fraction_mean', 'stopped')])


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + '\n')
