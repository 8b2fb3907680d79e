"""ONNX Runtime against PyTorch eager on the same frames, interleaved in one process: latency
ratios, parity (identical mask pixels, same exit) and mIoU, fp32 and int8.

    ee-seg export-onnx --model BUNDLE && ee-seg export-onnx --model BUNDLE --precision int8
    python bench/onnx_vs_torch.py --model BUNDLE --root ../shared/data/camvid --split val
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--model', default=None, help='bundle (default: the bundled model)')
    parser.add_argument('--root', help='CamVid-layout folder (default: synthetic scenes)')
    parser.add_argument('--split', default='val')
    parser.add_argument('--policies', default='full,adaptive,exit:0,cbt:0.5,0.99,entropy:0.2')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--limit', type=int)
    parser.add_argument('--json', default='onnx_vs_torch.json')
    args = parser.parse_args()

    from ee_seg_ros.data.folder import camvid_layout
    from ee_seg_ros.data.synthetic import SyntheticScenes
    from ee_seg_ros.metrics import ConfusionMatrix
    from ee_seg_ros.runtime import Segmenter

    backends = {'torch': Segmenter(args.model, threads=args.threads)}
    backends['ort_fp32'] = Segmenter(args.model, threads=args.threads, backend='onnxruntime')
    try:
        backends['ort_int8'] = Segmenter(args.model, threads=args.threads,
                                         backend='onnxruntime', precision='int8')
    except ValueError as err:
        print(f'int8 skipped: {err}')
    ref = backends['torch']
    frames = (camvid_layout(args.root, args.split, ref.bundle.labels) if args.root
              else SyntheticScenes(30, seed=4))
    n = min(len(frames), args.limit or len(frames))
    # 'cbt:0.5,0.99' contains a comma: split on commas not followed by a digit
    import re
    policies = [p for p in re.split(r',(?![0-9])', args.policies) if p]
    policies = [ref.resolve(p).spec() if p != 'adaptive' else 'adaptive' for p in policies]
    lat = {(b, p): [] for b in backends for p in policies}
    cms = {(b, p): ConfusionMatrix(ref.num_classes) for b in backends for p in policies}
    same_px = {(b, p): [] for b in backends for p in policies}
    same_exit = {(b, p): [] for b in backends for p in policies}
    image, _ = frames[0]
    for seg in backends.values():                   # warm-up
        for p in policies:
            seg.segment(image, p, want_exit_map=False)
    rng = np.random.default_rng(0)
    order = [(b, p) for b in backends for p in policies]
    for i in range(n):
        image, label = frames[i]
        out = {}
        rng.shuffle(order)
        for b, p in order:
            r = backends[b].segment(image, p, want_exit_map=False)
            out[(b, p)] = r
            lat[(b, p)].append(r.latency_ms)
            cms[(b, p)].update(r.labels, label)
        for b, p in order:
            t = out[('torch', p)]
            same_px[(b, p)].append(float((out[(b, p)].labels == t.labels).mean()))
            same_exit[(b, p)].append(out[(b, p)].exit_taken == t.exit_taken)
    rows = []
    for p in policies:
        t50 = float(np.median(lat[('torch', p)]))
        for b in backends:
            rows.append({'policy': p, 'backend': b,
                         'latency_ms_p50': round(float(np.median(lat[(b, p)])), 2),
                         'speedup_vs_torch': round(t50 / float(np.median(lat[(b, p)])), 3),
                         'miou': round(cms[(b, p)].miou() * 100, 2),
                         'identical_pixels': round(float(np.mean(same_px[(b, p)])), 5),
                         'same_exit': round(float(np.mean(same_exit[(b, p)])), 4)})
    print('| policy | backend | p50 ms | speed-up vs torch | mIoU | identical pixels '
          '| same exit |')
    print('|---|---|---|---|---|---|---|')
    for r in rows:
        print(f"| {r['policy']} | {r['backend']} | {r['latency_ms_p50']} | "
              f"{r['speedup_vs_torch']} | {r['miou']} | {r['identical_pixels'] * 100:.3f}% | "
              f"{r['same_exit'] * 100:.1f}% |")
    Path(args.json).write_text(json.dumps({'frames': n, 'threads': args.threads,
                                           'rows': rows}, indent=1) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
