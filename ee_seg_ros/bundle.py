"""Model bundles: one folder holding everything needed to run a trained network.

Weights are safetensors (loading never unpickles arbitrary objects); the architecture, label
set, CBT calibration and operating-point profile are JSON; ``manifest.json`` records the format
version and a SHA-256 per file, so a corrupt, mismatched or missing file is refused at load
with a message naming it, not discovered as garbage output mid-stream.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from . import __version__
from .data.labels import LabelSpec

FORMAT = 'ee_seg_ros.bundle'
FORMAT_VERSION = 1
WEIGHTS = 'model.safetensors'
CONFIG = 'config.json'
LABELS = 'labels.json'
CALIBRATION = 'calibration.json'
PROFILE = 'profile.json'
ONNX_META = 'onnx.json'
MANIFEST = 'manifest.json'
REQUIRED = (WEIGHTS, CONFIG, LABELS)


class BundleError(ValueError):
    """A bundle folder cannot be used as it is."""


def default_bundle_path() -> Path:
    """The bundle shipped inside the package."""
    return Path(str(resources.files('ee_seg_ros') / 'models' / 'default'))


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open('rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Bundle:
    """A verified bundle; ``model`` is built on demand by ``load_model``."""

    path: Path
    manifest: dict[str, Any]
    config: dict[str, Any]
    labels: LabelSpec
    calibration: dict[str, Any] | None = None
    profile: dict[str, Any] | None = None

    def load_model(self, device: str = 'cpu', fuse: bool = True):
        """Build the network and load the weights (strict: every tensor present and shaped)."""
        import torch
        from safetensors.torch import load_file

        from .model import ModelConfig, MultiExitSegmenter
        cfg = ModelConfig.from_dict(self.config)
        model = MultiExitSegmenter(cfg)
        try:
            state = load_file(str(self.path / WEIGHTS), device='cpu')
        except Exception as err:  # safetensors raises its own error types
            raise BundleError(f'cannot read weights {self.path / WEIGHTS}: {err}') from None
        try:
            result = model.load_state_dict(state, strict=False)
        except RuntimeError as err:  # a tensor of the wrong shape
            raise BundleError(f'weights {self.path / WEIGHTS} do not match {CONFIG}: '
                              f'{str(err).splitlines()[-1].strip()}') from None
        if result.missing_keys or result.unexpected_keys:
            raise BundleError(
                f'weights {self.path / WEIGHTS} do not match {CONFIG}: missing '
                f'{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}')
        model.eval()
        if fuse:
            model.fuse()
        return model.to(torch.device(device))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise BundleError(f'missing bundle file {path}') from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BundleError(f'corrupt bundle file {path}: {err}') from None


def load_bundle(path: str | Path | None = None, verify: bool = True) -> Bundle:
    """Open and verify a bundle folder (the packaged default when ``path`` is None)."""
    path = default_bundle_path() if path in (None, '') else Path(path)
    if not path.is_dir():
        raise BundleError(f'model bundle {path} is not a folder')
    manifest = _read_json(path / MANIFEST)
    if manifest.get('format') != FORMAT:
        raise BundleError(f'{path / MANIFEST} is not an {FORMAT} manifest')
    if manifest.get('format_version') != FORMAT_VERSION:
        raise BundleError(f'bundle {path} has format version {manifest.get("format_version")}, '
                          f'this ee_seg_ros reads version {FORMAT_VERSION}')
    files: dict[str, str] = manifest.get('files', {})
    for name in REQUIRED:
        if name not in files:
            raise BundleError(f'bundle manifest {path / MANIFEST} does not list {name}')
    for name, digest in files.items():
        file = path / name
        if not file.is_file():
            raise BundleError(f'missing bundle file {file}')
        if verify and sha256(file) != digest:
            raise BundleError(f'checksum mismatch for {file}: the file is corrupt or was '
                              'changed after the bundle was written')
    config = _read_json(path / CONFIG)
    labels = LabelSpec.from_dict(_read_json(path / LABELS))
    if config.get('num_classes') != labels.num_classes:
        raise BundleError(f'{path / CONFIG} has {config.get("num_classes")} classes but '
                          f'{path / LABELS} names {labels.num_classes}')
    calibration = _read_json(path / CALIBRATION) if CALIBRATION in files else None
    profile = _read_json(path / PROFILE) if PROFILE in files else None
    return Bundle(path=path, manifest=manifest, config=config, labels=labels,
                  calibration=calibration, profile=profile)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + '\n')


def write_manifest(path: Path, notes: dict[str, Any] | None = None) -> None:
    """Checksum every bundle file present and (re)write the manifest."""
    old = {}
    if (path / MANIFEST).exists():
        old = json.loads((path / MANIFEST).read_text()).get('notes', {})
    names = [n for n in (WEIGHTS, CONFIG, LABELS, CALIBRATION, PROFILE, ONNX_META)
             if (path / n).exists()]
    names += sorted(p.name for p in path.glob('*.onnx'))
    _write_json(path / MANIFEST, {
        'format': FORMAT, 'format_version': FORMAT_VERSION, 'package_version': __version__,
        'written': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
        'files': {n: sha256(path / n) for n in names}, 'notes': {**old, **(notes or {})}})


def save_bundle(path: str | Path, model, labels: LabelSpec,
                calibration: dict[str, Any] | None = None,
                profile: dict[str, Any] | None = None,
                notes: dict[str, Any] | None = None) -> Path:
    """Write a bundle from an (unfused) model."""
    from safetensors.torch import save_file
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path / WEIGHTS), metadata={'format': FORMAT})
    _write_json(path / CONFIG, model.cfg.to_dict())
    _write_json(path / LABELS, labels.to_dict())
    for name, data in ((CALIBRATION, calibration), (PROFILE, profile)):
        if data is not None:
            _write_json(path / name, data)
    write_manifest(path, notes)
    return path


def update_bundle(path: str | Path, calibration: dict[str, Any] | None = None,
                  profile: dict[str, Any] | None = None,
                  notes: dict[str, Any] | None = None) -> None:
    """Add calibration or a profile to an existing bundle and re-checksum it."""
    path = Path(path)
    load_bundle(path)  # refuse to extend a bundle that is already broken
    for name, data in ((CALIBRATION, calibration), (PROFILE, profile)):
        if data is not None:
            _write_json(path / name, data)
    write_manifest(path, notes)
