"""The dataset folder readers (CamVid, Cityscapes, ADE20K and the folder layout for one's own
data) on tiny fixtures written into tmp_path: correct pairing and label mapping, and a
DatasetError naming the offending path for every way a folder or a class list can be broken."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from ee_seg_ros.data.folder import (DatasetError, SegmentationFolder, ade20k_layout,
                                    camvid_layout, cityscapes_layout, folder_layout,
                                    read_classes, write_classes)
from ee_seg_ros.data.labels import CAMVID, CITYSCAPES, IGNORE, LabelSpec, ade20k_spec

OWN = LabelSpec(name='own', class_names=('floor', 'wall', 'shelf', 'person', 'pallet'),
                palette=((10, 10, 10), (20, 20, 20), (30, 30, 30), (40, 40, 40), (50, 50, 50)))

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
                'ade20k': root / 'ADEChallengeData2016' / 'images' / 'training',
                'folder': root / 'images' / 'train'}[self.name]

    def label_dir(self, root: Path) -> Path:
        return {'camvid': root / 'trainannot',
                'cityscapes': root / 'gtFine' / 'train',
                'ade20k': root / 'ADEChallengeData2016' / 'annotations' / 'training',
                'folder': root / 'labels' / 'train'}[self.name]

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
        if self.name == 'folder':  # the label set comes from root/classes.json
            return folder_layout(root, 'train')
        reader = {'camvid': camvid_layout, 'cityscapes': cityscapes_layout,
                  'ade20k': ade20k_layout}[self.name]
        return reader(root, 'training' if self.name == 'ade20k' else 'train', self.spec)

    def raw_label(self) -> np.ndarray:
        """Every legal raw value, ignore values included, tiled over the label."""
        values = {'camvid': list(range(12)) + [255], 'cityscapes': list(range(19)) + [255],
                  'ade20k': list(range(151)), 'folder': list(range(5)) + [255]}[self.name]
        return np.resize(np.array(values, np.uint8), (H, W))

    def expected(self, raw: np.ndarray) -> np.ndarray:
        if self.name == 'camvid':  # 11 (void) and 255 are ignored
            return np.where(raw >= 11, IGNORE, raw).astype(np.uint8)
        if self.name == 'ade20k':  # 0 ('other') is ignored, 1..150 are classes 0..149
            return np.where(raw == 0, IGNORE, raw.astype(int) - 1).astype(np.uint8)
        return raw.copy()  # cityscapes trainIds 0..18, folder ids 0..4; 255 ignore

    def write_pair(self, root: Path, stem: str, seed: int = 0) -> tuple[Path, Path]:
        return (write_image(self.image_path(root, stem), test_image(seed)),
                write_label(self.label_path(root, stem), self.raw_label()))


LAYOUTS = [
    Layout('camvid', CAMVID, 12, ('0001TP_006690', '0001TP_006720', 'Seq05VD_f00000')),
    Layout('cityscapes', CITYSCAPES, 19,
           ('aachen_000000_000019', 'aachen_000001_000019', 'bochum_000000_000313')),
    Layout('ade20k', ade20k_spec(), 151,
           ('ADE_train_00000001', 'ADE_train_00000002', 'ADE_train_00000003')),
    Layout('folder', OWN, 5, ('aisle_0001', 'aisle_0002', 'dock_0001')),
]


@pytest.fixture(params=LAYOUTS, ids=[layout.name for layout in LAYOUTS])
def layout(request, tmp_path) -> Layout:
    if request.param.name == 'folder':
        write_classes(tmp_path / 'classes.json', OWN)
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


# ---------------------------------------------------------------------------- folder layout


def own_dataset(root: Path, stems=('a', 'b'), split: str = 'train') -> Path:
    root.mkdir(parents=True, exist_ok=True)
    write_classes(root / 'classes.json', OWN)
    for i, stem in enumerate(stems):
        write_image(root / 'images' / split / f'{stem}.png', test_image(i))
        write_label(root / 'labels' / split / f'{stem}.png', LAYOUTS[3].raw_label())
    return root


def test_folder_layout_reads_its_class_list_and_jpeg_images(tmp_path):
    own_dataset(tmp_path)
    write_image(tmp_path / 'images' / 'train' / 'c.jpg', test_image(2))
    write_label(tmp_path / 'labels' / 'train' / 'c.png', LAYOUTS[3].raw_label())
    dataset = folder_layout(tmp_path, 'train')
    assert dataset.spec.class_names == OWN.class_names and dataset.spec.palette == OWN.palette
    assert [dataset.name(i) for i in range(3)] == ['a', 'b', 'c'] and dataset.split == 'train'
    assert np.abs(dataset[2][0].astype(int) - test_image(2).astype(int)).mean() < 10


def test_folder_layout_reads_16_bit_labels_and_its_own_ignore_index(tmp_path):
    own_dataset(tmp_path, stems=())
    (tmp_path / 'classes.json').write_text('{"names": ["a", "b", "c"], "ignore_index": 1000}')
    raw = np.resize(np.array([0, 1, 2, 1000], np.uint16), (H, W))
    write_image(tmp_path / 'images' / 'train' / 'x.png', test_image())
    write_label(tmp_path / 'labels' / 'train' / 'x.png', raw)
    dataset = folder_layout(tmp_path, 'train')
    label = dataset[0][1]
    assert label.dtype == np.uint8
    np.testing.assert_array_equal(label, np.where(raw == 1000, IGNORE, raw))
    assert len(dataset.spec.palette) == 3  # a default palette when classes.json names none
    raw[0, 0] = 300
    bad = write_label(tmp_path / 'labels' / 'train' / 'x.png', raw)
    with pytest.raises(DatasetError, match=r'values \[300\] outside') as excinfo:
        dataset[0]
    assert_names(excinfo, bad)


@pytest.mark.parametrize('text, problem', [
    ('{"names": ["a", "b"', 'does not parse as JSON'),
    ('["a", "b"]', 'must be a JSON object'),
    ('{"classes": ["a", "b"]}', "unknown keys \\['classes'\\]"),
    ('{"names": ["a"]}', 'at least two class names'),
    ('{"names": ["a", ""]}', 'at least two class names'),
    ('{"names": ["a", "b", "a"]}', "names a class twice: \\['a'\\]"),
    ('{"names": ["a", "b"], "ignore_index": 1}', "ignore_index 1 is the id of class 'b'"),
    ('{"names": ["a", "b"], "ignore_index": "void"}', 'must be an integer'),
    ('{"names": ["a", "b"], "palette": [[1, 2, 3]]}', 'one \\[R, G, B\\] triple'),
    ('{"names": ["a", "b"], "palette": [[1, 2, 3], [4, 5, 256]]}', 'one \\[R, G, B\\] triple'),
    ('{"names": [%s]}' % ', '.join(f'"c{i}"' for i in range(300)), 'at most 255'),
])
def test_a_bad_class_list_is_refused_with_its_path(tmp_path, text, problem):
    own_dataset(tmp_path)
    (tmp_path / 'classes.json').write_text(text)
    with pytest.raises(DatasetError, match=problem) as excinfo:
        folder_layout(tmp_path, 'train')
    assert_names(excinfo, tmp_path / 'classes.json')


def test_missing_class_list_is_refused_with_its_path(tmp_path):
    own_dataset(tmp_path)
    (tmp_path / 'classes.json').unlink()
    with pytest.raises(DatasetError, match='missing class list') as excinfo:
        folder_layout(tmp_path, 'train')
    assert_names(excinfo, tmp_path / 'classes.json')


def test_a_class_list_shorter_than_the_labels_is_refused_per_file(tmp_path):
    own_dataset(tmp_path)
    (tmp_path / 'classes.json').write_text('{"names": ["floor", "wall", "shelf"]}')
    dataset = folder_layout(tmp_path, 'train')
    with pytest.raises(DatasetError, match=r'values \[3, 4\] outside') as excinfo:
        dataset[0]
    assert_names(excinfo, tmp_path / 'labels' / 'train' / 'a.png')


def test_subfolders_in_a_split_are_refused_not_skipped(tmp_path):
    own_dataset(tmp_path)
    write_image(tmp_path / 'images' / 'train' / 'day2' / 'c.png', test_image())
    with pytest.raises(DatasetError, match=r"subfolders \['day2'\]") as excinfo:
        folder_layout(tmp_path, 'train')
    assert_names(excinfo, tmp_path / 'images' / 'train')


def test_missing_root_is_named(tmp_path):
    with pytest.raises(DatasetError, match='missing folder') as excinfo:
        folder_layout(tmp_path / 'nope', 'train')
    assert_names(excinfo, tmp_path / 'nope')


def test_class_list_round_trip(tmp_path):
    spec = read_classes(write_classes(tmp_path / 'classes.json', OWN))
    assert (spec.class_names, spec.palette, spec.ignore_ids) == (OWN.class_names, OWN.palette,
                                                                 OWN.ignore_ids)
    with pytest.raises(ValueError, match='offset'):
        write_classes(tmp_path / 'ade.json', ade20k_spec())


# ---------------------------------------------------------------------------- the one loader


def test_load_split_takes_each_layouts_default_split_names(tmp_path):
    from ee_seg_ros.data.datasets import load_split
    LAYOUTS[2].write_pair(tmp_path / 'ade', 'ADE_train_00000001')
    assert load_split('ade20k', tmp_path / 'ade', None, 'train').split == 'training'
    own_dataset(tmp_path / 'own', split='val')
    val = load_split('folder', tmp_path / 'own')
    assert val.split == 'val' and val.spec.class_names == OWN.class_names
    with pytest.raises(DatasetError, match='unknown dataset layout'):
        load_split('kitti', tmp_path)


def test_check_classes_refuses_data_with_other_classes(tmp_path):
    from ee_seg_ros.data.datasets import check_classes
    check_classes(OWN, OWN, 'data', tmp_path)
    with pytest.raises(DatasetError, match='has 5 classes but bundle .* predicts 11'):
        check_classes(OWN, CAMVID, 'data', tmp_path)
    renamed = LabelSpec('x', ('floor', 'wall', 'rack', 'person', 'pallet'), OWN.palette)
    with pytest.raises(DatasetError, match="names class 2 'rack' but bundle .* names it 'shelf'"):
        check_classes(renamed, OWN, 'data', tmp_path)
