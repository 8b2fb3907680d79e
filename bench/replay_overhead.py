"""What the replay machinery (bag reading, decoding, output bag writing, metrics) adds to
inference time, measured in one run: the replay loop's wall time against the sum of the
per-frame pipeline latencies inside it.

    python bench/replay_overhead.py --images ../shared/data/camvid/val \
        --labels ../shared/data/camvid/valannot --json replay_overhead.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--images', help='folder of frames (default: synthetic scenes)')
    parser.add_argument('--labels')
    parser.add_argument('--frames', type=int, default=60, help='synthetic frames')
    parser.add_argument('--policy', default='full')
    parser.add_argument('--model', default=None)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--json', default='replay_overhead.json')
    args = parser.parse_args()

    from ee_seg_ros.data.synthetic import write_camvid_layout
    from ee_seg_ros.replay.api import replay_bag
    from ee_seg_ros.replay.make_bag import bag_from_images
    from ee_seg_ros.replay.run import ReplayOptions
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        images, labels = args.images, args.labels
        if images is None:
            write_camvid_layout(tmp / 'data', 'frames', args.frames, seed=3)
            images, labels = tmp / 'data' / 'frames', tmp / 'data' / 'framesannot'
        bag = bag_from_images(images, tmp / 'bag', labels, rate=10)
        report = replay_bag(bag, tmp / 'out', ReplayOptions(policy=args.policy, budget_ms=1e4),
                            args.model, threads=args.threads, log=lambda *_: None)
    inference_s = sum(r['latency_ms'] for r in report['series']) / 1e3
    loop_s = report['wall_s']
    result = {'frames': report['frames_processed'], 'policy': args.policy,
              'replay_loop_s': round(loop_s, 3), 'inference_s': round(inference_s, 3),
              'overhead_fraction': round(loop_s / inference_s - 1.0, 4), 'miou': report['miou']}
    print(json.dumps(result, indent=1))
    Path(args.json).write_text(json.dumps(result, indent=1) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
