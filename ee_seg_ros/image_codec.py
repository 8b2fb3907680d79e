"""sensor_msgs/Image and CompressedImage to and from numpy, without cv_bridge.

Message-agnostic: works on rclpy messages and on rosbags messages alike, so the node and
replay decode frames with the same code. Every malformed frame raises ``ImageDecodeError``
naming the problem, for the caller to count and report as a rejected frame.

The conversions to RGB follow cv_bridge's ``cv_bridge.cpp`` (``toCvCopy(msg, "rgb8")``), so
the network sees the pixels a cv_bridge user would: the same OpenCV colour codes (including
its Bayer pattern names, which are offset from ROS's), 16 to 8 bits by ``convertTo`` with
scale 255/65535 (rounded, not floored), demosaicing before that scaling, ``8UC1`` / ``8UC3``
refused for lack of a colour meaning, data whose size is not ``step * height`` refused, and
compressed frames decoded with ``IMREAD_UNCHANGED`` (no EXIF rotation).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

MAX_PIXELS = 7680 * 4320  # 8K UHD


class ImageDecodeError(ValueError):
    """A frame that cannot be turned into pixels; the message says why."""


@dataclass(frozen=True)
class _Layout:
    channels: int
    dtype: str            # 'u1' or 'u2'
    to_rgb: int | None    # cv2 colour code to RGB; None: already RGB
    kind: str             # 'colour', 'mono', 'bayer' (demosaic before scaling), 'raw'


_U1, _U2 = 'u1', 'u2'
ENCODINGS: dict[str, _Layout] = {
    'rgb8': _Layout(3, _U1, None, 'colour'), 'bgr8': _Layout(3, _U1, cv2.COLOR_BGR2RGB, 'colour'),
    'rgba8': _Layout(4, _U1, cv2.COLOR_RGBA2RGB, 'colour'),
    'bgra8': _Layout(4, _U1, cv2.COLOR_BGRA2RGB, 'colour'),
    'rgb16': _Layout(3, _U2, None, 'colour'),
    'bgr16': _Layout(3, _U2, cv2.COLOR_BGR2RGB, 'colour'),
    'rgba16': _Layout(4, _U2, cv2.COLOR_RGBA2RGB, 'colour'),
    'bgra16': _Layout(4, _U2, cv2.COLOR_BGRA2RGB, 'colour'),
    'mono8': _Layout(1, _U1, cv2.COLOR_GRAY2RGB, 'mono'),
    'mono16': _Layout(1, _U2, cv2.COLOR_GRAY2RGB, 'mono'),
    # cv_bridge's pairs: ROS rggb is OpenCV's BayerBG, bggr BayerRG, gbrg BayerGR, grbg BayerGB
    'bayer_rggb8': _Layout(1, _U1, cv2.COLOR_BayerBG2RGB, 'bayer'),
    'bayer_bggr8': _Layout(1, _U1, cv2.COLOR_BayerRG2RGB, 'bayer'),
    'bayer_gbrg8': _Layout(1, _U1, cv2.COLOR_BayerGR2RGB, 'bayer'),
    'bayer_grbg8': _Layout(1, _U1, cv2.COLOR_BayerGB2RGB, 'bayer'),
    'bayer_rggb16': _Layout(1, _U2, cv2.COLOR_BayerBG2RGB, 'bayer'),
    'bayer_bggr16': _Layout(1, _U2, cv2.COLOR_BayerRG2RGB, 'bayer'),
    'bayer_gbrg16': _Layout(1, _U2, cv2.COLOR_BayerGR2RGB, 'bayer'),
    'bayer_grbg16': _Layout(1, _U2, cv2.COLOR_BayerGB2RGB, 'bayer'),
    # YUV 4:2:2; 'uyvy' and 'yuyv' are the newer sensor_msgs names of the same layouts
    'yuv422': _Layout(2, _U1, cv2.COLOR_YUV2RGB_UYVY, 'colour'),
    'uyvy': _Layout(2, _U1, cv2.COLOR_YUV2RGB_UYVY, 'colour'),
    'yuv422_yuy2': _Layout(2, _U1, cv2.COLOR_YUV2RGB_YUY2, 'colour'),
    'yuyv': _Layout(2, _U1, cv2.COLOR_YUV2RGB_YUY2, 'colour'),
    # OpenCV types without a colour meaning: readable as arrays (label images), not as frames
    '8UC1': _Layout(1, _U1, None, 'raw'), '8UC3': _Layout(3, _U1, None, 'raw'),
}
COLOUR = frozenset(e for e, lay in ENCODINGS.items() if lay.kind in ('colour', 'bayer'))
MONO = frozenset(e for e, lay in ENCODINGS.items() if lay.kind == 'mono')
DEPTH = frozenset({'16UC1', '32FC1'})   # what depth cameras publish


def _buffer(data) -> np.ndarray:
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError, BufferError):
        raise ImageDecodeError(f'image data is a {type(data).__name__}, not a byte buffer '
                               '(bytes, array.array or a numpy array)') from None


def image_array(msg, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """The message's pixels in their own encoding: (H, W) or (H, W, C), honouring ``step``
    (row padding) and ``is_bigendian``. Zero-copy where the layout allows."""
    enc = msg.encoding
    layout = ENCODINGS.get(enc)
    if layout is None:
        if enc in DEPTH:
            raise ImageDecodeError(f'image encoding {enc!r} is a depth image, not a camera '
                                   'image; segment the colour camera topic')
        raise ImageDecodeError(f'unsupported image encoding {enc!r}; supported: '
                               f'{", ".join(ENCODINGS)}')
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise ImageDecodeError(f'zero-size image ({w}x{h})')
    if h * w > max_pixels:
        raise ImageDecodeError(f'image {w}x{h} is larger than the 8K limit '
                               f'({max_pixels} pixels)')
    itemsize = np.dtype(layout.dtype).itemsize
    row = w * layout.channels * itemsize
    if step < row:
        raise ImageDecodeError(f'step {step} is smaller than width x channels x bytes = {row} '
                               f'for {enc} {w}x{h}')
    buf = _buffer(msg.data)
    if buf.size != step * h:   # cv_bridge's matFromImage refuses any other size as well
        raise ImageDecodeError(f'image data has {buf.size} bytes, '
                               f'{"fewer" if buf.size < step * h else "more"} than step x '
                               f'height = {step * h}')
    rows = buf.reshape(h, step)[:, :row]
    dtype = np.dtype(layout.dtype).newbyteorder('>' if msg.is_bigendian else '<')
    pixels = rows.view(dtype)  # padded rows stay a strided view, no copy
    shape = (h, w) if layout.channels == 1 else (h, w, layout.channels)
    return pixels.reshape(shape)


def _to_8bit(pixels: np.ndarray) -> np.ndarray:
    """cv_bridge's 16 to 8 bits: ``convertTo(CV_8U, 255/65535)``, which rounds."""
    return cv2.convertScaleAbs(pixels, alpha=255.0 / 65535.0)


def to_rgb8(msg, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Any supported Image as an RGB uint8 (H, W, 3) frame for the network."""
    pixels = image_array(msg, max_pixels)
    layout = ENCODINGS[msg.encoding]
    if layout.kind == 'raw':
        raise ImageDecodeError(f'image encoding {msg.encoding!r} has no colour order '
                               '(cv_bridge does not convert it to rgb8 either); publish '
                               'rgb8, bgr8 or mono8')
    if layout.kind in ('colour', 'mono') and layout.to_rgb is None and layout.dtype == _U1:
        return np.ascontiguousarray(pixels)            # rgb8: the common case, no conversion
    if layout.channels == 2 and pixels.shape[1] % 2:   # OpenCV 5 refuses, 4.x reads past
        raise ImageDecodeError(f'{msg.encoding} {pixels.shape[1]}x{pixels.shape[0]} cannot '
                               'be converted: 4:2:2 needs an even width')
    if not pixels.dtype.isnative:
        pixels = pixels.astype(pixels.dtype.newbyteorder('='))
    pixels = np.ascontiguousarray(pixels)
    if layout.dtype == _U2 and layout.kind != 'bayer':
        pixels = _to_8bit(pixels)   # channel moves commute with scaling: scale the fewer bytes
    try:
        if layout.to_rgb is not None:
            pixels = cv2.cvtColor(pixels, layout.to_rgb)
    except cv2.error as err:  # e.g. a 4:2:2 frame of odd width
        raise ImageDecodeError(f'{msg.encoding} {pixels.shape[1]}x{pixels.shape[0]} cannot '
                               f'be converted: {str(err).strip().splitlines()[-1]}') from None
    if pixels.dtype != np.uint8:
        pixels = _to_8bit(pixels)   # Bayer: demosaiced at 16 bits first, as cv_bridge does
    return pixels


_PNG = b'\x89PNG\r\n\x1a\n'
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset(range(0xD0, 0xD9)) | {0x01}


def compressed_size(buf: np.ndarray) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR or a JPEG's frame header, without decoding pixels,
    so an oversize frame is refused before it costs memory."""
    n = buf.size
    if n >= 24 and buf[:8].tobytes() == _PNG:
        if buf[12:16].tobytes() != b'IHDR':
            raise ImageDecodeError(f'compressed image ({n} bytes) could not be decoded: '
                                   'PNG without an IHDR header')
        return int.from_bytes(buf[16:20].tobytes(), 'big'), int.from_bytes(buf[20:24].tobytes(),
                                                                             'big')
    if n >= 4 and buf[0] == 0xFF and buf[1] == 0xD8:
        i = 2
        while i + 4 <= n:
            if buf[i] != 0xFF:
                break
            marker = int(buf[i + 1])
            if marker == 0xFF:                   # fill byte
                i += 1
                continue
            if marker in _JPEG_STANDALONE:
                i += 2
                continue
            if marker in (0xD9, 0xDA):           # end of image or scan before a frame header
                break
            if marker in _JPEG_SOF:
                if i + 9 > n:
                    break
                height = (int(buf[i + 5]) << 8) | int(buf[i + 6])
                width = (int(buf[i + 7]) << 8) | int(buf[i + 8])
                return width, height
            i += 2 + ((int(buf[i + 2]) << 8) | int(buf[i + 3]))
        raise ImageDecodeError(f'compressed image ({n} bytes) could not be decoded: corrupt '
                               'JPEG, no frame header')
    raise ImageDecodeError(f'compressed image ({n} bytes) could not be decoded: not JPEG or '
                           'PNG')


def compressed_to_rgb8(data, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A CompressedImage payload (JPEG or PNG) as RGB uint8, decoded as cv_bridge does
    (``IMREAD_UNCHANGED``: EXIF orientation is not applied, so masks match the pixels)."""
    buf = _buffer(data)
    if buf.size == 0:
        raise ImageDecodeError('compressed image is empty')
    w, h = compressed_size(buf)
    if w <= 0 or h <= 0:
        raise ImageDecodeError(f'zero-size image ({w}x{h}) in the compressed header')
    if w * h > max_pixels:
        raise ImageDecodeError(f'image {w}x{h} is larger than the 8K limit '
                               f'({max_pixels} pixels); refused before decoding')
    image = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageDecodeError(f'compressed image ({buf.size} bytes) could not be decoded: '
                               'corrupt or not JPEG/PNG')
    if image.shape[0] * image.shape[1] > max_pixels:  # the header lied
        raise ImageDecodeError(f'image {image.shape[1]}x{image.shape[0]} is larger than the '
                               '8K limit')
    if image.dtype == np.uint16:                     # 16-bit PNG: cv_bridge's 16 to 8 rule
        image = _to_8bit(image)
    elif image.dtype != np.uint8:
        raise ImageDecodeError(f'compressed image has {image.dtype} pixels; expected 8 or 16 '
                               'bits')
    channels = 1 if image.ndim == 2 else image.shape[2]
    code = {1: cv2.COLOR_GRAY2RGB, 3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGB}.get(channels)
    if code is None:
        raise ImageDecodeError(f'compressed image has {channels} channels; expected 1, 3 or 4')
    return cv2.cvtColor(image, code)
