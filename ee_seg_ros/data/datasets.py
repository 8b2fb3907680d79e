"""One loader behind every command that reads labelled data (train, calibrate, eval, bench).

A dataset is a layout name, a root folder and a split; each layout knows its own label set
(CamVid, Cityscapes and ADE20K have fixed ones, the folder layout reads ``classes.json``), so a
bundle can be checked against the data before a single frame is scored with the wrong names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from . import folder
from .folder import DatasetError, SegmentationFolder
from .labels import CAMVID, CITYSCAPES, LabelSpec, ade20k_spec


@dataclass(frozen=True)
class Layout:
    """A dataset layout and the split names it uses by default."""

    name: str
    train_split: str
    val_split: str
    help: str


LAYOUTS = {layout.name: layout for layout in (
    Layout('camvid', 'train', 'val', 'ROOT/SPLIT/*.png with ROOT/SPLITannot/*.png (11 classes)'),
    Layout('cityscapes', 'train', 'val',
           'ROOT/leftImg8bit/SPLIT/ with ROOT/gtFine/SPLIT/*_labelTrainIds.png (19 classes)'),
    Layout('ade20k', 'training', 'validation',
           'ROOT/[ADEChallengeData2016/]images/SPLIT/ with annotations/SPLIT/ (150 classes)'),
    Layout('folder', 'train', 'val',
           'ROOT/images/SPLIT/NAME.(png|jpg) with ROOT/labels/SPLIT/NAME.png and '
           'ROOT/classes.json (your own classes)'),
)}
DATASETS = tuple(LAYOUTS)


def layout(name: str) -> Layout:
    if name not in LAYOUTS:
        raise DatasetError(f'unknown dataset layout {name!r}; expected one of {DATASETS}')
    return LAYOUTS[name]


def load_split(dataset: str, root: str | Path, split: str | None = None,
               which: str = 'val') -> SegmentationFolder:
    """The labelled frames of one split; ``split=None`` takes the layout's own name for its
    ``which`` ('train' or 'val') split."""
    lay = layout(dataset)
    if split is None:
        split = lay.train_split if which == 'train' else lay.val_split
    if dataset == 'camvid':
        return folder.camvid_layout(root, split, CAMVID)
    if dataset == 'cityscapes':
        return folder.cityscapes_layout(root, split, CITYSCAPES)
    if dataset == 'ade20k':
        return folder.ade20k_layout(root, split, ade20k_spec())
    return folder.folder_layout(root, split)


def check_classes(data: LabelSpec, bundle: LabelSpec, where: str, bundle_path: Path) -> None:
    """Refuse to score a bundle on data whose classes are not the ones it predicts."""
    if data.class_names == bundle.class_names:
        return
    if data.num_classes != bundle.num_classes:
        raise DatasetError(f'{where} has {data.num_classes} classes but bundle {bundle_path} '
                           f'predicts {bundle.num_classes} ({_names(bundle.class_names)})')
    i = next(i for i, (a, b) in enumerate(zip(data.class_names, bundle.class_names)) if a != b)
    raise DatasetError(f'{where} names class {i} {data.class_names[i]!r} but bundle '
                       f'{bundle_path} names it {bundle.class_names[i]!r}')


def _names(names: Sequence[str], n: int = 6) -> str:
    return ', '.join(names[:n]) + (', ...' if len(names) > n else '')
