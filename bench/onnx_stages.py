"""Where a frame's time goes, stage by stage, in PyTorch eager and in ONNX Runtime.

Both backends run the same adaptive loop (model.adaptive) over the same stage interface; this
script wraps that interface with a timer, runs full-depth frames on both backends interleaved,
and reports the median time of each stage call (embedding, each group of blocks, decoder) and
of everything else in the frame (pre- and post-processing, glue). With ``--ops`` it also reports
the share of ONNX Runtime's kernel time per operator type inside one group of blocks.

    ee-seg export-onnx --model B
    python bench/onnx_stages.py --model B --root ../shared/data/camvid --split val --ops
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

STAGE_CALLS = ('embed', 'blocks', 'decode')


class TimedStages:
    """Forwards every attribute to the wrapped stages; times the costly calls."""

    def __init__(self, inner, sink: dict) -> None:
        self._inner, self._sink = inner, sink

    def __getattr__(self, name):
        attr = getattr(self._inner, name)
        if name not in STAGE_CALLS:
            return attr

        def timed(*args):
            start = time.perf_counter()
            out = attr(*args)
            key = f'blocks_{args[0]}' if name == 'blocks' else name
            self._sink[key] = self._sink.get(key, 0.0) + (time.perf_counter() - start) * 1e3
            return out
        return timed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--model', required=True, help='bundle with fp32 ONNX graphs')
    parser.add_argument('--root', help='CamVid-layout folder (default: synthetic scenes)')
    parser.add_argument('--split', default='val')
    parser.add_argument('--frames', type=int, default=30)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--ops', action='store_true', help='ONNX Runtime time per operator type')
    parser.add_argument('--json', default='onnx_stages.json')
    args = parser.parse_args()

    import torch

    from ee_seg_ros.data.folder import camvid_layout
    from ee_seg_ros.data.synthetic import SyntheticScenes
    from ee_seg_ros.runtime import Segmenter

    backends = {'torch': Segmenter(args.model, threads=args.threads),
                'onnxruntime': Segmenter(args.model, threads=args.threads,
                                         backend='onnxruntime')}
    sinks = {name: {} for name in backends}
    for name, seg in backends.items():
        seg.backend.stages = TimedStages(seg.backend.stages, sinks[name])
    ort_backend = backends['onnxruntime'].backend

    ref = backends['torch']
    frames = (camvid_layout(args.root, args.split, ref.bundle.labels) if args.root
              else SyntheticScenes(args.frames, seed=4))
    per_frame = {name: collections.defaultdict(list) for name in backends}
    for i in range(min(args.frames, len(frames)) + 3):
        image, _ = frames[i % len(frames)]
        for name, seg in backends.items():
            sinks[name].clear()
            start = time.perf_counter()
            seg.segment(image, 'full', want_exit_map=False)
            total = (time.perf_counter() - start) * 1e3
            if i < 3:
                continue                                   # warm-up
            for key, ms in sinks[name].items():
                per_frame[name][key].append(ms)
            per_frame[name]['rest of the frame'].append(total - sum(sinks[name].values()))
            per_frame[name]['total'].append(total)
    rows = []
    for key in per_frame['torch']:
        t = float(np.median(per_frame['torch'][key]))
        o = float(np.median(per_frame['onnxruntime'][key]))
        rows.append({'part': key, 'torch_ms': round(t, 2), 'onnxruntime_ms': round(o, 2),
                     'ratio': round(t / o, 3)})
    print('| part | PyTorch ms | ONNX Runtime ms | PyTorch / ORT |')
    print('|---|---|---|---|')
    for r in rows:
        print(f"| {r['part']} | {r['torch_ms']} | {r['onnxruntime_ms']} | {r['ratio']} |")
    report = {'frames': len(per_frame['torch']['total']), 'threads': args.threads,
              'torch': torch.__version__, 'rows': rows}
    if args.ops:
        report['ort_blocks_op_share'] = op_share(ort_backend, args.threads)
        print('ONNX Runtime kernel time in blocks_0 by operator type: ' + ', '.join(
            f'{k} {v * 100:.1f}%' for k, v in report['ort_blocks_op_share'].items()))
    Path(args.json).write_text(json.dumps(report, indent=1) + '\n')
    return 0


def op_share(backend, threads: int, runs: int = 20) -> dict[str, float]:
    """Share of kernel time per operator type in the first group of blocks (full token count
    at 480x360), from ONNX Runtime's own profiler."""
    import onnxruntime as ort
    session = backend.sessions['blocks_0']
    n, dim = 690, backend.cfg.embed_dim
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry('session.intra_op.allow_spinning', '0')
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = str(Path(tmp) / 'ort')
        path = backend._bundle_path / backend._graphs['blocks_0']['file']
        profiled = ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
        x = np.random.default_rng(0).standard_normal((n, dim), dtype=np.float32)
        name = session.get_inputs()[0].name
        for _ in range(runs):
            profiled.run(None, {name: x})
        events = json.loads(Path(profiled.end_profiling()).read_text())
    time_by_op = collections.Counter()
    for e in events:
        if e.get('cat') == 'Node' and e['name'].endswith('_kernel_time'):
            time_by_op[e['args']['op_name']] += e['dur']
    total = sum(time_by_op.values())
    return {k: round(v / total, 4) for k, v in time_by_op.most_common(6)}


if __name__ == '__main__':
    sys.exit(main())
