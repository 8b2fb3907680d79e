"""The synthetic street scenes: reproducible from a seed, labels exact and in the CamVid range,
every class present, and readable back through the CamVid folder reader."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ee_seg_ros.data.folder import camvid_layout
from ee_seg_ros.data.labels import CAMVID
from ee_seg_ros.data.synthetic import SyntheticScenes, render_scene, write_camvid_layout

SMALL = (90, 120)
SKY, ROAD, PAVEMENT, TREE = 0, 3, 4, 5


@pytest.fixture(scope='module')
def scenes20() -> list[tuple[np.ndarray, np.ndarray]]:
    return [render_scene(seed) for seed in range(20)]


def test_same_seed_gives_identical_arrays():
    (img_a, lbl_a), (img_b, lbl_b) = render_scene(7, SMALL), render_scene(7, SMALL)
    np.testing.assert_array_equal(img_a, img_b)
    np.testing.assert_array_equal(lbl_a, lbl_b)


def test_different_seeds_give_different_scenes():
    (img_a, lbl_a), (img_b, lbl_b) = render_scene(7, SMALL), render_scene(8, SMALL)
    assert not np.array_equal(img_a, img_b)
    assert not np.array_equal(lbl_a, lbl_b)


def test_shapes_dtypes_and_label_range(scenes20):
    for image, label in scenes20:
        assert image.shape == (360, 480, 3) and image.dtype == np.uint8
        assert label.shape == (360, 480) and label.dtype == np.uint8
        assert label.max() < CAMVID.num_classes


def test_every_class_appears_over_twenty_scenes(scenes20):
    seen = set()
    for _, label in scenes20:
        seen |= set(np.unique(label).tolist())
    assert seen == set(range(CAMVID.num_classes))


def test_layout_and_colours_look_like_a_street(scenes20):
    road_bottom = []
    sky_rgb, road_rgb, tree_rgb = [], [], []
    for image, label in scenes20:
        h = label.shape[0]
        assert not (label[int(0.6 * h):] == SKY).any(), 'sky below the horizon'
        road_bottom.append(np.isin(label[int(0.9 * h):], (ROAD, PAVEMENT)).mean())
        sky_rgb.append(image[label == SKY].mean(0))
        road_rgb.append(image[label == ROAD].mean(0))
        if (label == TREE).any():
            tree_rgb.append(image[label == TREE].mean(0))
    assert np.mean(road_bottom) > 0.6
    assert np.mean(sky_rgb, 0).sum() > np.mean(road_rgb, 0).sum()  # sky brighter than asphalt
    r, g, b = np.mean(tree_rgb, 0)
    assert g > r and g > b  # foliage is green


@pytest.mark.parametrize('size', [(64, 96), (97, 131), (240, 320)])
def test_custom_size(size):
    image, label = render_scene(3, size)
    assert image.shape == (*size, 3) and label.shape == size
    assert label.max() < CAMVID.num_classes
    assert (label == ROAD).any() and (label == SKY).any()
    image, label = SyntheticScenes(2, seed=1, size=size)[1]
    assert image.shape == (*size, 3) and label.shape == size


def test_too_small_size_is_refused():
    with pytest.raises(ValueError, match='at least 8x8'):
        render_scene(0, (4, 100))


def test_sequence_protocol():
    scenes = SyntheticScenes(3, seed=2, size=SMALL)
    assert len(scenes) == 3
    assert scenes.spec is CAMVID
    image, label = scenes[1]
    ref_image, ref_label = render_scene(2 * 100003 + 1, SMALL)
    np.testing.assert_array_equal(image, ref_image)
    np.testing.assert_array_equal(label, ref_label)
    np.testing.assert_array_equal(scenes[-1][1], scenes[2][1])
    for bad in (3, -4, 100):
        with pytest.raises(IndexError):
            scenes[bad]
    assert len(list(scenes)) == 3  # iteration stops at the IndexError
    assert SyntheticScenes(20).name(12) == 'synthetic_000012'
    with pytest.raises(IndexError):
        scenes.name(3)
    images, labels = scenes.load_all()
    assert len(images) == len(labels) == 3
    np.testing.assert_array_equal(labels[1], label)
    assert len(SyntheticScenes(0)) == 0


def test_write_camvid_layout_round_trips_exactly(tmp_path):
    root = write_camvid_layout(tmp_path / 'camvid', 'train', 3, seed=1, size=SMALL)
    assert root == tmp_path / 'camvid'
    stems = ['synthetic_000000', 'synthetic_000001', 'synthetic_000002']
    assert sorted(p.stem for p in (root / 'train').iterdir()) == stems
    assert sorted(p.stem for p in (root / 'trainannot').iterdir()) == stems
    raw = cv2.imread(str(root / 'trainannot' / 'synthetic_000000.png'), cv2.IMREAD_UNCHANGED)
    assert raw.ndim == 2 and raw.dtype == np.uint8
    dataset = camvid_layout(root, 'train', CAMVID)
    scenes = SyntheticScenes(3, seed=1, size=SMALL)
    assert len(dataset) == 3
    for i in range(3):
        assert dataset.name(i) == scenes.name(i)
        (image, label), (ref_image, ref_label) = dataset[i], scenes[i]
        np.testing.assert_array_equal(image, ref_image)
        np.testing.assert_array_equal(label, ref_label)
