"""Why a live run's deadline hit rate differs from offline replay's, part by part.

Both reports carry every frame's time split (``FrameRecord``: wait with decoding inside it,
inference, outputs). Re-timing the online frames with offline's costs, one part at a time,
shows how many percentage points each part explains:

1. inference: each online frame's inference replaced by offline's mean at the same operating
   point (what the live process's surroundings cost the network: the player, the recorder,
   the executor's and DDS's threads, idling between frames);
2. outputs: then its output time (masks at input size, colours, publishing) by offline's mean
   (offline writes no DDS messages);
3. decoding: then its decoding by offline's mean.

What is left between the re-timed online rate and offline's is the controller's choices (other
points, because it saw other latencies and loads) and queueing. Transport and dispatch happen
before a frame's arrival and are not in either deadline; they are reported beside the split.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GapPart:
    """One step of the split: the online hit rate once re-timed up to this part."""

    part: str
    hit_rate: float          # online frames re-timed with offline's costs up to this part
    explains_pp: float       # percentage points this part closes


@dataclass(frozen=True)
class GapSplit:
    online: float            # deadline hit rates, 0..1
    offline: float
    parts: list[GapPart]
    remainder_pp: float      # offline - last re-timed rate: points chosen and queueing
    inference_ratio: float   # online / offline inference at the same points (frame-weighted)


def _mean_by_point(series: list[dict], key: str) -> dict[str, float]:
    by: dict[str, list[float]] = defaultdict(list)
    for r in series:
        by[r['point']].append(r[key])
    return {p: float(np.mean(v)) for p, v in by.items()}


def _offline_cost(series_on: list[dict], series_off: list[dict], key: str
                  ) -> tuple[np.ndarray, float]:
    """Offline's mean ``key`` at each online frame's point, and the online/offline ratio over
    the points both used; a point offline never ran gets the online figure over that ratio."""
    on, off = _mean_by_point(series_on, key), _mean_by_point(series_off, key)
    common = [r for r in series_on if r['point'] in off and off[r['point']] > 0]
    ratio = (float(np.mean([r[key] for r in common])
                     / np.mean([off[r['point']] for r in common])) if common else 1.0)
    costs = np.array([off[r['point']] if r['point'] in off else on[r['point']] / ratio
                      for r in series_on])
    return costs, ratio


def split_deadline_gap(online: dict, offline: dict) -> GapSplit:
    """The split of ``offline['deadline_hit_rate'] - online['deadline_hit_rate']`` (reports of
    ``ee-seg score`` and ``ee-seg replay``, at the same budget)."""
    on, off = online['series'], offline['series']
    if not on or not off:
        raise ValueError('both reports need processed frames to split the deadline gap')
    budget = float(online['budget_ms'])
    total = np.array([r['total_ms'] for r in on])
    infer_off, ratio = _offline_cost(on, off, 'latency_ms')
    out_mean = float(np.mean([r.get('output_ms', 0.0) for r in off]))
    dec_mean = float(np.mean([r.get('decode_ms', 0.0) for r in off]))
    replaced = [('inference', [r['latency_ms'] for r in on], infer_off),
                ('outputs', [r.get('output_ms', 0.0) for r in on], out_mean),
                ('decoding', [r.get('decode_ms', 0.0) for r in on], dec_mean)]
    parts: list[GapPart] = []
    current, rate = total, float((total <= budget).mean())
    for name, measured, offline_cost in replaced:
        current = current - np.asarray(measured) + offline_cost
        new_rate = float((current <= budget).mean())
        parts.append(GapPart(name, round(new_rate, 4), round((new_rate - rate) * 100, 2)))
        rate = new_rate
    return GapSplit(online=float(online['deadline_hit_rate']),
                    offline=float(offline['deadline_hit_rate']), parts=parts,
                    remainder_pp=round((float(offline['deadline_hit_rate']) - rate) * 100, 2),
                    inference_ratio=round(ratio, 3))


def format_split(split: GapSplit) -> str:
    lines = ['| deadline hit rate | % | points closed |', '|---|---|---|',
             f'| online, as measured | {split.online * 100:.1f} | |']
    for p in split.parts:
        lines.append(f'| ... with offline\'s {p.part} | {p.hit_rate * 100:.1f} | '
                     f'{p.explains_pp:+.1f} |')
    lines += [f'| offline | {split.offline * 100:.1f} | {split.remainder_pp:+.1f} left: the '
              f'points chosen and queueing |',
              f'| (online inference / offline at the same points: '
              f'{split.inference_ratio:.3f}x) | | |']
    return '\n'.join(lines)
