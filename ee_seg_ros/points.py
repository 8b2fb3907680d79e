"""Operating-point families and Pareto fronts: what calibration and the benchmark sweep, and
how their results are ranked. Shared by ``calibrate`` and ``bench``, which never import each
other."""

from __future__ import annotations

import platform

import torch


def static_policies(num_exits: int) -> list[str]:
    """Running less of the network: each exit head alone, and truncation + final decoder."""
    return ([f'exit:{n}' for n in range(num_exits)]
            + [f'full@cap={n}' for n in range(num_exits)])


def sweep_policies(num_exits: int, dense: bool = False) -> dict[str, list[str]]:
    """Families of operating points swept by calibrate (dense=False) and bench (dense=True)."""
    # The bench reaches down to threshold 0 (every token stops at the first exit) so that both
    # the global and the CBT curve span the whole mIoU range a stop rule can produce.
    glob = ([0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995] if dense
            else [0.5, 0.8, 0.9, 0.95, 0.98, 0.99])
    alphas = [0.1, 0.3, 0.5, 0.7, 0.85] if dense else [0.5, 0.7]
    betas = [0.5, 0.7, 0.9, 0.95, 0.99, 0.999] if dense else [0.95, 0.99, 0.999]
    ents = [0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.8]
    ratios = [0.5, 0.7, 0.85, 0.95] if dense else [0.7, 0.9]
    families = {
        'full': ['full'],
        'static': static_policies(num_exits),
        'global': [f'global:{t:g}' for t in glob],
        'cbt': [f'cbt:{a:g},{b:g}' for a in alphas for b in betas if a < b],
        'entropy': [f'entropy:{h:g}' for h in (ents if dense else ents[1::2])],
    }
    base = ['cbt:0.5,0.99', 'cbt:0.7,0.999']
    families['frame_exit'] = [f'{b}@ratio={r:g}' + (f',out={o}' if o == 'head' else '')
                              for b in base for r in ratios for o in ('decoder', 'head')]
    return families


def pareto_front(rows: list[dict], cost: str = 'latency_ms_p50') -> list[dict]:
    """Points not beaten by another with lower cost and higher mIoU, sorted by cost."""
    front: list[dict] = []
    for row in sorted(rows, key=lambda r: (r[cost], -r['miou'])):
        if not front or row['miou'] > front[-1]['miou']:
            front.append(row)
    return front


def machine_description(threads: int) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(line.split(':', 1)[1].strip() for line in f if 'model name' in line)
    except (OSError, StopIteration):
        pass
    return f'{cpu}, {threads} threads, torch {torch.__version__}'
