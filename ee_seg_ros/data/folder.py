"""Readers for labelled image folders: the CamVid layout (``NAME/`` + ``NAMEannot/``),
Cityscapes (``leftImg8bit/``, ``gtFine/``), ADE20K (``ADEChallengeData2016/``) and the generic
layout for a user's own data (``images/SPLIT/``, ``labels/SPLIT/``, ``classes.json``).

Every reader refuses missing folders, unpaired files and label values outside the label set
with a message naming the path, because a silently skipped or misread file corrupts a metric
without anyone noticing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .labels import IGNORE, LabelSpec, _lookup, default_palette

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg')


class DatasetError(ValueError):
    """A dataset on disk is not what its layout promises."""


def read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(f'cannot read image {path}')
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_label(path: Path, spec: LabelSpec) -> np.ndarray:
    """Read a label PNG (8-bit, or 16-bit) and map it to class ids with IGNORE for void."""
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise DatasetError(f'cannot read label {path}')
    if raw.ndim != 2 or raw.dtype not in (np.uint8, np.uint16):
        raise DatasetError(f'label {path} must be a single-channel 8-bit or 16-bit image, '
                           f'got shape {raw.shape} dtype {raw.dtype}')
    table, valid = _lookup(spec, 256 if raw.dtype == np.uint8 else 65536)
    present = np.bincount(raw.ravel(), minlength=table.size).astype(bool)
    bad = np.flatnonzero(present & ~valid)
    if bad.size:
        raise DatasetError(f'label {path} has values {bad[:8].tolist()} outside the {spec.name} '
                           f'classes 0..{spec.num_classes - 1 + spec.id_offset} '
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

    def __init__(self, pairs: list[tuple[Path, Path]], spec: LabelSpec,
                 split: str = '') -> None:
        self.pairs = pairs
        self.spec = spec
        self.split = split

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


def _by_stem(paths: Iterable[Path], suffix: str = '') -> dict[str, Path]:
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
    return SegmentationFolder(_pair(images, labels, f'{img_dir} and {lbl_dir}'), spec,
                              split)


def cityscapes_layout(root: str | Path, split: str, spec: LabelSpec) -> SegmentationFolder:
    """``leftImg8bit/split/city/*_leftImg8bit.png`` with ``gtFine/split/city/
    *_gtFine_labelTrainIds.png`` (made by cityscapesScripts' createTrainIdLabelImgs)."""
    root = Path(root)
    img_dir = _require_dir(root / 'leftImg8bit' / split)
    lbl_dir = _require_dir(root / 'gtFine' / split)
    images = _files(img_dir, '_leftImg8bit', recursive=True)
    labels = _files(lbl_dir, '_gtFine_labelTrainIds', recursive=True)
    return SegmentationFolder(_pair(images, labels, f'{img_dir} and {lbl_dir}'), spec,
                              split)


def ade20k_layout(root: str | Path, split: str, spec: LabelSpec) -> SegmentationFolder:
    """``ADEChallengeData2016/images/split/*.jpg`` with ``annotations/split/*.png``; split is
    ``training`` or ``validation``."""
    root = Path(root)
    base = root / 'ADEChallengeData2016' if (root / 'ADEChallengeData2016').is_dir() else root
    img_dir = _require_dir(base / 'images' / split)
    lbl_dir = _require_dir(base / 'annotations' / split)
    images, labels = _files(img_dir), _files(lbl_dir, suffixes=('.png',))
    return SegmentationFolder(_pair(images, labels, f'{img_dir} and {lbl_dir}'), spec,
                              split)


CLASSES_FILE = 'classes.json'
_CLASSES_KEYS = {'names', 'palette', 'ignore_index'}


def read_classes(path: str | Path) -> LabelSpec:
    """The label set of a folder-layout dataset from its ``classes.json``: ``names`` in id
    order, optional ``palette`` (one RGB triple per class), optional ``ignore_index`` (255)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f'missing class list {path} (a JSON object with "names")')
    try:
        data: Any = json.loads(path.read_text(encoding='utf-8'))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f'class list {path} does not parse as JSON: {err}') from None
    if not isinstance(data, dict):
        raise DatasetError(f'class list {path} must be a JSON object with "names"')
    unknown = sorted(set(data) - _CLASSES_KEYS)
    if unknown:
        raise DatasetError(f'class list {path} has unknown keys {unknown} '
                           f'(expected {sorted(_CLASSES_KEYS)})')
    names = data.get('names')
    if (not isinstance(names, list) or len(names) < 2
            or not all(isinstance(n, str) and n.strip() for n in names)):
        raise DatasetError(f'class list {path}: "names" must list at least two class names '
                           '(non-empty strings, in id order)')
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DatasetError(f'class list {path} names a class twice: {dupes}')
    if len(names) > IGNORE:
        raise DatasetError(f'class list {path} names {len(names)} classes; at most {IGNORE} '
                           'are supported (class ids are stored in 8 bits)')
    ignore = data.get('ignore_index', IGNORE)
    if not isinstance(ignore, int) or isinstance(ignore, bool) or not 0 <= ignore <= 65535:
        raise DatasetError(f'class list {path}: "ignore_index" must be an integer 0..65535, '
                           f'got {ignore!r}')
    if ignore < len(names):
        raise DatasetError(f'class list {path}: ignore_index {ignore} is the id of class '
                           f'{names[ignore]!r}; ignored pixels need a value above the class ids')
    palette = data.get('palette')
    if palette is None:
        palette = default_palette(len(names))
    elif (not isinstance(palette, list) or len(palette) != len(names)
          or not all(isinstance(c, list) and len(c) == 3
                     and all(isinstance(v, int) and 0 <= v <= 255 for v in c) for c in palette)):
        raise DatasetError(f'class list {path}: "palette" must hold one [R, G, B] triple of '
                           f'0..255 per class ({len(names)})')
    return LabelSpec(name=f'{path.parent.name or "dataset"} ({path.name})',
                     class_names=tuple(names),
                     palette=tuple((c[0], c[1], c[2]) for c in palette), ignore_ids=(ignore,))


def _flat_files(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """Files of a flat folder; a subfolder is refused rather than silently skipped."""
    subfolders = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if subfolders:
        raise DatasetError(f'folder {folder} holds subfolders {subfolders[:5]}: the folder '
                           'layout keeps every frame of a split directly in it')
    return _files(folder, suffixes=suffixes)


def folder_layout(root: str | Path, split: str,
                  spec: LabelSpec | None = None) -> SegmentationFolder:
    """``root/images/split/NAME.(png|jpg)`` with ``root/labels/split/NAME.png`` (class ids)
    and the label set in ``root/classes.json`` (``spec`` overrides it when given)."""
    root = Path(root)
    _require_dir(root)
    spec = spec or read_classes(root / CLASSES_FILE)
    img_dir = _require_dir(root / 'images' / split)
    lbl_dir = _require_dir(root / 'labels' / split)
    images = _flat_files(img_dir, IMAGE_SUFFIXES)
    labels = _flat_files(lbl_dir, ('.png',))
    return SegmentationFolder(_pair(images, labels, f'{img_dir} and {lbl_dir}'), spec,
                              split)


def write_classes(path: str | Path, spec: LabelSpec) -> Path:
    """Write ``spec`` as a folder layout's ``classes.json`` (the inverse of read_classes)."""
    ignore = [i for i in spec.ignore_ids if i >= spec.num_classes]
    if spec.id_offset or len(ignore) != 1:
        raise ValueError(f'{spec.name} needs a class-id offset or several ignore values; '
                         'classes.json stores ids from 0 and one ignore_index')
    path = Path(path)
    path.write_text(json.dumps({'names': list(spec.class_names),
                                'palette': [list(c) for c in spec.palette],
                                'ignore_index': ignore[0]}, indent=1) + '\n')
    return path
