"""The frame decoder: every encoding, cv_bridge's conversion rules, malformed frames refused
with their reason, compressed frames decoded without EXIF rotation and size-checked from the
header before decoding."""

import array
import struct
import zlib

import cv2
import numpy as np
import pytest

import ee_seg_ros.image_codec as codec
from ee_seg_ros.image_codec import (ENCODINGS, ImageDecodeError, compressed_size,
                                    compressed_to_rgb8, image_array, to_rgb8)


class Msg:
    def __init__(self, pixels: np.ndarray, encoding: str, pad: int = 0,
                 bigendian: bool = False):
        h, w = pixels.shape[:2]
        if bigendian:
            pixels = pixels.astype(pixels.dtype.newbyteorder('>'))
        rows = np.ascontiguousarray(pixels).reshape(h, -1).view(np.uint8)
        rows = np.concatenate([rows, np.full((h, pad), 7, np.uint8)], axis=1)
        self.height, self.width, self.encoding = h, w, encoding
        self.is_bigendian = int(bigendian)
        self.step = rows.shape[1]
        self.data = array.array('B', rows.tobytes())


RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (5, 8, 3), dtype=np.uint8)
GRAY = RNG.integers(0, 256, (5, 8), dtype=np.uint8)
RGB16 = RNG.integers(0, 65536, (5, 8, 3), dtype=np.uint16)
GRAY16 = RNG.integers(0, 65536, (5, 8), dtype=np.uint16)
ALPHA = np.full((5, 8, 1), 9, np.uint8)


def rounded(x: np.ndarray) -> np.ndarray:
    """cv_bridge's 16 to 8 bits, written independently: round(x * 255 / 65535)."""
    return ((x.astype(np.uint32) * 255 * 2 + 65535) // (2 * 65535)).astype(np.uint8)


@pytest.mark.parametrize('pad', [0, 3])
def test_8_bit_encodings_decode_to_the_same_rgb(pad):
    bgr = RGB[..., ::-1]
    cases = {
        'rgb8': (RGB, RGB), 'bgr8': (bgr, RGB),
        'rgba8': (np.dstack([RGB, ALPHA]), RGB), 'bgra8': (np.dstack([bgr, ALPHA]), RGB),
        'mono8': (GRAY, np.dstack([GRAY] * 3)),
    }
    for enc, (pixels, expected) in cases.items():
        msg = Msg(np.ascontiguousarray(pixels), enc, pad)
        np.testing.assert_array_equal(image_array(msg), pixels, err_msg=enc)
        np.testing.assert_array_equal(to_rgb8(msg), expected, err_msg=enc)


@pytest.mark.parametrize('bigendian', [False, True])
@pytest.mark.parametrize('pad', [0, 2])
def test_16_bit_encodings_round_to_8_bits_as_cv_bridge(bigendian, pad):
    bgr = RGB16[..., ::-1]
    a16 = np.full((5, 8, 1), 4000, np.uint16)
    cases = {
        'rgb16': (RGB16, RGB16), 'bgr16': (bgr, RGB16),
        'rgba16': (np.dstack([RGB16, a16]), RGB16), 'bgra16': (np.dstack([bgr, a16]), RGB16),
        'mono16': (GRAY16, np.dstack([GRAY16] * 3)),
    }
    for enc, (pixels, expected) in cases.items():
        msg = Msg(np.ascontiguousarray(pixels), enc, pad, bigendian)
        np.testing.assert_array_equal(image_array(msg), pixels, err_msg=enc)
        np.testing.assert_array_equal(to_rgb8(msg), rounded(expected), err_msg=enc)


def test_mono16_rounds_every_value_where_flooring_would_differ():
    x = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    out = to_rgb8(Msg(x, 'mono16'))[..., 0]
    np.testing.assert_array_equal(out, rounded(x))
    floored = (x.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    assert (out != floored).sum() > 30000            # the old rule floored: half the values
    assert out[0, 129] == 1 and out[0, 128] == 0     # 129 * 255 / 65535 = 0.502


def mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """A Bayer frame from RGB, pattern given as ROS names it (top-left 2x2, row by row)."""
    idx = {'r': 0, 'g': 1, 'b': 2}
    out = np.empty(rgb.shape[:2], rgb.dtype)
    for k, colour in enumerate(pattern):
        dy, dx = divmod(k, 2)
        out[dy::2, dx::2] = rgb[dy::2, dx::2, idx[colour]]
    return out


@pytest.mark.parametrize('pattern', ['rggb', 'bggr', 'gbrg', 'grbg'])
def test_bayer_patterns_demosaic_to_the_right_colours(pattern):
    colour = np.array([200, 100, 30], np.uint8)
    flat = np.broadcast_to(colour, (6, 8, 3))
    out = to_rgb8(Msg(mosaic(flat, pattern), f'bayer_{pattern}8'))
    np.testing.assert_array_equal(out[1:-1, 1:-1], flat[1:-1, 1:-1])
    # 16 bits: demosaiced first, then rounded to 8 bits
    flat16 = np.broadcast_to(colour.astype(np.uint16) * 257 + 100, (6, 8, 3))
    for be in (False, True):
        out16 = to_rgb8(Msg(mosaic(flat16, pattern), f'bayer_{pattern}16', bigendian=be))
        np.testing.assert_array_equal(out16[1:-1, 1:-1], rounded(flat16)[1:-1, 1:-1])
    # a smooth scene: every pattern gives nearly the scene back (wrong pairs swap R and B)
    ys, xs = np.mgrid[0:16, 0:20]
    scene = np.dstack([xs * 12, ys * 15, 255 - xs * 12]).astype(np.uint8)
    out = to_rgb8(Msg(mosaic(scene, pattern), f'bayer_{pattern}8')).astype(int)
    assert np.abs(out[2:-2, 2:-2] - scene[2:-2, 2:-2]).max() <= 8


def yuv422(y: np.ndarray, u: np.ndarray, v: np.ndarray, order: str) -> np.ndarray:
    """Packed 4:2:2 (H, W, 2) from full-width Y and half-width U, V planes."""
    h, w = y.shape
    out = np.empty((h, w, 2), np.uint8)
    chroma = np.empty((h, w), np.uint8)
    chroma[:, 0::2], chroma[:, 1::2] = u, v
    if order == 'uyvy':
        out[..., 0], out[..., 1] = chroma, y
    else:
        out[..., 0], out[..., 1] = y, chroma
    return out


def test_yuv422_layouts_decode_alike_and_odd_widths_are_refused():
    y = RNG.integers(60, 140, (4, 8), dtype=np.uint8)
    u = np.full((4, 4), 200, np.uint8)           # strong blue difference
    v = np.full((4, 4), 128, np.uint8)
    frames = {enc: to_rgb8(Msg(yuv422(y, u, v, order), enc))
              for enc, order in [('yuv422', 'uyvy'), ('uyvy', 'uyvy'),
                                 ('yuv422_yuy2', 'yuyv'), ('yuyv', 'yuyv')]}
    for enc, out in frames.items():
        assert out.shape == (4, 8, 3), enc
        np.testing.assert_array_equal(out, frames['yuv422'], err_msg=enc)
    rgb = frames['yuv422'].astype(int)
    assert (rgb[..., 2] > rgb[..., 0] + 40).all()     # U high: blue well above red
    grey = to_rgb8(Msg(yuv422(y, np.full((4, 4), 128, np.uint8), v, 'uyvy'), 'uyvy'))
    assert (np.abs(grey[..., 0].astype(int) - grey[..., 2]) <= 1).all()
    with pytest.raises(ImageDecodeError, match='yuv422 7x4 cannot be converted: 4:2:2 needs an even width'):
        to_rgb8(Msg(RNG.integers(0, 256, (4, 7, 2), dtype=np.uint8), 'yuv422'))


def test_every_listed_encoding_is_tested_or_refused_on_purpose():
    tested = {'rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8', 'rgb16', 'bgr16', 'rgba16', 'bgra16',
              'mono16', 'yuv422', 'uyvy', 'yuv422_yuy2', 'yuyv', '8UC1', '8UC3'}
    tested |= {f'bayer_{p}{b}' for p in ('rggb', 'bggr', 'gbrg', 'grbg') for b in (8, 16)}
    assert tested == set(ENCODINGS)


@pytest.mark.parametrize('enc, pixels', [('8UC1', GRAY), ('8UC3', RGB)])
def test_opencv_types_read_as_arrays_but_not_as_frames(enc, pixels):
    msg = Msg(pixels, enc)
    np.testing.assert_array_equal(image_array(msg), pixels)   # label images use this
    with pytest.raises(ImageDecodeError, match='has no colour order'):
        to_rgb8(msg)


def _msg(**over):
    msg = Msg(RGB, 'rgb8')
    for k, v in over.items():
        setattr(msg, k, v)
    return msg


@pytest.mark.parametrize('over, reason', [
    (dict(encoding='nv21'), "unsupported image encoding 'nv21'"),
    (dict(encoding='32FC1'), "'32FC1' is a depth image"),
    (dict(encoding='16UC1'), "'16UC1' is a depth image"),
    (dict(height=0), 'zero-size image'),
    (dict(width=0), 'zero-size image'),
    (dict(step=20), 'step 20 is smaller than'),
    (dict(data=array.array('B', bytes(50))), 'fewer than step x height'),
    (dict(data=array.array('B', bytes(5 * 24 + 1))), 'more than step x height'),
    (dict(width=7681, height=4321, step=7681 * 3), 'larger than the 8K limit'),
    (dict(data=list(RGB.tobytes())), 'image data is a list, not a byte buffer'),
    (dict(data=RGB.tobytes().decode('latin-1')), 'image data is a str'),
    (dict(data=None), 'image data is a NoneType'),
])
def test_malformed_frames_are_refused_with_the_reason(over, reason):
    with pytest.raises(ImageDecodeError, match=reason):
        to_rgb8(_msg(**over))


def test_the_common_path_is_not_copied():
    msg = Msg(RGB, 'rgb8')
    out = to_rgb8(msg)
    assert np.shares_memory(out, np.frombuffer(msg.data, np.uint8))


# -- compressed ------------------------------------------------------------------------------

def smooth(h=48, w=64):
    xs, ys = np.meshgrid(np.arange(w) * 2, np.arange(h) * 3)
    return np.dstack([xs, ys, np.full((h, w), 90)]).astype(np.uint8)


def jpeg(rgb, **flags) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, 95]
    for k, v in flags.items():
        params += [getattr(cv2, k), v]
    return cv2.imencode('.jpg', np.ascontiguousarray(rgb[..., ::-1]), params)[1].tobytes()


def with_exif_orientation(data: bytes, orientation: int) -> bytes:
    """The JPEG with an APP1 Exif segment holding one Orientation tag."""
    tiff = (b'II*\x00' + struct.pack('<I', 8) + struct.pack('<H', 1)
            + struct.pack('<HHII', 0x0112, 3, 1, orientation) + struct.pack('<I', 0))
    payload = b'Exif\x00\x00' + tiff
    return data[:2] + b'\xff\xe1' + struct.pack('>H', len(payload) + 2) + payload + data[2:]


def test_compressed_png_jpeg_and_corrupt_data():
    _, png = cv2.imencode('.png', RGB[..., ::-1])
    np.testing.assert_array_equal(compressed_to_rgb8(array.array('B', png.tobytes())), RGB)
    out = compressed_to_rgb8(array.array('B', jpeg(smooth())))
    assert out.shape == smooth().shape
    assert np.abs(out.astype(int) - smooth().astype(int)).mean() < 3
    with pytest.raises(ImageDecodeError, match='could not be decoded'):
        compressed_to_rgb8(jpeg(smooth())[:20] + b'garbage' * 10)
    with pytest.raises(ImageDecodeError, match='could not be decoded: not JPEG or PNG'):
        compressed_to_rgb8(b'garbage' * 10)
    with pytest.raises(ImageDecodeError, match='empty'):
        compressed_to_rgb8(b'')
    with pytest.raises(ImageDecodeError, match='image data is a str'):
        compressed_to_rgb8('abc')
    with pytest.raises(ImageDecodeError, match='image data is a list'):
        compressed_to_rgb8(list(png.tobytes()))


def test_gray_rgba_and_16_bit_pngs():
    _, png = cv2.imencode('.png', GRAY)
    np.testing.assert_array_equal(compressed_to_rgb8(png.tobytes()), np.dstack([GRAY] * 3))
    _, png = cv2.imencode('.png', np.dstack([RGB[..., ::-1], ALPHA]))
    np.testing.assert_array_equal(compressed_to_rgb8(png.tobytes()), RGB)
    _, png = cv2.imencode('.png', np.ascontiguousarray(RGB16[..., ::-1]))
    np.testing.assert_array_equal(compressed_to_rgb8(png.tobytes()), rounded(RGB16))


@pytest.mark.parametrize('orientation', [3, 6, 8])
def test_exif_orientation_is_not_applied(orientation):
    scene = smooth(40, 64)
    data = with_exif_orientation(jpeg(scene), orientation)
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape[:2] != \
        scene.shape[:2] or orientation == 3          # OpenCV's default would rotate it
    out = compressed_to_rgb8(data)
    assert out.shape == scene.shape
    assert np.abs(out.astype(int) - scene.astype(int)).mean() < 3


@pytest.mark.parametrize('size', [(1, 1), (37, 23), (480, 360), (4000, 3)])
def test_header_size_matches_the_decoded_size(size):
    w, h = size
    img = RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)
    for data in (jpeg(img), jpeg(img, IMWRITE_JPEG_PROGRESSIVE=1),
                 with_exif_orientation(jpeg(img), 6), cv2.imencode('.png', img)[1].tobytes()):
        assert compressed_size(np.frombuffer(data, np.uint8)) == (w, h)


def big_png(w: int, h: int) -> bytes:
    """A valid, tiny, all-black 8-bit grey PNG of w x h pixels, compressed row by row."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack('>I', len(body)) + kind + body
                + struct.pack('>I', zlib.crc32(kind + body) & 0xffffffff))
    z = zlib.compressobj(9)
    row = bytes(w + 1)
    idat = b''.join(z.compress(row) for _ in range(h)) + z.flush()
    ihdr = struct.pack('>IIBBBBB', w, h, 8, 0, 0, 0, 0)
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IDAT', idat)
            + chunk(b'IEND', b''))


def test_oversize_compressed_frames_are_refused_before_decoding(monkeypatch):
    data = big_png(10000, 10000)                       # the case: 97 KB
    assert len(data) < 200_000
    decoded = []
    real = cv2.imdecode
    monkeypatch.setattr(codec.cv2, 'imdecode', lambda *a: decoded.append(1) or real(*a))
    with pytest.raises(ImageDecodeError, match='10000x10000 is larger than the 8K limit.*'
                                               'refused before decoding'):
        compressed_to_rgb8(data)
    img = smooth()
    for small in (jpeg(img), cv2.imencode('.png', img)[1].tobytes()):
        with pytest.raises(ImageDecodeError, match='64x48 is larger'):
            compressed_to_rgb8(small, max_pixels=64 * 48 - 1)
    assert decoded == []
    assert compressed_to_rgb8(big_png(64, 48)).shape == (48, 64, 3) and decoded == [1]


# -- cv_bridge --------------------------------------------------------------------------------

def _cv_bridge():
    try:
        import cv_bridge
        from sensor_msgs.msg import Image  # noqa: F401
    except ImportError:
        return None
    return cv_bridge


@pytest.mark.skipif(_cv_bridge() is None, reason='cv_bridge is not installed here')
def test_same_arrays_as_cv_bridge():
    cv_bridge = _cv_bridge()
    bridge = cv_bridge.CvBridge()
    y = RNG.integers(0, 256, (5, 8, 2), dtype=np.uint8)
    cases = [('rgb8', RGB), ('bgr8', RGB), ('rgba8', np.dstack([RGB, GRAY])),
             ('bgra8', np.dstack([RGB, GRAY])), ('mono8', GRAY), ('mono16', GRAY16),
             ('rgb16', RGB16), ('bgr16', RGB16), ('rgba16', np.dstack([RGB16, GRAY16])),
             ('bgra16', np.dstack([RGB16, GRAY16])), ('yuv422', y), ('yuv422_yuy2', y)]
    cases += [(f'bayer_{p}8', GRAY) for p in ('rggb', 'bggr', 'gbrg', 'grbg')]
    cases += [(f'bayer_{p}16', GRAY16) for p in ('rggb', 'bggr', 'gbrg', 'grbg')]
    compared = []
    for enc, pixels in cases:
        try:
            bridge.encoding_to_cvtype2(enc)
        except cv_bridge.CvBridgeError:   # older cv_bridge (ROS 1, Humble) lacks yuv422_yuy2
            assert enc == 'yuv422_yuy2', enc
            continue
        compared.append(enc)
        for big in ((False, True) if pixels.dtype == np.uint16 else (False,)):
            p = pixels.astype(pixels.dtype.newbyteorder('>')) if big else pixels
            msg = bridge.cv2_to_imgmsg(np.ascontiguousarray(p), encoding=enc)
            np.testing.assert_array_equal(image_array(msg), bridge.imgmsg_to_cv2(msg),
                                          err_msg=enc)
            np.testing.assert_array_equal(to_rgb8(msg),
                                          bridge.imgmsg_to_cv2(msg, desired_encoding='rgb8'),
                                          err_msg=f'{enc} big-endian={big}')
    assert len(compared) >= len(cases) - 1
    for enc, pixels in [('8UC1', GRAY), ('8UC3', RGB)]:  # no colour meaning: both refuse
        msg = bridge.cv2_to_imgmsg(pixels, encoding=enc)
        np.testing.assert_array_equal(image_array(msg), bridge.imgmsg_to_cv2(msg))
        with pytest.raises(cv_bridge.CvBridgeError):
            bridge.imgmsg_to_cv2(msg, desired_encoding='rgb8')
        with pytest.raises(ImageDecodeError):
            to_rgb8(msg)
    for data in (with_exif_orientation(jpeg(smooth()), 6), cv2.imencode('.png', RGB)[1]):
        msg = bridge.cv2_to_compressed_imgmsg(RGB)
        msg.data = array.array('B', bytes(data))
        np.testing.assert_array_equal(compressed_to_rgb8(msg.data),
                                      bridge.compressed_imgmsg_to_cv2(msg, 'rgb8'))
