"""ONNX Runtime thread-pool settings against PyTorch eager, each in a process of its own.

The backend gives every stage graph its own session with its own intra-op pool, spinning off.
This checks the two alternatives one would try for more speed: spinning on (per-session pools)
and one global pool shared by all stage sessions. They cannot share a process with each other or
with PyTorch (a spinning pool takes the cores from everything else, and the global pool is fixed
when ONNX Runtime starts), so each variant runs in a fresh process, one after the other, and
the table is only as steady as this machine between processes: repeat with --repeats.

    python bench/onnx_thread_pools.py --model BUNDLE_WITH_ONNX --root ../shared/data/camvid
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np

VARIANTS = ('torch', 'ort', 'ort_spinning', 'ort_global_pool')
POLICIES = ('full', 'adaptive')


def _measure(variant: str, model: str, root: str | None, split: str, frames: int) -> dict:
    """Median latency per policy for one variant, in this process."""
    from ee_seg_ros.runtime import Segmenter
    if variant == 'torch':
        seg = Segmenter(model, threads=2)
    else:
        import onnxruntime as ort
        if variant == 'ort_global_pool':
            ort.set_global_thread_pool_sizes(2, 1)
        original = ort.SessionOptions.add_session_config_entry

        def entry(options, key, value):
            if variant == 'ort_spinning' and key == 'session.intra_op.allow_spinning':
                value = '1'
            if variant == 'ort_global_pool':
                options.use_per_session_threads = False
            return original(options, key, value)

        ort.SessionOptions.add_session_config_entry = entry   # the backend's options, amended
        seg = Segmenter(model, threads=2, backend='onnxruntime')
    if root:
        from ee_seg_ros.data.folder import camvid_layout
        images = camvid_layout(root, split, seg.bundle.labels)
    else:
        from ee_seg_ros.data.synthetic import SyntheticScenes
        images = SyntheticScenes(frames, seed=4)
    n = min(frames, len(images))
    out = {}
    for policy in POLICIES:
        for _ in range(3):
            seg.segment(images[0][0], policy, want_exit_map=False)
        lat = [seg.segment(images[i][0], policy, want_exit_map=False).latency_ms
               for i in range(n)]
        out[policy] = float(np.median(lat))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--model', required=True, help='bundle with fp32 ONNX graphs')
    parser.add_argument('--root', help='CamVid-layout folder (default: synthetic scenes)')
    parser.add_argument('--split', default='val')
    parser.add_argument('--frames', type=int, default=40)
    parser.add_argument('--repeats', type=int, default=2)
    parser.add_argument('--json', default='onnx_thread_pools.json')
    parser.add_argument('--variant', choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:                                      # child process: one variant
        print(json.dumps(_measure(args.variant, args.model, args.root, args.split,
                                  args.frames)))
        return 0
    runs = []
    for r in range(args.repeats):
        for variant in VARIANTS:
            cmd = [sys.executable, __file__, '--model', args.model, '--split', args.split,
                   '--frames', str(args.frames), '--variant', variant]
            if args.root:
                cmd += ['--root', args.root]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            runs.append({'repeat': r, 'variant': variant,
                         **json.loads(done.stdout.strip().splitlines()[-1])})
    print('| repeat | variant | ' + ' | '.join(f'{p} p50 ms' for p in POLICIES)
          + ' | ' + ' | '.join(f'{p} vs torch' for p in POLICIES) + ' |')
    print('|---' * (2 + 2 * len(POLICIES)) + '|')
    for row in runs:
        ref = next(x for x in runs if x['repeat'] == row['repeat'] and x['variant'] == 'torch')
        print(f"| {row['repeat']} | {row['variant']} | "
              + ' | '.join(f'{row[p]:.1f}' for p in POLICIES) + ' | '
              + ' | '.join(f'{ref[p] / row[p]:.2f}x' for p in POLICIES) + ' |')
    with open(args.json, 'w') as f:
        json.dump({'model': args.model, 'frames': args.frames, 'runs': runs}, f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
