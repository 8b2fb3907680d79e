"""Turn a trained model into a bundle folder."""

from __future__ import annotations

from pathlib import Path

from ..data.labels import LabelSpec
from ..model import MultiExitSegmenter


def export_bundle(model: MultiExitSegmenter, spec: LabelSpec, out: Path) -> Path:
    from ..bundle import save_bundle
    return save_bundle(out, model, spec)
