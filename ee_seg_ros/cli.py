"""The ``ee-seg`` command: one entry point with a subcommand per job."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error: the usage block is for ``--help``."""

    def error(self, message: str):
        self.exit(2, f'{self.prog}: error: {message} (see {self.prog} --help)\n')


def _number(kind, low: float | None = None, strict: bool = True, what: str = 'a number'):
    """An argparse type: ``kind`` (int or float), finite, above ``low`` (or at least it)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'expected {what}, got {text!r}') from None
        if not math.isfinite(value) or (low is not None and
                                         (value <= low if strict else value < low)):
            raise argparse.ArgumentTypeError(f'expected {what}, got {text!r}')
        return value
    return parse


_POSITIVE_INT = _number(int, 0, what='a whole number of at least 1')
_COUNT = _number(int, 0, strict=False, what='a whole number of at least 0')
_POSITIVE = _number(float, 0, what='a positive number')


def _float_list(n: int, what: str):
    """An argparse type: ``n`` comma-separated finite numbers."""
    def parse(text: str) -> tuple[float, ...]:
        try:
            values = tuple(float(v) for v in text.split(','))
        except ValueError:
            values = ()
        if len(values) != n or not all(math.isfinite(v) for v in values):
            raise argparse.ArgumentTypeError(f'expected {what}, got {text!r}')
        return values
    return parse


def load_split(dataset: str, root: str, split: str):
    """A labelled split in one of the supported layouts."""
    from .data import folder
    from .data.labels import CAMVID, CITYSCAPES, ade20k_spec
    if dataset == 'camvid':
        return folder.camvid_layout(root, split, CAMVID)
    if dataset == 'cityscapes':
        return folder.cityscapes_layout(root, split, CITYSCAPES)
    if dataset == 'ade20k':
        return folder.ade20k_layout(root, split, ade20k_spec())
    raise ValueError(f'unknown dataset {dataset!r}')


def cmd_train(args: argparse.Namespace) -> int:
    from .bundle import save_bundle
    from .train.trainer import Trainer, TrainConfig
    if args.reset_decoder and not args.init_from:
        raise ValueError('--reset-decoder re-fits the decoder of a trained bundle: '
                         'give --init-from')
    train = load_split(args.dataset, args.root, args.split)
    images, labels = train.load_all()
    val = None
    if args.val_split:
        val = load_split(args.dataset, args.root, args.val_split).load_all()
    if min(args.minutes) < 0:
        raise ValueError(f'--minutes {args.minutes}: a stage cannot take negative minutes')
    lo, hi = args.pause_range
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f'--pause-range {lo},{hi}: expected LOW,HIGH with 0 <= LOW <= HIGH <= 1')
    cfg = TrainConfig(out_dir=args.out, minutes=args.minutes, batch=args.batch,
                      threads=args.threads, device=args.device, seed=args.seed,
                      pause_range=args.pause_range,
                      **({'lr': args.lr} if args.lr else {}),
                      **({'model': json.loads(Path(args.init_from, 'config.json').read_text())}
                         if args.init_from else {}))
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


def _eval_frames(args: argparse.Namespace, segmenter):
    from .data.folder import camvid_layout
    return _Head(camvid_layout(args.root, args.split, segmenter.bundle.labels), args.limit)


def cmd_eval(args: argparse.Namespace) -> int:
    from .bench import write_json
    from .evaluate import format_table, sweep
    segmenter = _segmenter(args)
    frames = _eval_frames(args, segmenter)
    policy = segmenter.resolve(args.policy).spec()
    stats = sweep(segmenter, frames, [policy], warmup=args.warmup, progress=not args.quiet)
    summary = stats[policy].summary(segmenter.bundle.labels.class_names, segmenter.num_exits)
    summary.update(requested_policy=args.policy, split=args.split, root=str(args.root),
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
    frames = _eval_frames(args, segmenter)
    out = Path(args.out)
    report = run_bench(segmenter, frames, args.split, out, args.threads,
                       progress=not args.quiet)
    print(bench_table(report))
    headline = {k: v for k, v in report.items() if k not in ('settings', 'static_points')}
    print(json.dumps(headline, indent=1))
    write_json(Path(args.json) if args.json else out / 'bench.json', report)
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from .bundle import update_bundle
    from .calibrate import build_profile, cbt_statistics, profile_sweep, stage_costs
    from .data.folder import camvid_layout
    from .evaluate import format_table
    from .runtime import Segmenter
    segmenter = _segmenter(args)
    labels = segmenter.bundle.labels
    train = _Head(camvid_layout(args.root, args.train_split, labels), args.limit)
    stats = cbt_statistics(segmenter, train, progress=not args.quiet)
    update_bundle(args.model, calibration={**stats, 'split': args.train_split})
    print('CBT class margins: ' + ', '.join(
        f'{n} {m:.3f}' for n, m in zip(labels.class_names, stats['margins'])))
    segmenter = Segmenter(args.model, device=args.device, threads=args.threads)
    frames = _Head(camvid_layout(args.root, args.split, labels), args.limit)
    rows = profile_sweep(segmenter, frames, progress=not args.quiet)
    profile = build_profile(rows, args.split, args.threads)
    first, _ = frames[0]
    profile['stage_costs'] = stage_costs(segmenter, first.shape[:2])
    update_bundle(args.model, profile=profile)
    print(format_table(profile['points'], [('policy', 'point'), ('miou', 'mIoU'),
                                           ('gmacs_mean', 'GMACs'),
                                           ('latency_ms_p50', 'p50 ms')]))
    print(f'recommended (adaptive) point: {profile["recommended"]}')
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
    priorities = {}
    for item in args.priority or ():
        name, sep, value = item.partition('=')
        try:
            priorities[name] = int(value)
        except ValueError:
            raise ValueError(f'--priority {item!r}: expected CAMERA=INTEGER') from None
        if not sep or not name:
            raise ValueError(f'--priority {item!r}: expected CAMERA=INTEGER')
    return ReplayOptions(image_topics=tuple(args.image_topic or ()),
                         labels_topics=tuple(args.labels_topic or ()),
                         labels_dir=args.labels_dir, priorities=priorities,
                         input_width=args.input_width, battery_topic=args.battery_topic,
                         cpu_topic=args.cpu_topic, budget_ms=args.budget_ms,
                         policy=args.policy, timing=args.timing,
                         compare_full=args.compare == 'full', output_storage=args.storage)


def _no_work(command: str, report: dict) -> int:
    """Exit status of a run that has printed its summary: 1, with the reason on stderr, when
    it processed no frame (zero work is not success)."""
    from .replay.api import no_work_reason
    reason = no_work_reason(report)
    if reason is None:
        return 0
    print(f'ee-seg {command}: error: {reason}', file=sys.stderr)
    return 1


def cmd_replay(args: argparse.Namespace) -> int:
    from .replay.api import print_summary, replay_bag, replay_many
    opts = _replay_options(args)
    out = Path(args.out)
    if len(args.bags) == 1:
        report = replay_bag(args.bags[0], out, opts, args.model, args.backend, args.threads,
                            args.overwrite)
        print_summary(report, out)
        return _no_work('replay', report)
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
    from .replay.report import camera_table, summary_table
    report = score_recording(args.recorded, args.out, args.labels, args.model,
                             args.budget_ms, args.overwrite)
    print(summary_table(report))
    if camera_table(report):
        print(camera_table(report))
    print(f'report: {Path(args.out) / "report.md"}')
    return _no_work('score', report)


def cmd_demo(args: argparse.Namespace) -> int:
    """A short synthetic drive (battery draining, a CPU-load spike) replayed with the bundled
    model: the README's first command."""
    import tempfile

    from .data.synthetic import write_camvid_layout
    from .outdir import check_out
    from .replay.api import print_summary, replay_bag
    from .replay.make_bag import bag_from_images
    from .replay.run import ReplayOptions
    out = Path(args.out)
    bag = out.parent / f'{out.name}_input_bag'
    # both folders are replaced on every run, but only when an earlier demo made them
    check_out(out, (args.model, bag), overwrite=True)
    check_out(bag, (args.model,), overwrite=True)
    with tempfile.TemporaryDirectory() as tmp:
        write_camvid_layout(Path(tmp), 'drive', args.frames, seed=args.seed)
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
    return _no_work('demo', report)


def _add_runtime_args(p: argparse.ArgumentParser, model_required: bool = False) -> None:
    p.add_argument('--model', required=model_required, default=None,
                   help='bundle folder (default: the bundled model)')
    p.add_argument('--backend', default='torch', choices=('torch', 'onnxruntime'))
    p.add_argument('--precision', default='fp32', choices=('fp32', 'int8'),
                   help='int8: the dynamically quantised ONNX graphs (onnxruntime backend)')
    p.add_argument('--device', default='cpu')
    p.add_argument('--threads', type=_POSITIVE_INT, default=2)
    p.add_argument('--quiet', action='store_true', help='no progress bar')


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog='ee-seg', description=__doc__)
    sub = parser.add_subparsers(dest='command', required=True)

    p = sub.add_parser('train', help='train the multi-exit network (three stages)')
    p.add_argument('--dataset', choices=('camvid', 'cityscapes', 'ade20k'), default='camvid')
    p.add_argument('--root', required=True, help='dataset folder')
    p.add_argument('--split', default='train')
    p.add_argument('--val-split', default='val', help="validation split ('' for none)")
    p.add_argument('--out', required=True, help='run folder (checkpoints, log, bundle)')
    p.add_argument('--minutes', default=(70.0, 8.0, 10.0),
                   type=_float_list(3, 'three comma-separated minutes, e.g. 70,8,10'),
                   help='wall-clock minutes of stage 1 (backbone), 2 (exits), 3 (pausing)')
    p.add_argument('--batch', type=_POSITIVE_INT, default=8)
    p.add_argument('--threads', type=_POSITIVE_INT, default=2)
    p.add_argument('--device', default='auto', help='auto, cpu or cuda')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--resume', action='store_true', help='continue from the run folder')
    p.add_argument('--init-from', help='start from the weights of this bundle (fine-tuning)')
    p.add_argument('--lr', type=_float_list(3, 'three comma-separated learning rates'),
                   help='peak learning rates of the three stages, e.g. 2e-3,1e-3,3e-4')
    p.add_argument('--pause-range', default=(0.9, 1.0),
                   type=_float_list(2, 'LOW,HIGH, e.g. 0.9,1.0'),
                   help='stage 3: range of the per-image confidence thresholds that pause tokens '
                        '(the confident end keeps what depth adds; see README)')
    p.add_argument('--reset-decoder', action='store_true',
                   help='with --init-from: fit the final decoder afresh (stage 3)')
    p.set_defaults(func=cmd_train)

    p = sub.add_parser('eval', help='evaluate a bundle at one policy on a labelled split')
    p.add_argument('--root', required=True, help='folder holding SPLIT/ and SPLITannot/')
    p.add_argument('--split', required=True)
    p.add_argument('--policy', default='full',
                   help='full, exit:N, global:T, cbt:ALPHA,BETA, entropy:H or adaptive')
    p.add_argument('--json', help='write the results here')
    p.add_argument('--limit', type=_POSITIVE_INT, help='only the first N frames')
    p.add_argument('--warmup', type=_COUNT, default=2)
    _add_runtime_args(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser('bench', help='speed/accuracy sweep of every exit setting, interleaved')
    p.add_argument('--root', required=True)
    p.add_argument('--split', required=True)
    p.add_argument('--json', help='write the report here (default OUT/bench.json)')
    p.add_argument('--out', default='bench-out', help='folder for plots and JSON')
    p.add_argument('--limit', type=_POSITIVE_INT)
    _add_runtime_args(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser('calibrate', help='CBT thresholds and the operating-point profile')
    p.add_argument('--model', required=True, help='bundle folder to calibrate (modified)')
    p.add_argument('--root', required=True)
    p.add_argument('--train-split', default='train', help='split for CBT statistics')
    p.add_argument('--split', default='val', help='calibration split for the profile')
    p.add_argument('--limit', type=_POSITIVE_INT)
    p.add_argument('--device', default='cpu')
    p.add_argument('--threads', type=_POSITIVE_INT, default=2)
    p.add_argument('--quiet', action='store_true')
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser('export-onnx', help='export the network as ONNX stage graphs')
    p.add_argument('--model', required=True, help='bundle folder (graphs are added to it)')
    p.add_argument('--precision', default='fp32', choices=('fp32', 'int8'))
    p.add_argument('--opset', type=_POSITIVE_INT, default=17)
    p.set_defaults(func=cmd_export_onnx)

    p = sub.add_parser('replay', help='replay bags through the node pipeline and report')
    p.add_argument('bags', nargs='+', help='rosbag2 folders or .mcap / .db3 files')
    p.add_argument('--out', required=True, help='report folder (refused if it exists)')
    p.add_argument('--overwrite', action='store_true')
    p.add_argument('--image-topic', action='append',
                   help='camera topic; repeat for several cameras (default: every colour '
                   'camera topic in the bag)')
    p.add_argument('--labels-topic', action='append',
                   help='mono8 labels, matched to frames by header stamp; one per '
                   '--image-topic, in the same order (default: the labels topic in each '
                   'camera\'s namespace)')
    p.add_argument('--priority', action='append', metavar='CAMERA=N',
                   help='a camera\'s priority for the shared model (default 0; higher first)')
    p.add_argument('--input-width', type=int, default=0,
                   help='resize frames to this width first, as the node\'s model.input_width')
    p.add_argument('--labels-dir', help='label PNGs matched by order, or by <stamp_ns>.png')
    p.add_argument('--battery-topic')
    p.add_argument('--cpu-topic', help='std_msgs/Float32 or diagnostic_msgs/DiagnosticArray')
    p.add_argument('--budget-ms', type=_POSITIVE, default=100.0)
    p.add_argument('--policy', default='adaptive',
                   help='adaptive (the controller), full, or a fixed policy such as cbt:0.5,0.99')
    p.add_argument('--timing', choices=('every-frame', 'realtime'), default='every-frame')
    p.add_argument('--compare', choices=('none', 'full'), default='none')
    p.add_argument('--storage', choices=('sqlite3', 'mcap'), default='sqlite3',
                   help='output bag: sqlite3 (version 8, Humble) or mcap (version 9)')
    p.add_argument('--jobs', type=_POSITIVE_INT, default=1, help='bags replayed in parallel')
    _add_runtime_args(p)
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser('bag-from-images', help='make a bag from a folder of frames')
    p.add_argument('images')
    p.add_argument('--out', required=True)
    p.add_argument('--labels', help='folder of label PNGs with the frames\' names')
    p.add_argument('--rate', type=_POSITIVE, default=10.0)
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
    p.add_argument('--budget-ms', type=_POSITIVE)
    p.add_argument('--overwrite', action='store_true')
    p.set_defaults(func=cmd_score)

    p = sub.add_parser('demo', help='replay a synthetic drive with the bundled model')
    p.add_argument('--out', default='demo-out')
    p.add_argument('--frames', type=_POSITIVE_INT, default=60)
    p.add_argument('--rate', type=_POSITIVE, default=5.0)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--budget-ms', type=_POSITIVE, default=60.0)
    _add_runtime_args(p)
    p.set_defaults(func=cmd_demo)
    return parser


def _one_line(err: BaseException) -> str:
    text = ' '.join(str(err).split()) or type(err).__name__
    return text if len(text) <= 400 else text[:397] + '...'


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand. Bad input ends in one line on stderr and exit status 2, never a
    traceback; a failure we did not foresee says so in one line and exits 1
    (``EE_SEG_DEBUG=1`` shows its traceback)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f'ee-seg {args.command}: interrupted', file=sys.stderr)
        return 130
    except (ValueError, OSError) as err:   # our refusals are ValueErrors; files are OSErrors
        print(f'ee-seg {args.command}: error: {_one_line(err)}', file=sys.stderr)
        return 2
    except Exception as err:
        if os.environ.get('EE_SEG_DEBUG'):
            raise
        print(f'ee-seg {args.command}: error: unexpected {type(err).__name__}: '
              f'{_one_line(err)} (EE_SEG_DEBUG=1 shows where)', file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main())
