"""The dataset folder readers (CamVid, Cityscapes, ADE20K layouts) on tiny fixtures written
into tmp_path: correct pairing and label mapping, and a DatasetError naming the offending path
for every way a folder can be broken."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from ee_seg_ros.data.folder import (DatasetError, SegmentationFolder, ade20k_layout,
                                    camvid_layout, cityscapes_layout)
from ee_seg_ros.data.labels import CAMVID, CITYSCAPES, IGNORE, LabelSpec, ade20k_spec

H, W = 16, 16


def write_image(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                       [cv2.IMWRITE_JPEG_QUALITY, 100])
    return path


def write_label(path: Path, raw: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), raw)
    return path


def test_image(seed: int = 0, size: tuple[int, int] = (H, W)) -> np.ndarray:
    """Four flat colour blocks with red far from blue, so a JPEG round trip stays close to the
    original while a red/blue swap does not."""
    colours = np.array([(200, 40, 10), (10, 120, 220), (60, 200, 90), (240, 230, 30)], np.uint8)
    blocks = np.roll(colours, seed, axis=0).reshape(2, 2, 3)
    return cv2.resize(blocks, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)


test_image.__test__ = False  # a helper, not a test


@dataclass(frozen=True)
class Layout:
    """Where one dataset layout keeps an image and its label, and how it maps raw values."""

    name: str
    spec: LabelSpec
    bad_value: int      # first raw value outside the label set
    stems: tuple[str, ...]

    def image_dir(self, root: Path) -> Path:
        return {'camvid': root / 'train',
                'cityscapes': root / 'leftImg8bit' / 'train',
                'ade20k': root / 'ADEChallengeData2016' / 'images' / 'training'}[self.name]

    def label_dir(self, root: Path) -> Path:
        return {'camvid': root / 'trainannot',
                'cityscapes': root / 'gtFine' / 'train',
                'ade20k': root / 'ADEChallengeData2016' / 'annotations' / 'training'}[self.name]

    def image_path(self, root: Path, stem: str) -> Path:
        if self.name == 'cityscapes':
            return self.image_dir(root) / stem.split('_')[0] / f'{stem}_leftImg8bit.png'
        suffix = '.jpg' if self.name == 'ade20k' else '.png'
        return self.image_dir(root) / f'{stem}{suffix}'

    def label_path(self, root: Path, stem: str) -> Path:
        if self.name == 'cityscapes':
            return (self.label_dir(root) / stem.split('_')[0]
                    / f'{stem}_gtFine_labelTrainIds.png')
        return self.label_dir(root) / f'{stem}.png'

    def read(self, root: Path) -> SegmentationFolder:
        reader = {'camvid': camvid_layout, 'cityscapes': cityscapes_layout,
                  'ade20k': ade20k_layout}[self.name]
        return reader(root, 'training' if self.name == 'ade20k' else 'train', self.spec)

    def raw_label(self) -> np.ndarray:
        """Every legal raw value, ignore values included, tiled over the label."""
        values = {'camvid': list(range(12)) + [255], 'cityscapes': list(range(19)) + [255],
                  'ade20k': list(range(151))}[self.name]
        return np.resize(np.array(values, np.uint8), (H, W))

    def expected(self, raw: np.ndarray) -> np.ndarray:
        if self.name == 'camvid':  # 11 (void) and 255 are ignored
            return np.where(raw >= 11, IGNORE, raw).astype(np.uint8)
        if self.name == 'ade20k':  # 0 ('other') is ignored, 1..150 are classes 0..149
            return np.where(raw == 0, IGNORE, raw.astype(int) - 1).astype(np.uint8)
        return raw.copy()  # cityscapes trainIds: 0..18, 255 ignore

    def write_pair(self, root: Path, stem: str, seed: int = 0) -> tuple[Path, Path]:
        return (write_image(self.image_path(root, stem), test_image(seed)),
                write_label(self.label_path(root, stem), self.raw_label()))


LAYOUTS = [
    Layout('camvid', CAMVID, 12, ('0001TP_006690', '0001TP_006720', 'Seq05VD_f00000')),
    Layout('cityscapes', CITYSCAPES, 19,
           ('aachen_000000_000019', 'aachen_000001_000019', 'bochum_000000_000313')),
    Layout('ade20k', ade20k_spec(), 151,
           ('ADE_train_00000001', 'ADE_train_00000002', 'ADE_train_00000003')),
]


@pytest.fixture(params=LAYOUTS, ids=[layout.name for layout in LAYOUTS])
def layout(request) -> Layout:
    return request.param


def assert_names(excinfo: pytest.ExceptionInfo, *paths: Path) -> None:
    for path in paths:
        assert str(path) in str(excinfo.value), f'{path} not named in: {excinfo.value}'


# ---------------------------------------------------------------------------- reading


def test_reads_pairs_sorted_with_mapped_labels(tmp_path, layout):
    for seed, stem in enumerate(reversed(layout.stems)):
        layout.write_pair(tmp_path, stem, seed=len(layout.stems) - 1 - seed)
    dataset = layout.read(tmp_path)
    assert len(dataset) == 3
    assert [dataset.name(i).removesuffix('_leftImg8bit') for i in range(3)] == list(layout.stems)
    for i in range(3):
        image, label = dataset[i]
        assert image.shape == (H, W, 3) and image.dtype == np.uint8
        assert label.shape == (H, W) and label.dtype == np.uint8
        np.testing.assert_array_equal(label, layout.expected(layout.raw_label()))
        diff = np.abs(image.astype(int) - test_image(i).astype(int))
        if layout.name == 'ade20k':  # JPEG
            assert diff.mean() < 10
            swapped = np.abs(image[..., ::-1].astype(int) - test_image(i).astype(int))
            assert swapped.mean() > 40
        else:
            assert diff.max() == 0  # RGB, not BGR
    images, labels = dataset.load_all()
    assert len(images) == len(labels) == 3


def test_camvid_void_and_255_become_ignore(tmp_path):
    layout = LAYOUTS[0]
    raw = np.full((H, W), 3, np.uint8)
    raw[0, :4] = 11
    raw[1, :4] = 255
    write_image(layout.image_path(tmp_path, 'a'), test_image())
    write_label(layout.label_path(tmp_path, 'a'), raw)
    label = layout.read(tmp_path)[0][1]
    assert (label[:2, :4] == IGNORE).all()
    assert (label[2:] == 3).all() and (label[:2, 4:] == 3).all()


def test_cityscapes_other_gtfine_files_are_ignored(tmp_path):
    layout = LAYOUTS[1]
    img, lbl = layout.write_pair(tmp_path, 'aachen_000000_000019')
    for kind in ('labelIds', 'color', 'instanceIds'):
        write_label(lbl.parent / f'aachen_000000_000019_gtFine_{kind}.png', layout.raw_label())
    dataset = layout.read(tmp_path)
    assert dataset.pairs == [(img, lbl)]


def test_ade20k_root_may_be_the_challenge_folder_itself(tmp_path):
    layout = LAYOUTS[2]
    layout.write_pair(tmp_path, 'ADE_train_00000001')
    inner = ade20k_layout(tmp_path / 'ADEChallengeData2016', 'training', layout.spec)
    outer = layout.read(tmp_path)
    assert inner.pairs == outer.pairs and len(outer) == 1
    label = outer[0][1]
    raw = layout.raw_label()
    assert (label[raw == 0] == IGNORE).all()
    assert (label[raw == 1] == 0).all() and (label[raw == 150] == 149).all()


# ---------------------------------------------------------------------------- refusals


def test_missing_image_folder(tmp_path, layout):
    write_label(layout.label_path(tmp_path, layout.stems[0]), layout.raw_label())
    with pytest.raises(DatasetError, match='missing folder') as excinfo:
        layout.read(tmp_path)
    assert_names(excinfo, layout.image_dir(tmp_path))


def test_missing_label_folder(tmp_path, layout):
    write_image(layout.image_path(tmp_path, layout.stems[0]), test_image())
    with pytest.raises(DatasetError, match='missing folder') as excinfo:
        layout.read(tmp_path)
    assert_names(excinfo, layout.label_dir(tmp_path))


def test_image_without_label(tmp_path, layout):
    layout.write_pair(tmp_path, layout.stems[0])
    lonely = write_image(layout.image_path(tmp_path, layout.stems[1]), test_image())
    with pytest.raises(DatasetError, match='images without a label') as excinfo:
        layout.read(tmp_path)
    assert_names(excinfo, lonely)


def test_label_without_image(tmp_path, layout):
    layout.write_pair(tmp_path, layout.stems[0])
    lonely = write_label(layout.label_path(tmp_path, layout.stems[1]), layout.raw_label())
    with pytest.raises(DatasetError, match='labels without an image') as excinfo:
        layout.read(tmp_path)
    assert_names(excinfo, lonely)


def test_label_value_outside_the_classes(tmp_path, layout):
    layout.write_pair(tmp_path, layout.stems[0])
    raw = layout.raw_label()
    raw[3, 5] = layout.bad_value
    bad = write_label(layout.label_path(tmp_path, layout.stems[1]), raw)
    write_image(layout.image_path(tmp_path, layout.stems[1]), test_image())
    dataset = layout.read(tmp_path)
    dataset[0]  # the good pair still reads
    with pytest.raises(DatasetError, match=rf'values \[{layout.bad_value}\]') as excinfo:
        dataset[1]
    assert_names(excinfo, bad)


def test_unreadable_image(tmp_path, layout):
    img, _ = layout.write_pair(tmp_path, layout.stems[0])
    img.write_bytes(b'this is not an image')
    with pytest.raises(DatasetError, match='cannot read image') as excinfo:
        layout.read(tmp_path)[0]
    assert_names(excinfo, img)


def test_unreadable_label(tmp_path, layout):
    _, lbl = layout.write_pair(tmp_path, layout.stems[0])
    lbl.write_bytes(b'\x89PNG\r\n\x1a\n truncated')
    with pytest.raises(DatasetError, match='cannot read label') as excinfo:
        layout.read(tmp_path)[0]
    assert_names(excinfo, lbl)


def test_label_size_differs_from_image(tmp_path, layout):
    img = write_image(layout.image_path(tmp_path, layout.stems[0]), test_image(size=(H, W + 4)))
    lbl = write_label(layout.label_path(tmp_path, layout.stems[0]), layout.raw_label())
    with pytest.raises(DatasetError, match=f'is {W}x{H} but') as excinfo:
        layout.read(tmp_path)[0]
    assert_names(excinfo, img, lbl)


def test_colour_label_is_refused(tmp_path, layout):
    _, lbl = layout.write_pair(tmp_path, layout.stems[0])
    write_label(lbl, np.zeros((H, W, 3), np.uint8))
    with pytest.raises(DatasetError, match='single-channel') as excinfo:
        layout.read(tmp_path)[0]
    assert_names(excinfo, lbl)


def test_empty_folders(tmp_path, layout):
    layout.image_dir(tmp_path).mkdir(parents=True)
    layout.label_dir(tmp_path).mkdir(parents=True)
    with pytest.raises(DatasetError, match='no images in') as excinfo:
        layout.read(tmp_path)
    assert_names(excinfo, layout.image_dir(tmp_path), layout.label_dir(tmp_path))


def test_two_files_for_one_frame_are_refused(tmp_path):
    import cv2
    import pytest

    from ee_seg_ros.data.folder import DatasetError, camvid_layout
    from ee_seg_ros.data.labels import CAMVID
    for d in ('train', 'trainannot'):
        (tmp_path / d).mkdir()
    img = np.zeros((8, 8, 3), np.uint8)
    cv2.imwrite(str(tmp_path / 'train' / 'a.png'), img)
    cv2.imwrite(str(tmp_path / 'train' / 'a.jpg'), img)
    cv2.imwrite(str(tmp_path / 'trainannot' / 'a.png'), img[..., 0])
    with pytest.raises(DatasetError, match='two files for one frame.*a.jpg.*a.png'):
        camvid_layout(tmp_path, 'train', CAMVID)
