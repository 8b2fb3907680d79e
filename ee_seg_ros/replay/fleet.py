"""Fleet replay: many bags, and folders that hold bags, through one command.

Bags run one per task on an engine (``--jobs N`` local processes, or Ray with ``--ray``); a
bad bag, a task that raises and a worker that dies fail that bag alone. Each bag's report lands
in ``OUT/<bag name>/`` with its ``report.json`` written last (through a rename), so a folder
with a report.json is a finished bag and ``--resume`` can skip it. ``fleet_report`` merges the
finished bags into ``OUT/report.json``.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import os
import re
import signal
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path

from ..outdir import _HOLDER_PREFIX
from .run import ReplayOptions

BAG_SUFFIXES = ('.mcap', '.db3')
FLEET_FILE = 'fleet.json'            # what the run was asked to do, for --resume
RESERVED = {'report.json', 'report.md', FLEET_FILE}
FAULT_ENV = 'EE_SEG_FLEET_FAULT'     # test hook: "<bag name>:kill" or "<bag name>:raise"


class FleetError(ValueError):
    """A fleet run that cannot start as asked (a usage error); the message says why."""


@dataclass(frozen=True)
class BagJob:
    bag: str          # the bag's path
    name: str         # its folder under OUT


@dataclass(frozen=True)
class BagOutcome:
    """What one bag's task came back with; its figures are in OUT/<name>/report.json."""

    name: str
    bag: str
    status: str                   # ok | failed | skipped
    reason: str | None = None     # for a failed bag: its error in one line
    frames_processed: int = 0
    wall_s: float = 0.0


@dataclass(frozen=True)
class FleetSettings:
    """Everything a worker needs to replay a bag (picklable: it travels to workers)."""

    opts: ReplayOptions
    model: str | None = None
    backend: str = 'torch'
    precision: str = 'fp32'
    device: str = 'cpu'
    threads: int = 1
    fault: str | None = None      # FAULT_ENV, read once in the driver

    def identity(self, bundle_digest: str) -> dict:
        """The settings that change a bag's figures: a resume must use the same ones, compared
        as they are stored (JSON: tuples read back as lists)."""
        return {**{f'--{k.replace("_", "-")}': list(v) if isinstance(v, tuple) else v
                   for k, v in dataclasses.asdict(self.opts).items()},
                '--model': str(Path(self.model).resolve()) if self.model else 'default',
                'bundle sha256': bundle_digest, '--backend': self.backend,
                '--precision': self.precision, '--device': self.device}


# -- finding bags ------------------------------------------------------------------------------
def is_bag(path: Path) -> bool:
    """A rosbag2 folder (with metadata.yaml) or a loose .mcap / .db3 file."""
    return ((path.is_dir() and (path / 'metadata.yaml').is_file())
            or (path.is_file() and path.suffix in BAG_SUFFIXES))


def _search(folder: Path) -> Iterator[Path]:
    """Bags below ``folder``, in name order; hidden folders and ee-seg output folders that
    are not bags themselves are skipped (a replay's output holds output bags, which are not
    drives to evaluate)."""
    from ..outdir import is_ours
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        keep = []
        for d in sorted(dirs):
            sub = here / d
            if d.startswith('.'):
                continue
            if (sub / 'metadata.yaml').is_file():
                yield sub                     # a bag (bag-from-images marks its bags too)
            elif not is_ours(sub):            # a replay's output folder holds output bags
                keep.append(d)
        dirs[:] = keep
        for f in sorted(files):
            if Path(f).suffix in BAG_SUFFIXES:
                yield here / f


def _safe(text: str) -> str:
    return re.sub(r'[^A-Za-z0-9._-]+', '_', text).strip('._') or 'bag'


def discover(inputs: Iterable[str | Path]) -> list[BagJob]:
    """Bags from paths that are bags or folders holding bags, each with a folder name that is
    unique in the fleet (its path below the searched folder, joined with '__')."""
    found: list[tuple[Path, str]] = []
    for item in inputs:
        path = Path(item)
        if not path.exists():
            raise FleetError(f'{path} does not exist')
        if is_bag(path):
            found.append((path, _safe(path.stem if path.is_file() else path.name)))
        elif path.is_dir():
            bags = list(_search(path))
            if not bags:
                raise FleetError(f'no bags in {path}: a bag is a rosbag2 folder with a '
                                 'metadata.yaml or a .mcap / .db3 file')
            for bag in bags:
                rel = bag.relative_to(path)
                rel = rel.with_suffix('') if bag.is_file() else rel
                found.append((bag, _safe('__'.join(rel.parts))))
        else:
            raise FleetError(f'{path} is not a bag: expected a rosbag2 folder, a .mcap / .db3 '
                             'file or a folder that holds bags')
    jobs, seen_paths, names = [], set(), set()
    for path, name in found:
        key = path.resolve()
        if key in seen_paths:
            continue
        seen_paths.add(key)
        base, n = name, 1
        while name in names or name in RESERVED:
            n += 1
            name = f'{base}-{n}'
        names.add(name)
        jobs.append(BagJob(str(path), name))
    return jobs


# -- one bag, in whichever process runs it -----------------------------------------------------
_SEGMENTERS: dict = {}    # one loaded model per worker process, reused for all its bags


def _segmenter(s: FleetSettings):
    from ..runtime import Segmenter
    key = (s.model, s.backend, s.precision, s.device, s.threads)
    if key not in _SEGMENTERS:
        _SEGMENTERS.clear()
        _SEGMENTERS[key] = Segmenter(s.model, device=s.device, threads=s.threads,
                                     backend=s.backend, precision=s.precision)
    return _SEGMENTERS[key]


def one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    text = text[0] if text else ''
    from .bagio import BagError
    if isinstance(err, BagError):
        return text
    return f'{type(err).__name__}: {text}' if text else type(err).__name__


def replay_job(job: BagJob, s: FleetSettings, out: Path) -> BagOutcome:
    """Replay one bag into ``out/<name>``; any error fails this bag, not the caller."""
    from ..runtime.memory import keep_freed_memory
    from .api import no_work_reason, replay_bag
    keep_freed_memory()        # in a worker process too, as in ee-seg replay and the node
    start = time.perf_counter()
    if s.fault == f'{job.name}:kill':
        os.kill(os.getpid(), signal.SIGKILL)          # test hook: the worker dies mid-fleet
    if s.fault == f'{job.name}:sleep':
        time.sleep(120)                               # test hook: a bag still running
    try:
        if s.fault == f'{job.name}:raise':
            raise RuntimeError(f'test fault in {job.name}')
        report = replay_bag(job.bag, out / job.name, s.opts, backend=s.backend,
                            log=lambda *_: None, segmenter=_segmenter(s))
    except Exception as err:  # noqa: BLE001 - whatever went wrong belongs to this bag
        return BagOutcome(job.name, job.bag, 'failed', one_line(err),
                          wall_s=time.perf_counter() - start)
    processed = int(report['frames_processed'])
    reason = no_work_reason(report)              # zero work is not success
    if reason is not None:
        return BagOutcome(job.name, job.bag, 'failed', reason,
                          wall_s=time.perf_counter() - start)
    return BagOutcome(job.name, job.bag, 'ok', None, processed, time.perf_counter() - start)


# -- local engine: N worker processes ----------------------------------------------------------
def _worker_main(conn, settings: FleetSettings, out: Path) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)      # Ctrl-C is the driver's to handle
    while True:
        job = conn.recv()
        if job is None:
            return
        conn.send(replay_job(job, settings, out))


@dataclass
class _Worker:
    proc: object
    conn: object
    job: BagJob | None = None


def run_local(jobs: list[BagJob], settings: FleetSettings, out: Path,
              workers: int) -> Iterator[BagOutcome]:
    """Bags on ``workers`` processes, one bag at a time each, in the order given. A worker
    that dies fails the bag it held, and a fresh worker takes its place."""
    if workers <= 1:
        for job in jobs:
            yield replay_job(job, settings, out)
        return
    ctx = mp.get_context('spawn')       # no forked copies of a parent's thread pools
    pending = deque(jobs)
    pool: list[_Worker] = []

    def start() -> _Worker:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker_main, args=(child, settings, out), daemon=True)
        proc.start()
        child.close()
        return _Worker(proc, parent)

    def feed(w: _Worker) -> None:
        w.job = pending.popleft() if pending else None
        w.conn.send(w.job)

    try:
        for _ in range(min(workers, len(jobs))):
            w = start()
            pool.append(w)
            feed(w)
        while any(w.job is not None for w in pool):
            ready = set(wait([w.conn for w in pool if w.job] +
                             [w.proc.sentinel for w in pool if w.job]))
            for w in list(pool):
                if w.job is None or not ({w.conn, w.proc.sentinel} & ready):
                    continue
                outcome = None
                if w.conn in ready:
                    try:
                        outcome = w.conn.recv()
                    except (EOFError, OSError):
                        outcome = None
                if outcome is None:                  # the process died holding this bag
                    w.proc.join(5)
                    code = w.proc.exitcode
                    why = (f'killed by signal {signal.Signals(-code).name}'
                           if code is not None and code < 0 else f'exit code {code}')
                    yield BagOutcome(w.job.name, w.job.bag, 'failed',
                                     f'worker process died ({why})')
                    pool.remove(w)
                    w.conn.close()
                    if pending:
                        fresh = start()
                        pool.append(fresh)
                        feed(fresh)
                    continue
                yield outcome
                feed(w)
    finally:
        for w in pool:
            if w.proc.is_alive() and w.job is not None:
                w.proc.terminate()            # interrupted: our own worker, mid-bag
            w.proc.join(10)
            w.conn.close()


# -- resume ------------------------------------------------------------------------------------
def finished_report(folder: Path, bag: str) -> dict | None:
    """The complete report of a bag in ``folder``, or None (missing, partial, another bag)."""
    try:
        report = json.loads((folder / 'report.json').read_text())
    except (OSError, ValueError):
        return None
    if report.get('bag') != bag or not report.get('frames_processed'):
        return None
    return report


def identity_difference(old: dict, new: dict) -> str | None:
    """The options that differ between two runs, named, or None."""
    diffs = [f'{k} was {old.get(k)!r}, now {new.get(k)!r}'
             for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return '; '.join(diffs) or None


def progress(total: int, initial: int, quiet: bool):
    """One bar for the fleet: bags done, failed, frames and frames per second."""
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, unit='bag', disable=quiet, dynamic_ncols=True,
                desc='fleet')



# -- the driver --------------------------------------------------------------------------------
EXIT_OK, EXIT_USAGE, EXIT_SOME_FAILED, EXIT_INTERRUPTED = 0, 2, 3, 130


def _prepare(out: Path, jobs: list[BagJob], identity: dict, inputs: list[str],
             model: str | None, resume: bool, overwrite: bool
             ) -> tuple[list[BagJob], dict[str, dict]]:
    """Make (or, resuming, check and tidy) OUT; returns the jobs, with the names of an earlier
    run where it had them, and the finished reports of the bags to skip."""
    from ..outdir import check_out, is_ours, make_output_dir, remove_ours, write_text_atomic
    check_out(out, [*inputs, model], overwrite=overwrite or (resume and out.exists()))
    done: dict[str, dict] = {}
    if resume and out.exists():
        state_file = out / FLEET_FILE
        if not is_ours(out) or not state_file.is_file():
            raise FleetError(f'--resume: {out} is not a fleet replay folder (no {FLEET_FILE})')
        try:
            state = json.loads(state_file.read_text())
        except ValueError:
            raise FleetError(f'--resume: {state_file} is not valid JSON') from None
        diff = identity_difference(state.get('identity', {}), identity)
        if diff:
            raise FleetError(f'--resume refused: the options differ from the run in {out}: '
                             f'{diff}')
        names = {b['bag']: b['name'] for b in state.get('bags', [])}
        taken = set(names.values())
        renamed = []
        for job in jobs:
            name = names.get(job.bag)
            if name is None:
                base, n, name = job.name, 1, job.name
                while name in taken:
                    n += 1
                    name = f'{base}-{n}'
                taken.add(name)
            renamed.append(BagJob(job.bag, name))
        jobs = renamed
        for f in ('report.json', 'report.md'):       # the old fleet report: ours, now stale
            (out / f).unlink(missing_ok=True)
        for holder in out.glob(_HOLDER_PREFIX + '*'):  # a bag staged by a killed worker
            _remove_inside(out, holder)
        for job in jobs:
            folder = out / job.name
            report = finished_report(folder, job.bag)
            if report is not None:
                from .fleet_report import slim
                done[job.name] = slim(report, job.name)
            elif folder.exists():                    # a bag cut short: ours, done again
                remove_ours(folder) if is_ours(folder) else _remove_inside(out, folder)
    else:
        if out.exists():                             # check_out allowed it: --overwrite
            remove_ours(out) if is_ours(out) else out.rmdir()     # ours, or empty
        make_output_dir(out, 'replay')
    write_text_atomic(out / FLEET_FILE, json.dumps(
        {'identity': identity, 'bags': [dataclasses.asdict(j) for j in jobs]}, indent=1) + '\n')
    return jobs, done


def _remove_inside(out: Path, folder: Path) -> None:
    """A bag folder inside our (marked) fleet folder, left by an interrupted bag."""
    import shutil
    from ..outdir import is_ours
    if (is_ours(out) and folder.parent == out and folder.is_dir()
            and folder.name not in RESERVED):
        shutil.rmtree(folder)


def run_fleet(inputs: list[str], out: str | Path, settings: FleetSettings, jobs: int = 1,
              ray: bool = False, ray_address: str | None = None, resume: bool = False,
              overwrite: bool = False, quiet: bool = False, log=print) -> int:
    """Replay every bag of ``inputs`` into ``out`` and write the fleet report; the exit code:
    0 every bag ok, 3 some failed, 130 interrupted (finished bags kept, no fleet report)."""
    from ..bundle import MANIFEST, load_bundle, sha256
    from .fleet_report import merge_reports, slim, write_fleet_plots, write_fleet_report
    if settings.threads < 1 or jobs < 1:
        raise FleetError('--threads and --jobs must be at least 1')
    if ray:
        try:
            from .fleet_ray import run_ray
        except ImportError as err:
            raise FleetError(f'--ray needs Ray ({err}): pip install "ee_seg_ros[fleet]"') \
                from None
    out = Path(out).absolute()
    found = [BagJob(str(Path(j.bag).absolute()), j.name) for j in discover(inputs)]
    bundle = load_bundle(settings.model)
    identity = settings.identity(sha256(bundle.path / MANIFEST))
    found, done = _prepare(out, found, identity, inputs, settings.model, resume, overwrite)
    todo = [j for j in found if j.name not in done]
    outcomes = {name: BagOutcome(name, r['bag'], 'skipped', None, r['frames_processed'])
                for name, r in done.items()}
    engine = f'ray ({ray_address})' if ray and ray_address else (
        'ray (local)' if ray else f'{jobs} local process{"es" if jobs > 1 else ""}')
    log(f'fleet: {len(found)} bags ({len(done)} finished before, {len(todo)} to replay) on '
        f'{engine}, {settings.threads} inference thread(s) per bag')
    if ray:
        stream = run_ray(todo, settings, out, ray_address, bundle.path)
    else:
        stream = run_local(todo, settings, out, jobs)
    bar = progress(len(found), len(done), quiet)
    frames, failed, start = 0, 0, time.perf_counter()
    try:
        for outcome in stream:
            outcomes[outcome.name] = outcome
            frames += outcome.frames_processed
            failed += outcome.status == 'failed'
            bar.set_postfix(failed=failed, frames=frames,
                            fps=f'{frames / max(time.perf_counter() - start, 1e-9):.1f}')
            bar.update(1)
    except KeyboardInterrupt:
        stream.close()
        bar.close()
        finished = sum(o.status != 'failed' for o in outcomes.values())
        log(f'interrupted: {finished} of {len(found)} bags finished, their reports are in '
            f'{out}; no fleet report was written. Run the same command with --resume to '
            'replay the rest.')
        return EXIT_INTERRUPTED
    finally:
        stream.close()
    bar.close()
    ordered = [outcomes[j.name] for j in found]
    reports = []
    for o in ordered:
        if o.status in ('ok', 'skipped'):
            if o.name in done:                   # skipped: read and slimmed already
                reports.append(done[o.name])
                continue
            report = finished_report(out / o.name, o.bag)
            if report is None:      # written by a worker we cannot see (no shared folder?)
                outcomes[o.name] = o = dataclasses.replace(
                    o, status='failed', reason=f'its report is missing from {out / o.name}')
                continue
            reports.append(slim(report, o.name))
    ordered = [outcomes[j.name] for j in found]
    fleet = merge_reports(reports, ordered, settings.opts, bundle, engine)
    files = write_fleet_plots(fleet, reports, out)
    write_fleet_report(fleet, files, out)
    from .report import summary_table
    log(summary_table(fleet))
    for b in fleet['bags']:
        if b['status'] == 'failed':
            log(f'failed: {b["bag"]}: {b["reason"]}')
    log(f'{fleet["bags_ok"]} ok, {fleet["bags_skipped"]} skipped, {fleet["bags_failed"]} '
        f'failed; report: {out / "report.md"} (JSON: {out / "report.json"})')
    return EXIT_SOME_FAILED if fleet['bags_failed'] else EXIT_OK
