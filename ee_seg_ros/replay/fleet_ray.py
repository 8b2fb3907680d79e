"""The Ray engine of a fleet replay: each bag is one Ray task. The only module that imports Ray
(``pip install "ee_seg_ros[fleet]"``).

- With an address (``--ray-address`` or ``RAY_ADDRESS``) the driver joins that cluster;
  otherwise it starts a local Ray on 127.0.0.1 with the dashboard off.
- A task asks for ``num_cpus`` = its inference threads, so Ray never runs more threads on a
  node than it has cores.
- The bundle travels once through the object store: the driver puts its files there, and a
  worker writes them to a local cache folder (named by the manifest's SHA-256) the first time a
  node needs them. Bags and OUT must be on a path every node sees (a shared filesystem).
- Tasks are not retried: a worker that dies or runs out of memory fails its bag.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import ray

from .fleet import BagJob, BagOutcome, FleetError, FleetSettings, one_line, replay_job


def _bundle_files(path: Path) -> dict[str, bytes]:
    import json
    from ..bundle import MANIFEST
    names = [MANIFEST, *json.loads((path / MANIFEST).read_text())['files']]
    return {n: (path / n).read_bytes() for n in names}


def _local_bundle(box: list) -> str:
    """The shipped bundle on this node: written once per node, reused by every task."""
    import hashlib
    import shutil
    files: dict[str, bytes] | None = None
    key = box[1]
    folder = Path(tempfile.gettempdir()) / 'ee_seg_bundles' / key
    if not (folder / '.complete').exists():
        files = ray.get(box[0])
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f'.{key}-', dir=folder.parent))
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        (tmp / '.complete').write_text(hashlib.sha256(files['manifest.json']).hexdigest())
        try:
            os.replace(tmp, folder)
        except OSError:                    # another worker of this node was first
            shutil.rmtree(tmp, ignore_errors=True)
    return str(folder)


@ray.remote(max_retries=0)
def _bag_task(job: BagJob, settings: FleetSettings, out: str, box: list) -> BagOutcome:
    settings = dataclasses.replace(settings, model=_local_bundle(box))
    return replay_job(job, settings, Path(out))


def connect(address: str | None) -> None:
    """Join the cluster at ``address`` or start a local Ray on loopback."""
    os.environ.setdefault('RAY_USAGE_STATS_ENABLED', '0')     # no reporting home
    import logging
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    else:
        ray.init(address='local', _node_ip_address='127.0.0.1', include_dashboard=False,
                 num_cpus=os.cpu_count(), logging_level=logging.WARNING, log_to_driver=False)


def run_ray(jobs: list[BagJob], settings: FleetSettings, out: Path, address: str | None,
            bundle_path: Path) -> Iterator[BagOutcome]:
    """Every bag as a task; outcomes as tasks finish. Interrupting cancels the rest."""
    import hashlib
    from ..bundle import MANIFEST
    if not jobs:
        return
    connect(address)
    pending: dict = {}
    try:
        cpus = max((n['Resources'].get('CPU', 0) for n in ray.nodes() if n['Alive']), default=0)
        if settings.threads > cpus:
            raise FleetError(f'--threads {settings.threads}: no Ray node has that many CPUs '
                             f'(the largest has {cpus:g})')
        key = hashlib.sha256((bundle_path / MANIFEST).read_bytes()).hexdigest()[:16]
        box = [ray.put(_bundle_files(bundle_path)), key]     # once, not once per bag
        task = _bag_task.options(num_cpus=settings.threads)
        pending = {task.remote(job, settings, str(out), box): job for job in jobs}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                job = pending.pop(ref)
                try:
                    yield ray.get(ref)
                except Exception as err:  # noqa: BLE001 - worker died, out of memory, ...
                    yield BagOutcome(job.name, job.bag, 'failed', _ray_reason(err))
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        ray.shutdown()


def _ray_reason(err: BaseException) -> str:
    if isinstance(err, ray.exceptions.OutOfMemoryError):
        return 'worker ran out of memory (killed by Ray\'s memory monitor)'
    if isinstance(err, (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError)):
        return 'worker process died: ' + one_line(err).split(': ', 1)[-1][:200]
    return one_line(err)[:300]
