"""The ``ee-seg`` command: one entry point with a subcommand per job."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(','))


def _split(args: argparse.Namespace, split: str | None, which: str, limit: int | None = None):
    """A labelled split of the command's dataset (``--dataset``, ``--root``), optionally the
    first ``limit`` frames."""
    from .data.datasets import load_split
    return _Head(load_split(args.dataset, args.root, split, which), limit)


def cmd_train(args: argparse.Namespace) -> int:
    from .bundle import save_bundle
    from .train.trainer import Trainer, TrainConfig
    if args.reset_decoder and not args.init_from:
        raise ValueError('--reset-decoder re-fits the decoder of a trained bundle: '
                         'give --init-from')
    if args.init_from and args.model_config:
        raise ValueError('--init-from takes the network shape of that bundle: '
                         'drop --model-config')
    train = _split(args, args.split, 'train').seq
    images, labels = train.load_all()
    val = None
    if args.val_split != '':
        val = _split(args, args.val_split, 'val').seq.load_all()
    model = {}
    if args.init_from:
        model = json.loads(Path(args.init_from, 'config.json').read_text())
    elif args.model_config:
        model = _model_config(args.model_config)
    cfg = TrainConfig(out_dir=args.out, minutes=_floats(args.minutes), batch=args.batch,
                      threads=args.threads, device=args.device, seed=args.seed,
                      pause_range=_floats(args.pause_range), model=model,
                      crop=_crop(args.crop, images, TrainConfig.scale[0]),
                      **({'lr': _floats(args.lr)} if args.lr else {}))
    trainer = Trainer(cfg, train.spec, images, labels, val)
    if args.init_from:
        from .bundle import load_bundle
        bundle = load_bundle(args.init_from)
        if bundle.labels.num_classes != train.spec.num_classes:
            raise ValueError(f'{args.init_from} predicts {bundle.labels.num_classes} classes, '
                             f'the dataset has {train.spec.num_classes}')
        trainer.model.load_state_dict(bundle.load_model(fuse=False).state_dict())
        print(f'starting from the weights of {args.init_from}')
        if args.reset_decoder:
            trainer.reset_decoder()
            print('final decoder re-initialised')
    if args.resume and trainer.resume():
        print(f'resumed from {trainer.ckpt_path} at stage {trainer.stage + 1}, '
              f'{trainer.stage_elapsed / 60:.1f} min in')
    model = trainer.run()
    bundle = save_bundle(Path(args.out) / 'bundle', model, train.spec)
    print(f'bundle written to {bundle} (calibrate it next: ee-seg calibrate --model {bundle})')
    return 0


def _model_config(path: str) -> dict:
    """Architecture fields from a JSON file (a bundle's config.json, or a few overrides such as
    ``{"embed_dim": 96, "depth": 6, "exit_after": [2, 3, 4]}``); refused here, before training
    starts, when they do not make a network."""
    from .model import ModelConfig
    try:
        fields = json.loads(Path(path).read_text())
        if not isinstance(fields, dict):
            raise ValueError('not a JSON object')
        fields.pop('num_classes', None)       # always the dataset's
        ModelConfig.from_dict({**fields, 'num_classes': 2})
    except (OSError, ValueError, TypeError) as err:
        raise ValueError(f'--model-config {path}: {err}') from None
    return fields


def _crop(text: str | None, images: Sequence, min_scale: float) -> tuple[int, int]:
    """The training crop: HxW as given, or 256x352 shrunk to fit the smallest training image
    at the smallest augmentation scale (so a crop is mostly image, not padding)."""
    if text:
        try:
            h, w = (int(v) for v in text.lower().split('x'))
        except ValueError:
            raise ValueError(f'--crop {text!r}: expected HxW, e.g. 256x352') from None
        return h, w
    h = min(image.shape[0] for image in images)
    w = min(image.shape[1] for image in images)
    return min(256, max(16, int(h * min_scale))), min(352, max(16, int(w * min_scale)))


class _Head(Sequence):
    """The first ``n`` items of a sequence, without loading the rest."""

    def __init__(self, seq: Sequence, n: int | None) -> None:
        self.seq, self.n = seq, len(seq) if n is None else min(n, len(seq))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.seq[i]


def _segmenter(args: argparse.Namespace):
    from .runtime import Segmenter
    return Segmenter(args.model, device=args.device, threads=args.threads,
                     backend=getattr(args, 'backend', 'torch'),
                     precision=getattr(args, 'precision', 'fp32'))


def _eval_frames(args: argparse.Namespace, segmenter, split: str | None, which: str = 'val'):
    """The frames a bundle is scored on, refused when their classes are not the bundle's."""
    from .data.datasets import check_classes
    frames = _split(args, split, which, args.limit)
    check_classes(frames.seq.spec, segmenter.bundle.labels,
                  f'the {args.dataset} dataset at {args.root}', segmenter.bundle.path)
    return frames


def cmd_eval(args: argparse.Namespace) -> int:
    from .bench import write_json
    from .evaluate import format_table, sweep
    segmenter = _segmenter(args)
    frames = _eval_frames(args, segmenter, args.split)
    policy = segmenter.resolve(args.policy).spec()
    stats = sweep(segmenter, frames, [policy], warmup=args.warmup, progress=not args.quiet)
    summary = stats[policy].summary(segmenter.bundle.labels.class_names, segmenter.num_exits)
    summary.update(requested_policy=args.policy, dataset=args.dataset,
                   split=frames.seq.split, root=str(args.root),
                   bundle=str(segmenter.bundle.path))
    print(format_table([summary], [('policy', 'policy'), ('frames', 'frames'),
                                   ('miou', 'mIoU'), ('gmacs_mean', 'GMACs'),
                                   ('latency_ms_p50', 'p50 ms'), ('latency_ms_p95', 'p95 ms'),
                                   ('stopped_fraction_mean', 'stopped')]))
    print('per-class IoU: ' + ', '.join(f'{k} {v}' for k, v in
                                        summary['per_class_iou'].items()))
    print('exits: ' + ', '.join(f'{k} {v}' for k, v in summary['exit_histogram'].items()))
    if args.json:
        write_json(Path(args.json), summary)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import json

    from .bench import bench_table, run_bench, write_json
    segmenter = _segmenter(args)
    frames = _eval_frames(args, segmenter, args.split)
    out = Path(args.out)
    report = run_bench(segmenter, frames, frames.seq.split, out, args.threads,
                       progress=not args.quiet)
    print(bench_table(report))
    headline = {k: v for k, v in report.items() if k not in ('settings', 'static_points')}
    print(json.dumps(headline, indent=1))
    write_json(Path(args.json) if args.json else out / 'bench.json', report)
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from .calibrate import calibrate_bundle
    from .evaluate import format_table
    segmenter = _segmenter(args)
    train = _eval_frames(args, segmenter, args.train_split, 'train')
    frames = _eval_frames(args, segmenter, args.split, 'val')
    result = calibrate_bundle(segmenter, train, frames, train.seq.split, frames.seq.split,
                              device=args.device, progress=not args.quiet)
    names = segmenter.bundle.labels.class_names
    print('CBT class margins: ' + ', '.join(
        f'{n} {m:.3f}' for n, m in zip(names, result.calibration['margins'])))
    print(format_table(result.profile['points'], [('policy', 'point'), ('miou', 'mIoU'),
                                                  ('gmacs_mean', 'GMACs'),
                                                  ('latency_ms_p50', 'p50 ms')]))
    h, w = result.profile['input_size']
    print(f'calibrated at {w}x{h}; recommended (adaptive) point: '
          f'{result.profile["recommended"]}')
    return 0


def cmd_export_onnx(args: argparse.Namespace) -> int:
    from .export_onnx import export_onnx
    meta = export_onnx(args.model, precision=args.precision, opset=args.opset)
    graphs = meta['precisions'][args.precision]
    print(f'wrote {len(graphs)} {args.precision} ONNX stage graphs (opset {meta["opset"]}) '
          f'into {args.model}: ' + ', '.join(g['file'] for g in graphs.values()))
    return 0


def _replay_options(args: argparse.Namespace):
    from .replay.run import ReplayOptions
    return ReplayOptions(image_topic=args.image_topic, labels_topic=args.labels_topic,
                         labels_dir=args.labels_dir, battery_topic=args.battery_topic,
                         cpu_topic=args.cpu_topic, budget_ms=args.budget_ms,
                         policy=args.policy, timing=args.timing,
                         compare_full=args.compare == 'full', output_storage=args.storage)


def cmd_replay(args: argparse.Namespace) -> int:
    from .replay.api import print_summary, replay_bag, replay_many
    opts = _replay_options(args)
    out = Path(args.out)
    if len(args.bags) == 1:
        report = replay_bag(args.bags[0], out, opts, args.model, args.backend, args.threads,
                            args.overwrite)
        print_summary(report, out)
    else:
        reports = replay_many(args.bags, out, opts, args.model, args.backend, args.threads,
                              args.jobs, args.overwrite)
        for report in reports:
            print(f'## {report["bag"]}')
            print_summary(report, Path(report['output_bag']).parent)
    return 0


def cmd_bag_from_images(args: argparse.Namespace) -> int:
    from .replay.make_bag import bag_from_images
    out = bag_from_images(args.images, args.out, args.labels, args.rate, args.storage,
                          args.compressed, args.battery_trace, args.cpu_trace, args.overwrite)
    print(f'wrote {out}')
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from .replay.api import score_recording
    from .replay.report import summary_table
    report = score_recording(args.recorded, args.out, args.labels, args.model,
                             args.budget_ms, args.overwrite)
    print(summary_table(report))
    print(f'report: {Path(args.out) / "report.md"}')
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """A short synthetic drive (battery draining, a CPU-load spike) replayed with the bundled
    model: the README's first command."""
    import tempfile

    from .data.synthetic import write_camvid_layout
    from .replay.api import print_summary, replay_bag
    from .replay.make_bag import bag_from_images
    from .replay.run import ReplayOptions
    out = Path(args.out)
    with tempfile.TemporaryDirectory() as tmp:
        write_camvid_layout(Path(tmp), 'drive', args.frames, seed=args.seed)
        bag = out.parent / f'{out.name}_input_bag'
        duration = args.frames / args.rate
        bag_from_images(Path(tmp) / 'drive', bag, Path(tmp) / 'driveannot', args.rate,
                        battery_trace='drain:0.6,0.08',
                        cpu_trace=f'spike:{duration * 0.25:.1f},{duration * 0.5:.1f},0.95',
                        overwrite=True)
    print(f'synthetic drive: {args.frames} frames at {args.rate} Hz in {bag}')
    opts = ReplayOptions(budget_ms=args.budget_ms, policy='adaptive', compare_full=True)
    report = replay_bag(bag, out, opts, args.model, args.backend, args.threads,
                        overwrite=True)
    print_summary(report, out)
    return 0


def _add_runtime_args(p: argparse.ArgumentParser, model_required: bool = False) -> None:
    p.add_argument('--model', required=model_required, default=None,
                   help='bundle folder (default: the bundled model)')
    p.add_argument('--backend', default='torch', choices=('torch', 'onnxruntime'))
    p.add_argument('--precision', default='fp32', choices=('fp32', 'int8'),
                   help='int8: the dynamically quantised ONNX graphs (onnxruntime backend)')
    p.add_argument('--device', default='cpu')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--quiet', action='store_true', help='no progress bar')


def _add_dataset_args(p: argparse.ArgumentParser) -> None:
    """The dataset options train, calibrate, eval and bench share."""
    from .data.datasets import LAYOUTS
    p.add_argument('--dataset', choices=tuple(LAYOUTS), default='camvid',
                   help='layout of --root: ' + '; '.join(f'{n}: {lay.help}'
                                                         for n, lay in LAYOUTS.items()))
    p.add_argument('--root', required=True, help='dataset folder')


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='ee-seg', description=__doc__)
    sub = parser.add_subparsers(dest='command', required=True)

    p = sub.add_parser('train', help='train the multi-exit network (three stages)')
    _add_dataset_args(p)
    p.add_argument('--split', help='training split (default: the layout\'s, e.g. train)')
    p.add_argument('--val-split', help="validation split (default: the layout's, e.g. val; "
                                       "'' for none)")
    p.add_argument('--out', required=True, help='run folder (checkpoints, log, bundle)')
    p.add_argument('--minutes', default='70,8,10',
                   help='wall-clock minutes of stage 1 (backbone), 2 (exits), 3 (pausing)')
    p.add_argument('--batch', type=int, default=8)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--device', default='auto', help='auto, cpu or cuda')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--resume', action='store_true', help='continue from the run folder')
    p.add_argument('--init-from', help='start from the weights of this bundle (fine-tuning)')
    p.add_argument('--model-config', help='JSON file of network shape fields (e.g. a smaller '
                                          'network: embed_dim, depth, exit_after)')
    p.add_argument('--crop', help='training crop HxW (default 256x352, shrunk to fit the '
                                  'smallest training image)')
    p.add_argument('--lr', help='peak learning rates of the three stages, e.g. 2e-3,1e-3,3e-4')
    p.add_argument('--pause-range', default='0.9,1.0',
                   help='stage 3: range of the per-image confidence thresholds that pause tokens '
                        '(the confident end keeps what depth adds; see README)')
    p.add_argument('--reset-decoder', action='store_true',
                   help='with --init-from: fit the final decoder afresh (stage 3)')
    p.set_defaults(func=cmd_train)

    p = sub.add_parser('eval', help='evaluate a bundle at one policy on a labelled split')
    _add_dataset_args(p)
    p.add_argument('--split', help="split to score (default: the layout's, e.g. val)")
    p.add_argument('--policy', default='full',
                   help='full, exit:N, global:T, cbt:ALPHA,BETA, entropy:H or adaptive')
    p.add_argument('--json', help='write the results here')
    p.add_argument('--limit', type=int, help='only the first N frames')
    p.add_argument('--warmup', type=int, default=2)
    _add_runtime_args(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser('bench', help='speed/accuracy sweep of every exit setting, interleaved')
    _add_dataset_args(p)
    p.add_argument('--split', help="split to score (default: the layout's, e.g. val)")
    p.add_argument('--json', help='write the report here (default OUT/bench.json)')
    p.add_argument('--out', default='bench-out', help='folder for plots and JSON')
    p.add_argument('--limit', type=int)
    _add_runtime_args(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser('calibrate', help='CBT thresholds and the operating-point profile')
    p.add_argument('--model', required=True, help='bundle folder to calibrate (modified)')
    _add_dataset_args(p)
    p.add_argument('--train-split', help="split for CBT statistics (default: the layout's, "
                                         "e.g. train)")
    p.add_argument('--split', help="calibration split for the profile (default: the "
                                   "layout's, e.g. val)")
    p.add_argument('--limit', type=int)
    p.add_argument('--device', default='cpu')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--quiet', action='store_true')
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser('export-onnx', help='export the network as ONNX stage graphs')
    p.add_argument('--model', required=True, help='bundle folder (graphs are added to it)')
    p.add_argument('--precision', default='fp32', choices=('fp32', 'int8'))
    p.add_argument('--opset', type=int, default=17)
    p.set_defaults(func=cmd_export_onnx)

    p = sub.add_parser('replay', help='replay bags through the node pipeline and report')
    p.add_argument('bags', nargs='+', help='rosbag2 folders or .mcap / .db3 files')
    p.add_argument('--out', required=True, help='report folder (refused if it exists)')
    p.add_argument('--overwrite', action='store_true')
    p.add_argument('--image-topic')
    p.add_argument('--labels-topic', help='mono8 labels, matched to frames by header stamp')
    p.add_argument('--labels-dir', help='label PNGs matched by order, or by <stamp_ns>.png')
    p.add_argument('--battery-topic')
    p.add_argument('--cpu-topic', help='std_msgs/Float32 or diagnostic_msgs/DiagnosticArray')
    p.add_argument('--budget-ms', type=float, default=100.0)
    p.add_argument('--policy', default='adaptive',
                   help='adaptive (the controller), full, or a fixed policy such as cbt:0.5,0.99')
    p.add_argument('--timing', choices=('every-frame', 'realtime'), default='every-frame')
    p.add_argument('--compare', choices=('none', 'full'), default='none')
    p.add_argument('--storage', choices=('sqlite3', 'mcap'), default='sqlite3',
                   help='output bag: sqlite3 (version 8, Humble) or mcap (version 9)')
    p.add_argument('--jobs', type=int, default=1, help='bags replayed in parallel')
    _add_runtime_args(p)
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser('bag-from-images', help='make a bag from a folder of frames')
    p.add_argument('images')
    p.add_argument('--out', required=True)
    p.add_argument('--labels', help='folder of label PNGs with the frames\' names')
    p.add_argument('--rate', type=float, default=10.0)
    p.add_argument('--storage', choices=('sqlite3', 'mcap'), default='sqlite3')
    p.add_argument('--compressed', action='store_true', help='JPEG CompressedImage frames')
    p.add_argument('--battery-trace', help='const:V, drain:START,END or spike:T0,T1,LEVEL')
    p.add_argument('--cpu-trace', help='const:V, drain:START,END or spike:T0,T1,LEVEL')
    p.add_argument('--overwrite', action='store_true')
    p.set_defaults(func=cmd_bag_from_images)

    p = sub.add_parser('score', help='the replay report from a recording of the live node')
    p.add_argument('recorded', help='bag recorded from the node (~/mask, ~/exit_stats)')
    p.add_argument('--labels', help='bag with a labels topic, or folder of <stamp_ns>.png')
    p.add_argument('--out', required=True)
    p.add_argument('--model', default=None)
    p.add_argument('--budget-ms', type=float)
    p.add_argument('--overwrite', action='store_true')
    p.set_defaults(func=cmd_score)

    p = sub.add_parser('demo', help='replay a synthetic drive with the bundled model')
    p.add_argument('--out', default='demo-out')
    p.add_argument('--frames', type=int, default=60)
    p.add_argument('--rate', type=float, default=5.0)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--budget-ms', type=float, default=60.0)
    _add_runtime_args(p)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, NotADirectoryError, OSError) as err:
        print(f'ee-seg {args.command}: error: {err}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
