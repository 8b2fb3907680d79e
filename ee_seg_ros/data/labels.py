"""Label sets: class names, colours, and which raw label values mean 'ignore'."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

IGNORE = 255  # internal label value for pixels excluded from losses and metrics


@dataclass(frozen=True)
class LabelSpec:
    name: str
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    ignore_ids: tuple[int, ...] = (IGNORE,)
    id_offset: int = 0  # raw value = class id + offset (ADE20K stores classes from 1)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def lookup(self, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """A table from raw label values (``size``: 256 for 8-bit label files, 65536 for 16-bit
        ones) to class ids (IGNORE for void), and a mask of which raw values are legal at all.
        Built once per label set and size (it is applied to every label read); the caller
        gets its own copy."""
        table, valid = _lookup(self, size)
        return table.copy(), valid.copy()

    def to_dict(self) -> dict:
        return {'name': self.name, 'class_names': list(self.class_names),
                'palette': [list(c) for c in self.palette], 'ignore_ids': list(self.ignore_ids),
                'id_offset': self.id_offset}

    @classmethod
    def from_dict(cls, d: dict) -> LabelSpec:
        return cls(name=d['name'], class_names=tuple(d['class_names']),
                   palette=tuple((int(c[0]), int(c[1]), int(c[2])) for c in d['palette']),
                   ignore_ids=tuple(d.get('ignore_ids', (IGNORE,))),
                   id_offset=int(d.get('id_offset', 0)))


@cache
def _lookup(spec: LabelSpec, size: int) -> tuple[np.ndarray, np.ndarray]:
    table = np.full(size, IGNORE, dtype=np.uint8)
    valid = np.zeros(size, dtype=bool)
    ids = np.arange(spec.num_classes)
    table[ids + spec.id_offset] = ids
    valid[ids + spec.id_offset] = True
    valid[[i for i in spec.ignore_ids if i < size]] = True
    table.flags.writeable = valid.flags.writeable = False
    return table, valid


def default_palette(count: int, seed: int = 150) -> tuple[tuple[int, int, int], ...]:
    """Distinct-enough colours for a label set that names none."""
    rng = np.random.default_rng(seed)
    return tuple((int(r), int(g), int(b)) for r, g, b in rng.integers(0, 256, (count, 3)))


CAMVID = LabelSpec(
    name='camvid11',
    class_names=('Sky', 'Building', 'Pole', 'Road', 'Pavement', 'Tree', 'SignSymbol', 'Fence',
                 'Car', 'Pedestrian', 'Bicyclist'),
    palette=((128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222),
             (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0),
             (0, 128, 192)),
    ignore_ids=(11, IGNORE),
)

CITYSCAPES = LabelSpec(
    name='cityscapes19',
    class_names=('road', 'sidewalk', 'building', 'wall', 'fence', 'pole', 'traffic light',
                 'traffic sign', 'vegetation', 'terrain', 'sky', 'person', 'rider', 'car',
                 'truck', 'bus', 'train', 'motorcycle', 'bicycle'),
    palette=((128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
             (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
             (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70),
             (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32)),
    ignore_ids=(IGNORE,),
)


def ade20k_spec() -> LabelSpec:
    """ADE20K SceneParsing: 150 classes stored as 1..150, 0 = other (ignored)."""
    return LabelSpec(name='ade20k150', class_names=tuple(f'class{i:03d}' for i in range(1, 151)),
                     palette=default_palette(150), ignore_ids=(0,), id_offset=1)
