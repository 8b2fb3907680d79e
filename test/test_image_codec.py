import array

import cv2
import numpy as np
import pytest

from ee_seg_ros.image_codec import (ENCODINGS, ImageDecodeError, compressed_to_rgb8,
                                    image_array, to_rgb8)


class Msg:
    def __init__(self, pixels: np.ndarray, encoding: str, pad: int = 0,
                 bigendian: bool = False):
        h, w = pixels.shape[:2]
        if bigendian:
            pixels = pixels.astype(pixels.dtype.newbyteorder('>'))
        rows = pixels.reshape(h, -1).view(np.uint8)
        rows = np.concatenate([rows, np.full((h, pad), 7, np.uint8)], axis=1)
        self.height, self.width, self.encoding = h, w, encoding
        self.is_bigendian = int(bigendian)
        self.step = rows.shape[1]
        self.data = array.array('B', rows.tobytes())


RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)
GRAY = RNG.integers(0, 256, (5, 7), dtype=np.uint8)
GRAY16 = RNG.integers(0, 65536, (5, 7), dtype=np.uint16)


@pytest.mark.parametrize('pad', [0, 3])
def test_every_encoding_decodes_to_the_same_rgb(pad):
    bgr = RGB[..., ::-1]
    cases = {
        'rgb8': (RGB, RGB), 'bgr8': (bgr, RGB), '8UC3': (bgr, RGB),
        'rgba8': (np.dstack([RGB, np.full((5, 7), 9, np.uint8)]), RGB),
        'bgra8': (np.dstack([bgr, np.full((5, 7), 9, np.uint8)]), RGB),
        'mono8': (GRAY, np.dstack([GRAY] * 3)), '8UC1': (GRAY, np.dstack([GRAY] * 3)),
    }
    assert set(cases) | {'mono16'} == set(ENCODINGS)
    for enc, (pixels, expected) in cases.items():
        msg = Msg(np.ascontiguousarray(pixels), enc, pad)
        np.testing.assert_array_equal(image_array(msg), pixels, err_msg=enc)
        np.testing.assert_array_equal(to_rgb8(msg), expected, err_msg=enc)


@pytest.mark.parametrize('bigendian', [False, True])
def test_mono16_honours_endianness_and_padding(bigendian):
    msg = Msg(GRAY16, 'mono16', pad=2, bigendian=bigendian)
    np.testing.assert_array_equal(image_array(msg), GRAY16)
    expected = (GRAY16.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    np.testing.assert_array_equal(to_rgb8(msg)[..., 1], expected)


def _msg(**over):
    msg = Msg(RGB, 'rgb8')
    for k, v in over.items():
        setattr(msg, k, v)
    return msg


@pytest.mark.parametrize('over, reason', [
    (dict(encoding='bayer_rggb8'), "unsupported image encoding 'bayer_rggb8'"),
    (dict(encoding='32FC1'), 'unsupported image encoding'),
    (dict(height=0), 'zero-size image'),
    (dict(width=0), 'zero-size image'),
    (dict(step=20), 'step 20 is smaller than'),
    (dict(data=array.array('B', bytes(50))), 'fewer than step x height'),
    (dict(width=7681, height=4321, step=7681 * 3), 'larger than the 8K limit'),
])
def test_malformed_frames_are_refused_with_the_reason(over, reason):
    with pytest.raises(ImageDecodeError, match=reason):
        to_rgb8(_msg(**over))


def test_compressed_jpeg_and_corrupt_data():
    _, png = cv2.imencode('.png', RGB[..., ::-1])
    np.testing.assert_array_equal(compressed_to_rgb8(array.array('B', png.tobytes())), RGB)
    xs, ys = np.meshgrid(np.arange(64) * 2, np.arange(48) * 3)
    smooth = np.dstack([xs, ys, np.full((48, 64), 90)]).astype(np.uint8)
    _, jpeg = cv2.imencode('.jpg', smooth[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    out = compressed_to_rgb8(array.array('B', jpeg.tobytes()))
    assert out.shape == smooth.shape
    assert np.abs(out.astype(int) - smooth.astype(int)).mean() < 3
    with pytest.raises(ImageDecodeError, match='could not be decoded'):
        compressed_to_rgb8(jpeg.tobytes()[:20] + b'garbage' * 10)
    with pytest.raises(ImageDecodeError, match='empty'):
        compressed_to_rgb8(b'')


def test_same_arrays_as_cv_bridge():
    cv_bridge = pytest.importorskip('cv_bridge', reason='cv_bridge is not installed here')
    from sensor_msgs.msg import Image
    bridge = cv_bridge.CvBridge()
    for enc, pixels in [('rgb8', RGB), ('bgr8', RGB), ('rgba8', np.dstack([RGB, GRAY])),
                        ('bgra8', np.dstack([RGB, GRAY])), ('mono8', GRAY), ('8UC1', GRAY),
                        ('8UC3', RGB), ('mono16', GRAY16)]:
        msg = bridge.cv2_to_imgmsg(np.ascontiguousarray(pixels), encoding=enc)
        assert isinstance(msg, Image)
        np.testing.assert_array_equal(image_array(msg), bridge.imgmsg_to_cv2(msg), err_msg=enc)
        np.testing.assert_array_equal(to_rgb8(msg),
                                      bridge.imgmsg_to_cv2(msg, desired_encoding='rgb8'),
                                      err_msg=enc)
