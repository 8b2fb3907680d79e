"""Readers for labelled image folders: the CamVid layout (``NAME/`` + ``NAMEannot/``),
Cityscapes (``leftImg8bit/``, ``gtFine/``) and ADE20K (``ADEChallengeData2016/``).

Every reader refuses missing folders, unpaired files and label values outside the label set
with a message naming the path, because a silently skipped or misread file corrupts a metric
without anyone noticing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from .labels import LabelSpec

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg')


class DatasetError(ValueError):
    """A dataset on disk is not what its layout promises."""


def read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(f'cannot read image {path}')
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_label(path: Path, spec: LabelSpec) -> np.ndarray:
    """Read a label PNG and map it to class ids with IGNORE for void."""
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise DatasetError(f'cannot read label {path}')
    if raw.ndim != 2 or raw.dtype != np.uint8:
        raise DatasetError(f'label {path} must be a single-channel 8-bit image, '
                           f'got shape {raw.shape} dtype {raw.dtype}')
    table, valid = spec.lookup()
    bad = ~valid[np.unique(raw)]
    if bad.any():
        values = np.unique(raw)[bad][:8].tolist()
        raise DatasetError(f'label {path} has values {values} outside the {spec.name} classes '
                           f'0..{spec.num_classes - 1 + spec.id_offset} '
                           f'(ignored: {list(spec.ignore_ids)})')
    return table[raw]


def _require_dir(path: Path) -> Path:
    if not path.is_dir():
        raise DatasetError(f'missing folder {path}')
    return path


def _pair(images: dict[str, Path], labels: dict[str, Path], where: str) -> list[tuple[Path, Path]]:
    only_img = sorted(set(images) - set(labels))
    only_lbl = sorted(set(labels) - set(images))
    if only_img or only_lbl:
        parts = []
        if only_img:
            parts.append(f'images without a label: {[str(images[k]) for k in only_img[:5]]}')
        if only_lbl:
            parts.append(f'labels without an image: {[str(labels[k]) for k in only_lbl[:5]]}')
        raise DatasetError(f'unpaired files in {where}: ' + '; '.join(parts))
    if not images:
        raise DatasetError(f'no images in {where}')
    return [(images[k], labels[k]) for k in sorted(images)]


class SegmentationFolder(Sequence):
    """Image/label pairs sorted by name; ``dataset[i]`` is (RGB uint8 HxWx3, ids uint8 HxW)."""

    def __init__(self, pairs: list[tuple[Path, Path]], spec: LabelSpec) -> None:
        self.pairs = pairs
        self.spec = spec

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        img_path, lbl_path = self.pairs[i]
        image, label = read_rgb(img_path), read_label(lbl_path, self.spec)
        if image.shape[:2] != label.shape:
            raise DatasetError(f'label {lbl_path} is {label.shape[1]}x{label.shape[0]} but '
                               f'image {img_path} is {image.shape[1]}x{image.shape[0]}')
        return image, label

    def name(self, i: int) -> str:
        return self.pairs[i][0].stem

    def load_all(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        items = [self[i] for i in range(len(self))]
        return [a for a, _ in items], [b for _, b in items]


def _by_stem(paths, suffix: str = '') -> dict[str, Path]:
    """Files keyed by name without extension (and without ``suffix``); two files that would
    share a key are refused rather than one of them silently dropped."""
    found: dict[str, Path] = {}
    for p in sorted(paths):
        key = p.stem.removesuffix(suffix) if suffix else p.stem
        if key in found:
            raise DatasetError(f'two files for one frame: {found[key]} and {p}')
        found[key] = p
    return found


def _files(folder: Path, suffix: str = '', suffixes: tuple[str, ...] = IMAGE_SUFFIXES,
           recursive: bool = False) -> dict[str, Path]:
    paths = folder.rglob('*') if recursive else folder.iterdir()
    return _by_stem([p for p in paths if p.is_file() and p.suffix.lower() in suffixes
                     and (not suffix or p.stem.endswith(suffix))], suffix)


def camvid_layout(root: str | Path, split: str, spec: LabelSpec) -> SegmentationFolder:
    """``root/split/*.png`` with labels of the same name in ``root/splitannot/``."""
    root = Path(root)
    img_dir = _require_dir(root / split)
    lbl_dir = _require_dir(root / f'{split}annot')
    images, labels = _files(img_dir), _files(lbl_dir)
    return SegmentationFolder(_pair(images, labels, f'{img_dir} and {lbl_dir}'), spec)


def cityscapes_layout(root: str | Path, split: str, spec: LabelSpec) -> SegmentationFolder:
    """``leftImg8bit/split/city/*_leftImg8bit.png`` with ``gtFine/split/city/
    *_gtFine_labelTrainIds.png`` (made by cityscapesScripts' createTrainIdLabelImgs)."""
    root = Path(root)
    img_dir = _require_dir(root / 'leftImg8bit' / split)
    lbl_dir = _require_dir(root / 'gtFine' / split)
    images = _files(img_dir, '_leftImg8bit', recursive=True)
    labels = _files(lbl_dir, '_gtFine_labelTrainIds', recursive=True)
    return SegmentationFolder(_pair(images, labels, f'{img_dir} and {lbl_dir}'), spec)


def ade20k_layout(root: str | Path, split: str, spec: LabelSpec) -> SegmentationFolder:
    """``ADEChallengeData2016/images/split/*.jpg`` with ``annotations/split/*.png``; split is
    ``training`` or ``validation``."""
    root = Path(root)
    base = root / 'ADEChallengeData2016' if (root / 'ADEChallengeData2016').is_dir() else root
    img_dir = _require_dir(base / 'images' / split)
    lbl_dir = _require_dir(base / 'annotations' / split)
    images, labels = _files(img_dir), _files(lbl_dir, suffixes=('.png',))
    return SegmentationFolder(_pair(images, labels, f'{img_dir} and {lbl_dir}'), spec)
