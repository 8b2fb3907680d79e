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
    if min(args.minutes) < 0:
        raise ValueError(f'--minutes {args.minutes}: a stage cannot take negative minutes')
    lo, hi = args.pause_range
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f'--pause-range {lo},{hi}: expected LOW,HIGH with 0 <= LOW <= HIGH <= 1')
    model = {}
    if args.init_from:
        model = json.loads(Path(args.init_from, 'config.json').read_text())
    elif args.model_config:
        model = _model_config(args.model_config)
    extra, fraction = _synthetic_pool(args, train.spec, labels)
    steps = None
    if args.steps:
        steps = tuple(int(v) for v in args.steps)
        if min(steps) < 0 or steps != args.steps:
            raise ValueError(f'--steps {args.steps}: expected three whole numbers >= 0')
    cfg = TrainConfig(out_dir=args.out, minutes=args.minutes, steps=steps, batch=args.batch,
                      threads=args.threads, device=args.device, seed=args.seed,
                      pause_range=args.pause_range, model=model,
                      crop=_crop(args.crop, images, TrainConfig.scale[0]),
                      synthetic_fraction=fraction, warmup_steps=args.warmup_steps,
                      freeze_norm_stats=args.freeze_norm_stats,
                      **({'lr': args.lr} if args.lr else {}))
    trainer = Trainer(cfg, train.spec, images, labels, val, extra)
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


def _synthetic_pool(args: argparse.Namespace, spec, labels: Sequence) -> tuple:
    """``--synthetic N`` scenes (seed ``--synthetic-seed``) at the training set's most common
    resolution, and the share of each batch they make up: ``--synthetic-fraction``, or by
    default their share of the pooled frames."""
    if args.synthetic < 0:
        raise ValueError(f'--synthetic must be a number of scenes >= 0, got {args.synthetic}')
    if args.synthetic == 0:
        if args.synthetic_fraction:
            raise ValueError('--synthetic-fraction needs --synthetic N scenes to mix in')
        return None, 0.0
    from collections import Counter

    from .data.labels import CAMVID
    from .data.synthetic import SyntheticScenes
    if spec.class_names != CAMVID.class_names:
        raise ValueError('--synthetic scenes carry CamVid class ids; '
                         f'the {args.dataset} dataset has other classes')
    fraction = args.synthetic_fraction
    if fraction is None:
        fraction = args.synthetic / (args.synthetic + len(labels))
    if not 0.0 < fraction < 1.0:
        raise ValueError(f'--synthetic-fraction must be between 0 and 1, got {fraction}')
    size = Counter(label.shape for label in labels).most_common(1)[0][0]
    scenes = SyntheticScenes(args.synthetic, seed=args.synthetic_seed, size=size)
    print(f'mixing {args.synthetic} synthetic scenes ({size[1]}x{size[0]}, seed '
          f'{args.synthetic_seed}) into {fraction:.0%} of each batch')
    return scenes.load_all(), fraction


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
    from .replay.api import print_summary, replay_bag
    from .replay.fleet import FAULT_ENV, FleetSettings, is_bag, run_fleet
    opts = _replay_options(args)
    out = Path(args.out)
    ray_address = args.ray_address or (os.environ.get('RAY_ADDRESS') if args.ray else None)
    use_ray = args.ray or bool(args.ray_address)
    if use_ray and args.jobs:
        raise ValueError('--jobs runs local processes and --ray runs Ray tasks: give one')
    single = (len(args.bags) == 1 and is_bag(Path(args.bags[0])) and not use_ray
              and not args.resume)
    if single:
        report = replay_bag(args.bags[0], out, opts, args.model, args.backend,
                            args.threads or 2, args.overwrite)
        print_summary(report, out)
        return _no_work('replay', report)
    jobs = args.jobs or 1
    threads = args.threads or (1 if use_ray else max(1, (os.cpu_count() or 1) // jobs))
    settings = FleetSettings(opts, args.model, args.backend, args.precision, args.device,
                             threads, os.environ.get(FAULT_ENV))
    return run_fleet(args.bags, out, settings, jobs, use_ray, ray_address, args.resume,
                     args.overwrite, args.quiet)


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


def cmd_compare(args: argparse.Namespace) -> int:
    from .bench import write_json
    from .replay.compare import (Tolerances, compare_reports, comparison_json, format_rows,
                                 load_report)
    tol = Tolerances(miou_pp=args.tol_miou, deadline_pp=args.tol_deadline,
                     latency_rel=args.tol_latency / 100, gmacs_rel=args.tol_gmacs / 100,
                     frames=args.tol_frames)
    from dataclasses import asdict

    from .replay.gap import format_split, split_deadline_gap
    online, offline = load_report(args.online), load_report(args.offline)
    rows = compare_reports(online, offline, tol)
    print(format_rows(rows, Path(args.online).name, Path(args.offline).name))
    split = None
    if online.get('series') and offline.get('series') \
            and online.get('budget_ms') == offline.get('budget_ms'):
        split = split_deadline_gap(online, offline)
        print('\nwhere the deadline hit rates part (online frames re-timed with offline\'s '
              'costs, one part at a time):')
        print(format_split(split))
    flagged = [r.figure for r in rows if r.flagged]
    print('within tolerance' if not flagged else
          f'{len(flagged)} figure(s) differ beyond tolerance: ' + ', '.join(flagged))
    if args.json:
        write_json(Path(args.json), {**comparison_json(rows, tol, args.online, args.offline),
                                     'deadline_gap': None if split is None else asdict(split)})
    return 1 if flagged else 0


def cmd_demo(args: argparse.Namespace) -> int:
    """A short synthetic drive (battery draining, a CPU-load spike) replayed with the bundled
    model: the README's first command. Its budget is sized from what this machine measures."""
    import tempfile

    from .data.synthetic import SyntheticScenes, write_camvid_layout
    from .outdir import check_out
    from .replay.api import print_summary, replay_bag
    from .replay.demo_budget import (annotate_report, given_budget, measure_budget,
                                     what_the_demo_measures)
    from .replay.make_bag import bag_from_images
    from .replay.run import ReplayOptions
    from .runtime import Segmenter
    out = Path(args.out)
    bag = out.parent / f'{out.name}_input_bag'
    # both folders are replaced on every run, but only when an earlier demo made them
    check_out(out, (args.model, bag), overwrite=True)
    check_out(bag, (args.model,), overwrite=True)
    segmenter = Segmenter(args.model, threads=args.threads, backend=args.backend)
    if args.budget_ms is not None:
        budget = given_budget(segmenter, args.budget_ms)
    else:
        scenes = SyntheticScenes(min(args.frames, 3), seed=args.seed)
        budget = measure_budget(segmenter, [scenes[i][0] for i in range(len(scenes))],
                                args.budget_multiple)
    del segmenter
    print(budget.describe())
    with tempfile.TemporaryDirectory() as tmp:
        write_camvid_layout(Path(tmp), 'drive', args.frames, seed=args.seed)
        duration = args.frames / args.rate
        bag_from_images(Path(tmp) / 'drive', bag, Path(tmp) / 'driveannot', args.rate,
                        battery_trace='drain:0.6,0.08',
                        cpu_trace=f'spike:{duration * 0.25:.1f},{duration * 0.5:.1f},0.95',
                        overwrite=True)
    print(f'synthetic drive: {args.frames} frames at {args.rate} Hz in {bag}')
    opts = ReplayOptions(budget_ms=budget.budget_ms, policy='adaptive', compare_full=True)
    report = replay_bag(bag, out, opts, args.model, args.backend, args.threads,
                        overwrite=True)
    annotate_report(out, budget, what_the_demo_measures(budget, args.frames, args.rate,
                                                        args.seed))
    print_summary(report, out)
    print(budget.describe())
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


def _add_dataset_args(p: argparse.ArgumentParser) -> None:
    """The dataset options train, calibrate, eval and bench share."""
    from .data.datasets import LAYOUTS
    p.add_argument('--dataset', choices=tuple(LAYOUTS), default='camvid',
                   help='layout of --root: ' + '; '.join(f'{n}: {lay.help}'
                                                         for n, lay in LAYOUTS.items()))
    p.add_argument('--root', required=True, help='dataset folder')


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog='ee-seg', description=__doc__)
    sub = parser.add_subparsers(dest='command', required=True)

    p = sub.add_parser('train', help='train the multi-exit network (three stages)')
    _add_dataset_args(p)
    p.add_argument('--split', help='training split (default: the layout\'s, e.g. train)')
    p.add_argument('--val-split', help="validation split (default: the layout's, e.g. val; "
                                       "'' for none)")
    p.add_argument('--out', required=True, help='run folder (checkpoints, log, bundle)')
    p.add_argument('--minutes', default=(70.0, 8.0, 10.0),
                   type=_float_list(3, 'three comma-separated minutes, e.g. 70,8,10'),
                   help='wall-clock minutes of stage 1 (backbone), 2 (exits), 3 (pausing)')
    p.add_argument('--steps', type=_float_list(3, 'three comma-separated step counts'),
                   help='optimiser steps of the three stages instead of --minutes: the same '
                        'run on any machine, busy or not')
    p.add_argument('--batch', type=_POSITIVE_INT, default=8)
    p.add_argument('--threads', type=_POSITIVE_INT, default=2)
    p.add_argument('--device', default='auto', help='auto, cpu or cuda')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--resume', action='store_true', help='continue from the run folder')
    p.add_argument('--init-from', help='start from the weights of this bundle (fine-tuning)')
    p.add_argument('--model-config', help='JSON file of network shape fields (e.g. a smaller '
                                          'network: embed_dim, depth, exit_after)')
    p.add_argument('--crop', help='training crop HxW (default 256x352, shrunk to fit the '
                                  'smallest training image)')
    p.add_argument('--lr', type=_float_list(3, 'three comma-separated learning rates'),
                   help='peak learning rates of the three stages, e.g. 2e-3,1e-3,3e-4')
    p.add_argument('--warmup-steps', type=_COUNT,
                   default=150, help='linear warm-up of stage 1 (fewer suit a fine-tune)')
    p.add_argument('--pause-range', default=(0.9, 1.0),
                   type=_float_list(2, 'LOW,HIGH, e.g. 0.9,1.0'),
                   help='stage 3: range of the per-image confidence thresholds that pause tokens '
                        '(the confident end keeps what depth adds; see README)')
    p.add_argument('--reset-decoder', action='store_true',
                   help='with --init-from: fit the final decoder afresh (stage 3)')
    p.add_argument('--freeze-norm-stats', action='store_true',
                   help="stage 1 keeps the batch-norm running statistics (a fine-tune keeps "
                        "the original data's)")
    p.add_argument('--synthetic', type=int, default=0, metavar='N',
                   help='mix N synthetic street scenes (exact CamVid ids) into training')
    p.add_argument('--synthetic-seed', type=int, default=1,
                   help='seed of those scenes (the demo drives seed 0, so 1 keeps its frames '
                        'out of training)')
    p.add_argument('--synthetic-fraction', type=float, default=None,
                   help='share of each batch drawn from the scenes (default: their share of '
                        'all frames)')
    p.set_defaults(func=cmd_train)

    p = sub.add_parser('eval', help='evaluate a bundle at one policy on a labelled split')
    _add_dataset_args(p)
    p.add_argument('--split', help="split to score (default: the layout's, e.g. val)")
    p.add_argument('--policy', default='full',
                   help='full, exit:N, global:T, cbt:ALPHA,BETA, entropy:H or adaptive')
    p.add_argument('--json', help='write the results here')
    p.add_argument('--limit', type=_POSITIVE_INT, help='only the first N frames')
    p.add_argument('--warmup', type=_COUNT, default=2)
    _add_runtime_args(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser('bench', help='speed/accuracy sweep of every exit setting, interleaved')
    _add_dataset_args(p)
    p.add_argument('--split', help="split to score (default: the layout's, e.g. val)")
    p.add_argument('--json', help='write the report here (default OUT/bench.json)')
    p.add_argument('--out', default='bench-out', help='folder for plots and JSON')
    p.add_argument('--limit', type=_POSITIVE_INT)
    _add_runtime_args(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser('calibrate', help='CBT thresholds and the operating-point profile')
    p.add_argument('--model', required=True, help='bundle folder to calibrate (modified)')
    _add_dataset_args(p)
    p.add_argument('--train-split', help="split for CBT statistics (default: the layout's, "
                                         "e.g. train)")
    p.add_argument('--split', help="calibration split for the profile (default: the "
                                   "layout's, e.g. val)")
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

    p = sub.add_parser('replay', help='replay bags through the node pipeline and report',
                       epilog='Exit codes: 0 every bag replayed, 3 some bags failed (the '
                              'fleet report says why), 2 usage error, 130 interrupted.')
    p.add_argument('bags', nargs='+', help='rosbag2 folders, .mcap / .db3 files, or folders '
                   'searched for bags (then OUT holds a fleet report and one folder per bag)')
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
    p.add_argument('--timing', choices=('every-frame', 'realtime', 'paced'),
                   default='every-frame',
                   help='every-frame: each frame as it comes; realtime: frames that arrive '
                        'while the model is busy replace their camera\'s (bag time); paced: '
                        'realtime on the wall clock, the model idling between frames as in a '
                        'live node (takes as long as the bag)')
    p.add_argument('--compare', choices=('none', 'full'), default='none')
    p.add_argument('--storage', choices=('sqlite3', 'mcap'), default='sqlite3',
                   help='output bag: sqlite3 (version 8, Humble) or mcap (version 9)')
    p.add_argument('--jobs', type=_POSITIVE_INT,
                   help='bags replayed in parallel in local processes')
    p.add_argument('--ray', action='store_true',
                   help='each bag as a Ray task (pip install "ee_seg_ros[fleet]"): a local '
                        'Ray on 127.0.0.1, or the cluster of --ray-address / RAY_ADDRESS')
    p.add_argument('--ray-address', help='join this Ray cluster (implies --ray)')
    p.add_argument('--resume', action='store_true',
                   help='keep the finished bags of an interrupted fleet run in --out, '
                        'replay the rest (refused if the options differ)')
    _add_runtime_args(p)
    p.set_defaults(func=cmd_replay, threads=None)

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

    p = sub.add_parser('compare', help='an online report beside an offline one, with tolerances',
                       description='Exit code 0 when every figure is within tolerance, 1 when '
                                   'some differ, 2 for a report that cannot be read.')
    p.add_argument('online', help='report folder of ee-seg score (the live node)')
    p.add_argument('offline', help='report folder of ee-seg replay (the same bag)')
    p.add_argument('--tol-miou', type=float, default=0.5, help='mIoU, points (0.5)')
    p.add_argument('--tol-deadline', type=float, default=2.0,
                   help='deadline hit rate, points (2.0)')
    p.add_argument('--tol-latency', type=float, default=10.0,
                   help='latency percentiles, %% of offline (10)')
    p.add_argument('--tol-gmacs', type=float, default=5.0, help='GMACs, %% of offline (5)')
    p.add_argument('--tol-frames', type=int, default=0, help='frame counts (0: exact)')
    p.add_argument('--json', help='write the comparison here')
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser('demo', help='replay a synthetic drive with the bundled model')
    p.add_argument('--out', default='demo-out')
    p.add_argument('--frames', type=_POSITIVE_INT, default=60)
    p.add_argument('--rate', type=_POSITIVE, default=5.0)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--budget-ms', type=_POSITIVE, default=None,
                   help='fixed latency budget (default: --budget-multiple x the latency of the '
                        'cheapest point, measured here at warm-up)')
    p.add_argument('--budget-multiple', type=_POSITIVE, default=2.0,
                   help='budget = this multiple of the cheapest point\'s latency measured '
                        'here at warm-up (default 2)')
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
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:       # a refused argument (one line already) or --help
        return done.code if isinstance(done.code, int) else 2
    from .runtime.memory import keep_freed_memory
    keep_freed_memory()              # as the node does: see runtime/memory.py
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
