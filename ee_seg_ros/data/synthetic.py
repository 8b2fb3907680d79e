"""Synthetic street scenes with exact ground truth in the CamVid 11-class label set.

Real road-scene datasets are large, licensed and slow to read, yet the demo and the fast tests
need images that look enough like a street for a segmentation network to learn something, and
whose labels are right by construction. Each scene here is a small 3-D street seen through a
pinhole camera: sky, facades with windows, a road in perspective with lane markings, pavements,
trees, poles, signs, fences, cars, pedestrians and bicyclists. Every shape is drawn with OpenCV
into the image and the label in the same call, so each pixel's class is exact; textures, clouds,
shadows and lighting are then applied to the image alone. A scene depends only on its seed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import ArrayLike

from .labels import CAMVID, LabelSpec

_ID = {name: i for i, name in enumerate(CAMVID.class_names)}
SKY, BUILDING, POLE, ROAD = _ID['Sky'], _ID['Building'], _ID['Pole'], _ID['Road']
PAVEMENT, TREE, SIGN, FENCE = _ID['Pavement'], _ID['Tree'], _ID['SignSymbol'], _ID['Fence']
CAR, PEDESTRIAN, BICYCLIST = _ID['Car'], _ID['Pedestrian'], _ID['Bicyclist']

SEED_STRIDE = 100003  # scene i of a SyntheticScenes(seed=s) is render_scene(s * SEED_STRIDE + i)

_Z_MIN = 0.5      # nearest depth drawn (m); nearer geometry is off-screen anyway
_Z_FAR = 4000.0   # the ground runs this far, so it meets the sky at the horizon

Colour = tuple[int, int, int]

# Per-class texture amplitudes (grey levels) for fine grain, mid-size and coarse blotches and
# stripes: the same shape of noise on every class would let a network ignore texture.
_TEX = np.zeros((4, 256), np.float32)
_TEX[:, :11] = np.array([
    # Sky Bld Pole Road Pave Tree Sign Fence Car Ped Bic
    [1.5, 3, 3, 7, 5, 9, 2, 4, 3, 4, 4],       # fine grain
    [1, 5, 3, 4, 6, 22, 2, 6, 2, 5, 5],        # mid (leaves, worn paint)
    [3, 10, 4, 7, 10, 12, 2, 6, 3, 3, 3],      # coarse (stains, patches)
    [0, 7, 0, 0, 3, 0, 0, 6, 0, 0, 0],         # stripes (siding, planks)
], np.float32)

_SKIES = (  # (top, horizon) colours: clear, hazy, overcast, dusk
    ((70, 120, 200), (170, 195, 225)), ((135, 160, 200), (205, 210, 220)),
    ((145, 150, 160), (200, 200, 205)), ((85, 95, 150), (230, 175, 130)))
_FACADES = ((190, 170, 140), (150, 80, 60), (120, 120, 125), (210, 200, 185), (170, 150, 120),
            (100, 90, 85), (200, 190, 170), (160, 110, 80), (140, 150, 155))
_GLASS = ((35, 45, 55), (75, 95, 115), (150, 140, 105))
_PAVEMENTS = ((160, 158, 150), (175, 165, 150), (165, 120, 105), (140, 140, 138),
              (185, 180, 170))
_GREENS = ((60, 100, 40), (45, 85, 35), (80, 115, 50), (55, 95, 60), (95, 120, 45))
_CAR_COLOURS = ((225, 225, 225), (30, 30, 32), (170, 172, 175), (110, 110, 115), (160, 25, 25),
                (30, 50, 130), (30, 70, 50), (190, 175, 140), (220, 180, 30), (120, 30, 40))
_POLE_COLOURS = ((110, 110, 115), (60, 65, 60), (150, 150, 150), (40, 40, 45), (110, 85, 60))
_FENCE_COLOURS = ((140, 105, 70), (220, 220, 215), (100, 105, 110), (60, 90, 60), (50, 50, 50))
_CLOTHES = ((30, 30, 35), (200, 40, 40), (40, 60, 140), (230, 230, 225), (90, 90, 90),
            (200, 160, 40), (40, 110, 60), (120, 70, 40), (160, 90, 150), (60, 90, 120))
_TROUSERS = ((35, 45, 80), (30, 30, 30), (80, 80, 85), (110, 90, 60), (60, 70, 110))
_SKIN = ((240, 200, 170), (205, 155, 115), (150, 100, 70), (95, 65, 45))


def _jit(rng: np.random.Generator, base: Sequence[float], spread: float) -> Colour:
    c = np.clip(np.asarray(base, np.float64) + rng.normal(0.0, spread, 3), 0, 255)
    return int(c[0]), int(c[1]), int(c[2])


def _pick(rng: np.random.Generator, options: Sequence[Colour], spread: float = 10.0) -> Colour:
    return _jit(rng, options[int(rng.integers(len(options)))], spread)


def _mul(colour: Colour, k: float) -> Colour:
    return tuple(int(min(255, max(0, v * k))) for v in colour)  # type: ignore[return-value]


def _quads(*vals: ArrayLike) -> np.ndarray:
    """Four corners' (x, y, z), as 12 scalars or broadcastable arrays, stacked to (N, 4, 3)."""
    if all(isinstance(v, (float, int)) for v in vals):
        return np.array(vals, np.float64).reshape(1, 4, 3)
    arrays = [np.asarray(v, np.float64) for v in vals]
    sizes = [a.size for a in arrays if a.ndim]  # the arrays share one length
    out = np.empty((sizes[0] if sizes else 1, 12))
    for k, a in enumerate(arrays):
        out[:, k] = a
    return out.reshape(-1, 4, 3)


def _ground_quads(x0: ArrayLike, x1: ArrayLike, z0: ArrayLike, z1: ArrayLike,
                  y: ArrayLike = 0.0) -> np.ndarray:
    """Horizontal rectangles (N, 4, 3) at height y: road, markings, car roofs."""
    return _quads(x0, y, z0, x1, y, z0, x1, y, z1, x0, y, z1)


def _side_quads(x: ArrayLike, y0: ArrayLike, y1: ArrayLike, z0: ArrayLike,
                z1: ArrayLike) -> np.ndarray:
    """Rectangles (N, 4, 3) in the plane X = x, parallel to the street: facades, car sides."""
    return _quads(x, y0, z0, x, y1, z0, x, y1, z1, x, y0, z1)


def _front_quads(z: ArrayLike, x0: ArrayLike, x1: ArrayLike, y0: ArrayLike,
                 y1: ArrayLike) -> np.ndarray:
    """Rectangles (N, 4, 3) in the plane Z = z, facing the camera: car backs, building ends."""
    return _quads(x0, y0, z, x1, y0, z, x1, y1, z, x0, y1, z)


@dataclass(frozen=True)
class _Camera:
    """Pinhole camera at (x, height, 0) looking down +Z; world X right, Y up, metres."""

    f: float
    u0: float
    v0: float
    height: float
    x: float

    def project(self, pts: np.ndarray) -> np.ndarray:
        pts = np.asarray(pts, np.float64)
        out = np.empty(pts.shape[:-1] + (2,))
        scale = self.f / np.maximum(pts[..., 2], _Z_MIN)
        out[..., 0] = self.u0 + (pts[..., 0] - self.x) * scale
        out[..., 1] = self.v0 + (self.height - pts[..., 1]) * scale
        return out


class _Canvas:
    """Image and label drawn together, plus a shadow map applied to the ground at the end."""

    def __init__(self, size: tuple[int, int], cam: _Camera) -> None:
        h, w = size
        self.image = np.zeros((h, w, 3), np.uint8)
        self.label = np.zeros((h, w), np.uint8)
        self.shade = np.ones((h, w), np.float32)
        self.cam = cam

    def polys(self, polys: np.ndarray, colour: Colour, cls: int | None = None) -> None:
        """Fill pixel polygons (N, k, 2) in the image and, unless cls is None, the label."""
        pts = np.rint(polys).astype(np.int32)
        if pts.ndim == 2:
            pts = pts[None]
        if len(pts) == 0:
            return
        cv2.fillPoly(self.image, pts, colour)
        if cls is not None:
            cv2.fillPoly(self.label, pts, int(cls))

    def world(self, polys: np.ndarray, colour: Colour, cls: int | None = None) -> None:
        self.polys(self.cam.project(polys), colour, cls)

    def shadow(self, polys: np.ndarray, strength: float) -> None:
        cv2.fillPoly(self.shade, np.rint(self.cam.project(polys)).astype(np.int32),
                     1.0 - strength)


class _Board:
    """A vertical plane facing the camera, standing on the ground at (x, z); draws in metres
    with x to the right and y up from that foot point (figures, trees, poles, signs)."""

    def __init__(self, canvas: _Canvas, x: float, z: float) -> None:
        self.c = canvas
        self.s = canvas.cam.f / z
        self.u, self.v = canvas.cam.project(np.array([x, 0.0, z]))

    def px(self, pts: ArrayLike) -> np.ndarray:
        p = np.asarray(pts, np.float64)
        return np.stack([self.u + self.s * p[..., 0], self.v - self.s * p[..., 1]], axis=-1)

    def _pt(self, x: float, y: float) -> tuple[int, int]:
        p = np.rint(self.px([x, y])).astype(int)
        return int(p[0]), int(p[1])

    def _width(self, metres: float) -> int:
        return max(1, int(round(metres * self.s)))

    def poly(self, pts: ArrayLike, colour: Colour, cls: int | None = None) -> None:
        self.c.polys(self.px(pts), colour, cls)

    def rect(self, x0: float, y0: float, x1: float, y1: float, colour: Colour,
             cls: int | None = None) -> None:
        self.poly([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], colour, cls)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, colour: Colour,
                cls: int | None = None, thickness: float = 0.0) -> None:
        centre, axes = self._pt(cx, cy), (self._width(rx), self._width(ry))
        t = -1 if thickness <= 0 else self._width(thickness)
        cv2.ellipse(self.c.image, centre, axes, 0, 0, 360, colour, t)
        if cls is not None:
            cv2.ellipse(self.c.label, centre, axes, 0, 0, 360, int(cls), t)

    def line(self, p0: tuple[float, float], p1: tuple[float, float], width: float,
             colour: Colour, cls: int | None = None) -> None:
        a, b, t = self._pt(*p0), self._pt(*p1), self._width(width)
        cv2.line(self.c.image, a, b, colour, t)
        if cls is not None:
            cv2.line(self.c.label, a, b, int(cls), t)


@dataclass(frozen=True)
class _Street:
    lane: float        # lane width (m)
    lanes: int         # travel lanes per direction
    parking: float     # parking strip width per side (0 for none)
    two_way: bool
    pave: tuple[float, float]  # left and right pavement widths

    @property
    def half(self) -> float:
        """Distance from the road centre line to either kerb."""
        return self.lanes * self.lane + self.parking


# ---------------------------------------------------------------------------- background


def _draw_sky(c: _Canvas, rng: np.random.Generator) -> int:
    kind = int(rng.choice(4, p=[0.45, 0.25, 0.2, 0.1]))
    top, horizon = (np.array(_jit(rng, col, 10), np.float32) for col in _SKIES[kind])
    h = c.image.shape[0]
    t = np.clip(np.arange(h, dtype=np.float32) / max(c.cam.v0, 1.0), 0, 1) ** 0.8
    c.image[:] = (top * (1 - t[:, None]) + horizon * t[:, None]).astype(np.uint8)[:, None]
    c.label[:] = SKY
    return kind


def _draw_ground(c: _Canvas, rng: np.random.Generator, st: _Street) -> None:
    half = st.half
    pave = _pick(rng, _PAVEMENTS, 8)
    g = rng.uniform(70, 125)
    road = _jit(rng, (g, g, g + rng.uniform(0, 8)), 4)
    c.world(_ground_quads(-300, 300, _Z_MIN, _Z_FAR), pave, PAVEMENT)
    c.world(_ground_quads(-half, half, _Z_MIN, _Z_FAR), road, ROAD)
    for s, width in zip((-1, 1), st.pave):
        c.world(_ground_quads(s * half, s * (half + 0.2), _Z_MIN, _Z_FAR), _mul(pave, 1.15))
        # paving joints, image only: across the pavement and along it
        tile = rng.uniform(0.5, 1.2)
        zs = np.arange(_Z_MIN, 40.0, tile)
        across = c.cam.project(_ground_quads(s * (half + 0.2), s * (half + width), zs, zs)[:, :2])
        xs = s * np.arange(half + 0.2 + tile, half + width, tile)
        along = c.cam.project(_ground_quads(xs, xs, _Z_MIN, 60.0)[:, 1:3])
        joint = _mul(pave, 0.8)
        cv2.polylines(c.image, np.rint(across).astype(np.int32), False, joint, 1)
        cv2.polylines(c.image, np.rint(along).astype(np.int32), False, joint, 1)
    # repair patches, image only
    for _ in range(int(rng.integers(0, 4))):
        x0, z0 = rng.uniform(-half, half - 1), rng.uniform(4, 40)
        c.world(_ground_quads(x0, x0 + rng.uniform(0.5, 3), z0, z0 + rng.uniform(1, 6)),
                _mul(road, rng.uniform(0.75, 0.9)))
    # lane markings are Road in CamVid-11
    white = _jit(rng, (225, 225, 215), 8)
    period, dash = rng.uniform(8, 13), rng.uniform(2.5, 4.5)
    zs = np.arange(rng.uniform(0, period), 300, period)
    divider = [k * st.lane for k in range(1, st.lanes)]
    dividers = [-d for d in divider] + divider
    if st.two_way:
        colour = white if rng.random() < 0.7 else _jit(rng, (225, 190, 60), 8)
        c.world(_ground_quads(-0.08, 0.08, zs, zs + dash), colour, ROAD)
    else:
        dividers.append(0.0)
    for d in dividers:
        c.world(_ground_quads(d - 0.07, d + 0.07, zs, zs + dash), white, ROAD)
    edge = st.lanes * st.lane
    c.world(_ground_quads([-edge - 0.2, edge], [-edge, edge + 0.2], _Z_MIN, 400), white, ROAD)
    if rng.random() < 0.3:  # zebra crossing
        z0 = rng.uniform(7, 25)
        xs = np.arange(-half + 0.3, half - 0.5, 1.0)
        c.world(_ground_quads(xs, xs + 0.5, z0, z0 + rng.uniform(2.5, 4)), white, ROAD)


@dataclass(frozen=True)
class _Building:
    side: int
    xb: float
    z0: float
    z1: float
    height: float


def _plan_buildings(rng: np.random.Generator, st: _Street, end: float) -> list[_Building]:
    out = []
    for side, s in enumerate((-1, 1)):
        line = st.half + st.pave[side] + rng.uniform(0, 1.5)
        z = rng.uniform(-10, 4)
        while z < end - 5:
            if rng.random() < 0.2:
                z += rng.uniform(3, 12)  # a side street
            z1 = min(z + rng.uniform(8, 35), end)
            xb = line + (rng.uniform(0.5, 3) if rng.random() < 0.3 else 0.0)
            height = rng.uniform(6, 25) if rng.random() < 0.9 else rng.uniform(25, 60)
            if z1 > max(z, _Z_MIN):
                out.append(_Building(s, xb, z, z1, height))
            z = z1
    return out


def _draw_building(c: _Canvas, rng: np.random.Generator, b: _Building) -> None:
    base = _pick(rng, _FACADES, 12)
    x, z0 = b.side * b.xb, max(b.z0, _Z_MIN)
    if b.z0 >= _Z_MIN:
        c.world(_front_quads(z0, x, x + b.side * 15, 0, b.height), _mul(base, 0.72), BUILDING)
    c.world(_side_quads(x, 0, b.height, z0, b.z1), base, BUILDING)
    if b.z0 > 150:
        return
    c.world(_side_quads(x, b.height - rng.uniform(0.3, 0.8), b.height, z0, b.z1),
            _mul(base, 0.7))  # cornice
    ground = rng.uniform(3.0, 4.5)
    start = max(b.z0, 1.0)
    if rng.random() < 0.6:  # shop front
        c.world(_side_quads(x, 0, ground, z0, b.z1), _pick(rng, _FACADES, 25))
        step = rng.uniform(3, 5)
        zs = np.arange(start + 0.5, b.z1 - step * 0.7, step)
        c.world(_side_quads(x, 0.4, ground - 0.6, zs, zs + step * 0.7), _pick(rng, _GLASS, 12))
    storey, step = rng.uniform(2.8, 3.5), rng.uniform(2.0, 3.5)
    ww, wh = rng.uniform(0.7, min(1.6, step - 0.4)), rng.uniform(1.1, min(1.9, storey - 0.6))
    ys = np.arange(ground + 0.8, b.height - wh - 0.8, storey)
    zs = np.arange(start + 0.8, b.z1 - 0.8 - ww, step)
    if len(ys) and len(zs):
        yy, zz = (a.ravel() for a in np.meshgrid(ys, zs))
        quads = _side_quads(x, yy, yy + wh, zz, zz + ww)
        group = rng.choice(3, size=len(quads), p=[0.5, 0.35, 0.15])
        glass = [_pick(rng, (g,), 10) for g in _GLASS]
        for k in range(3):
            c.world(quads[group == k], glass[k])


def _draw_skyline(c: _Canvas, rng: np.random.Generator, z: float, kind: int,
                  horizon: Colour) -> None:
    """Far blocks or a tree line closing the street, so the horizon is not a bare line."""
    if kind == 0:
        x = -400.0
        while x < 400:
            w = rng.uniform(15, 60)
            col = _mul(_pick(rng, _FACADES, 10), 0.5)
            col = tuple(int(a + 0.5 * h) for a, h in zip(col, horizon))
            c.world(_front_quads(z, x, x + w, 0, rng.uniform(8, 50)), col, BUILDING)
            x += w
    elif kind == 1:
        green = _pick(rng, _GREENS, 10)
        for x in np.arange(-400, 400, 12.0):
            b = _Board(c, x, z)
            r = rng.uniform(5, 10)
            b.ellipse(0, r * 0.6, r, r * rng.uniform(0.6, 1.0), _mul(green, rng.uniform(.7, 1.1)),
                      TREE)


# ---------------------------------------------------------------------------- objects


def _draw_tree(c: _Canvas, rng: np.random.Generator, x: float, z: float) -> None:
    b = _Board(c, x, z)
    th, tw, r = rng.uniform(1.8, 3.5), rng.uniform(0.2, 0.4), rng.uniform(1.3, 2.8)
    b.poly([[-tw * 0.6, 0], [tw * 0.6, 0], [tw * 0.4, th + r * 0.6], [-tw * 0.4, th + r * 0.6]],
           _jit(rng, (85, 65, 45), 12), TREE)
    green, cy = _pick(rng, _GREENS, 12), th + r * 0.8
    n = int(rng.integers(4, 8))
    offsets = rng.normal(0, r * 0.35, (n, 2))
    radii = r * rng.uniform(0.45, 0.75, (n, 2))
    for k in np.argsort(offsets[:, 1]):  # lower, darker blobs first
        shade = 0.75 + 0.5 * (offsets[k, 1] / (r * 0.7) + 1) / 2
        b.ellipse(offsets[k, 0], cy + offsets[k, 1] * 0.8, radii[k, 0], radii[k, 1],
                  _mul(green, shade), TREE)


def _draw_streetlight(c: _Canvas, rng: np.random.Generator, x: float, z: float,
                      toward: int) -> None:
    b = _Board(c, x, z)
    col, h, w = _pick(rng, _POLE_COLOURS, 8), rng.uniform(6, 9), rng.uniform(0.07, 0.1)
    b.poly([[-w * 1.4, 0], [w * 1.4, 0], [w, h], [-w, h]], col, POLE)
    arm = toward * rng.uniform(1.0, 2.5)
    b.line((0, h - 0.1), (arm, h + 0.25), 0.08, col, POLE)
    b.ellipse(arm, h + 0.15, 0.35, 0.1, _mul(col, 1.3), POLE)


def _draw_sign(c: _Canvas, rng: np.random.Generator, x: float, z: float) -> None:
    b = _Board(c, x, z)
    kind, k = int(rng.integers(0, 6)), rng.uniform(1.0, 1.5)
    ph = rng.uniform(2.8, 3.6) if kind == 5 else rng.uniform(2.0, 2.8)
    b.rect(-0.04, 0, 0.04, ph, _pick(rng, _POLE_COLOURS, 8), POLE)
    red, white = _jit(rng, (200, 30, 30), 10), _jit(rng, (235, 235, 235), 8)
    blue = _jit(rng, (30, 70, 170), 10)
    s = _Board(c, x, z)  # the sign face, in metres / k around its centre
    s.v, s.s = b.v - b.s * (ph + (0.45 if kind == 5 else 0.35) * k), b.s * k
    if kind == 0:  # prohibition / speed limit
        s.ellipse(0, 0, 0.33, 0.33, red, SIGN)
        s.ellipse(0, 0, 0.24, 0.24, white)
        s.rect(-0.1, -0.08, 0.1, 0.08, (30, 30, 30))
    elif kind == 1:  # mandatory direction
        s.ellipse(0, 0, 0.33, 0.33, blue, SIGN)
        s.poly([[-0.05, -0.2], [0.05, -0.2], [0.05, 0.05], [0.15, 0.05], [0, 0.22],
                [-0.15, 0.05], [-0.05, 0.05]], white)
    elif kind == 2:  # warning triangle
        s.poly([[-0.4, -0.3], [0.4, -0.3], [0, 0.4]], red, SIGN)
        s.poly([[-0.27, -0.22], [0.27, -0.22], [0, 0.25]], white)
    elif kind == 3:  # information panel
        col = blue if rng.random() < 0.5 else _jit(rng, (20, 120, 60), 10)
        s.rect(-0.4, -0.3, 0.4, 0.3, col, SIGN)
        for y in (0.12, -0.02, -0.16):
            s.rect(-0.3, y - 0.03, rng.uniform(0, 0.3), y + 0.03, white)
    elif kind == 4:  # stop
        ang = np.pi / 8 + np.arange(8) * np.pi / 4
        s.poly(np.stack([0.36 * np.cos(ang), 0.36 * np.sin(ang)], -1), red, SIGN)
        s.rect(-0.25, -0.06, 0.25, 0.06, white)
    else:  # traffic light
        s.rect(-0.16, -0.45, 0.16, 0.45, (30, 30, 32), SIGN)
        lit = int(rng.integers(3))
        for i, col in enumerate(((230, 40, 30), (240, 180, 30), (40, 210, 90))):
            s.ellipse(0, 0.3 - 0.3 * i, 0.09, 0.09, col if i == lit else _mul(col, 0.3))


def _draw_fence_section(c: _Canvas, x: float, z0: float, z1: float, h: float, kind: int,
                        col: Colour) -> None:
    """One post-to-post section, so sections sort by depth among the other objects."""
    c.world(_front_quads(z0, x - 0.05, x + 0.05, 0, h + 0.05), _mul(col, 0.8), FENCE)
    if kind == 2:  # solid hoarding / panel fence
        c.world(_side_quads(x, 0, h, z0, z1), col, FENCE)
        c.world(_side_quads(x, h * 0.45, h * 0.55, z0, z1), _mul(col, 0.75))
        return
    rails = (h - 0.08, 0.12) if kind == 0 else (h - 0.08, h * 0.5, 0.2)
    c.world(_side_quads(x, np.array(rails), np.array(rails) + 0.08, z0, z1), col, FENCE)
    if kind == 0:  # pickets
        zs = np.arange(z0 + 0.1, z1 - 0.05, 0.16)
        c.world(_side_quads(x, 0.05, h - 0.02, zs, zs + 0.06), col, FENCE)


def _car_wheel(c: _Canvas, x: float, zw: float, colour: Colour, cls: int) -> None:
    cam = c.cam
    r = 0.33
    u, v = cam.project(np.array([x, r, zw]))
    ry = cam.f * r / zw
    rx = cam.f * abs(x - cam.x) * r / zw ** 2
    centre, axes = (int(round(u)), int(round(v))), (max(1, int(round(rx))), max(1, int(ry)))
    cv2.ellipse(c.image, centre, axes, 0, 0, 360, colour, -1)
    cv2.ellipse(c.label, centre, axes, 0, 0, 360, cls, -1)
    axes = (max(1, axes[0] // 2), max(1, axes[1] // 2))
    cv2.ellipse(c.image, centre, axes, 0, 0, 360, (120, 120, 125), -1)


def _draw_car(c: _Canvas, rng: np.random.Generator, x: float, z: float, oncoming: bool,
              w: float, length: float) -> None:
    van = rng.random() < 0.15
    yb, yt = 0.28, (rng.uniform(1.9, 2.3) if van else rng.uniform(0.85, 1.05))
    body = _pick(rng, _CAR_COLOURS, 10)
    glass = _pick(rng, _GLASS[:2], 8)
    xl, xr = x - w / 2, x + w / 2
    rel = x - c.cam.x
    side = xl if rel > w / 2 else (xr if rel < -w / 2 else None)
    inward = 1.0 if side == xl else -1.0
    z1 = z + length
    c.shadow(_ground_quads(xl - 0.15, xr + 0.15, z - 0.2, z1 + 0.1), rng.uniform(0.45, 0.65))
    tyre = _jit(rng, (25, 25, 25), 4)
    for za in (z1 - 0.8, z + 0.75):  # tyres seen under the body
        c.world(_front_quads(za, [xl + 0.05, xr - 0.3], [xl + 0.3, xr - 0.05], 0, 0.5), tyre, CAR)
    if side is not None:
        c.world(_side_quads(side, yb, yt, z, z1), _mul(body, 0.8), CAR)
        for zw in (z + 0.8, z1 - 0.85):
            _car_wheel(c, side, zw, tyre, CAR)
        if van:
            c.world(_side_quads(side, yt - 0.75, yt - 0.2, z + 0.3, z1 - 0.3), glass)
    c.world(_ground_quads(xl, xr, z, z1, y=yt), _mul(body, 1.1), CAR)
    c.world(_front_quads(z, xl, xr, yb, yt), body, CAR)
    if van:
        c.world(_front_quads(z, [xl + 0.15, x + 0.05], [x - 0.05, xr - 0.15], yt - 0.7, yt - 0.2),
                glass)
    else:
        near, far = ((rng.uniform(1.3, 1.7), rng.uniform(0.6, 1.0)) if oncoming
                     else (rng.uniform(0.6, 1.0), rng.uniform(1.3, 1.7)))
        zc0, zc1, hc, slope, i = z + near, z1 - far, rng.uniform(1.38, 1.55), 0.45, 0.1
        if side is not None:
            sx = side + inward * i
            c.world(np.array([[(sx, yt, zc0), (sx, hc, zc0 + slope), (sx, hc, zc1 - slope),
                               (sx, yt, zc1)]]), _mul(body, 0.8), CAR)
            c.world(np.array([[(sx, yt + 0.07, zc0 + 0.15), (sx, hc - 0.06, zc0 + slope),
                               (sx, hc - 0.06, zc1 - slope), (sx, yt + 0.07, zc1 - 0.15)]]),
                    glass)
            zm = (zc0 + zc1) / 2
            c.world(_side_quads(sx, yt, hc, zm - 0.06, zm + 0.06), _mul(body, 0.8))
        a, bb = i + 0.05, i + 0.12
        c.world(_ground_quads(xl + a, xr - a, zc0 + slope, zc1 - slope, y=hc), _mul(body, 1.1),
                CAR)
        c.world(np.array([[(xl + i, yt, zc0), (xr - i, yt, zc0), (xr - a, hc, zc0 + slope),
                           (xl + a, hc, zc0 + slope)]]), body, CAR)
        c.world(np.array([[(xl + bb, yt + 0.05, zc0 + 0.05), (xr - bb, yt + 0.05, zc0 + 0.05),
                           (xr - bb, hc - 0.05, zc0 + slope - 0.05),
                           (xl + bb, hc - 0.05, zc0 + slope - 0.05)]]), glass)
    # near face details, image only: bumper, lights, plate
    c.world(_front_quads(z, xl, xr, yb, yb + 0.12), _mul(body, 0.55))
    top = min(yt, 1.05)
    if oncoming:
        c.world(_front_quads(z, x - 0.35, x + 0.35, top - 0.35, top - 0.12), (40, 40, 42))
        c.world(_front_quads(z, [xl + 0.08, xr - 0.45], [xl + 0.45, xr - 0.08], top - 0.3,
                             top - 0.14), _jit(rng, (235, 230, 200), 8))
    else:
        c.world(_front_quads(z, [xl + 0.06, xr - 0.36], [xl + 0.36, xr - 0.06], top - 0.3,
                             top - 0.12), _jit(rng, (190, 30, 30), 12))
    c.world(_front_quads(z, x - 0.25, x + 0.25, yb + 0.15, yb + 0.28), (225, 225, 220))


def _draw_pedestrian(c: _Canvas, rng: np.random.Generator, x: float, z: float) -> None:
    b = _Board(c, x, z)
    h = rng.uniform(1.55, 1.9) if rng.random() < 0.9 else rng.uniform(1.1, 1.4)
    skin, shirt = _pick(rng, _SKIN, 8), _pick(rng, _CLOTHES, 15)
    trousers, shoes = _pick(rng, _TROUSERS, 10), _jit(rng, (35, 30, 30), 8)
    hair = _pick(rng, ((30, 25, 20), (90, 60, 35), (180, 150, 90), (140, 140, 140)), 8)
    hip, sh, P = 0.5 * h, 0.81 * h, PEDESTRIAN
    if rng.random() < 0.5:  # walking, side view
        d, stride, swing = rng.choice((-1, 1)), rng.uniform(0, 0.18) * h, rng.uniform(0, 0.15) * h
        for sgn in (-1, 1):
            b.line((0, hip), (sgn * stride, 0.04 * h), 0.075 * h, trousers, P)
            b.rect(sgn * stride - 0.02 * h + 0.03 * h * d, 0, sgn * stride + 0.06 * h * d,
                   0.04 * h, shoes, P)
        b.poly([[-0.07 * h, hip - 0.03 * h], [0.07 * h, hip - 0.03 * h], [0.06 * h, sh],
                [-0.06 * h, sh]], shirt, P)
        b.line((0, sh - 0.03 * h), (swing * d, 0.47 * h), 0.045 * h, _mul(shirt, 0.85), P)
    else:  # facing or turning away
        b.poly([[-0.1 * h, 0.03 * h], [-0.02 * h, 0.03 * h], [-0.01 * h, hip],
                [-0.11 * h, hip]], trousers, P)
        b.poly([[0.02 * h, 0.03 * h], [0.1 * h, 0.03 * h], [0.11 * h, hip], [0.01 * h, hip]],
               trousers, P)
        b.rect(-0.11 * h, 0, -0.02 * h, 0.035 * h, shoes, P)
        b.rect(0.02 * h, 0, 0.11 * h, 0.035 * h, shoes, P)
        b.poly([[-0.11 * h, hip - 0.03 * h], [0.11 * h, hip - 0.03 * h], [0.13 * h, sh],
                [-0.13 * h, sh]], shirt, P)
        for sgn in (-1, 1):
            b.line((sgn * 0.12 * h, sh - 0.02 * h), (sgn * 0.15 * h, 0.46 * h), 0.05 * h,
                   _mul(shirt, 0.9), P)
            b.ellipse(sgn * 0.15 * h, 0.45 * h, 0.025 * h, 0.03 * h, skin, P)
        if rng.random() < 0.3:  # a bag
            b.rect(0.12 * h, 0.4 * h, 0.22 * h, 0.55 * h, _pick(rng, _CLOTHES, 10), P)
    b.rect(-0.025 * h, sh - 0.01 * h, 0.025 * h, 0.87 * h, skin, P)
    r = 0.065 * h
    b.ellipse(0, 0.92 * h + r * 0.25, r * 0.9, r * 0.8, hair, P)
    b.ellipse(0, 0.92 * h, r * 0.8, r, skin, P)
    b.ellipse(0, 0.92 * h + r * 0.55, r * 0.85, r * 0.5, hair, P)


def _draw_bicyclist(c: _Canvas, rng: np.random.Generator, x: float, z: float) -> None:
    b = _Board(c, x, z)
    frame, jersey = _pick(rng, _CLOTHES + _CAR_COLOURS, 12), _pick(rng, _CLOTHES, 15)
    legs, skin = _pick(rng, _TROUSERS, 10), _pick(rng, _SKIN, 8)
    helmet, tyre, B = _pick(rng, _CLOTHES, 10), (25, 25, 25), BICYCLIST
    if rng.random() < 0.65:  # side view, riding across the view
        d, r = rng.choice((-1, 1)), 0.34
        for cx in (-0.52, 0.52):
            b.ellipse(cx, r, r, r, tyre, B, thickness=0.05)
            b.ellipse(cx, r, 0.03, 0.03, frame, B)
        rear, crank, seat, head, front = ((-0.52 * d, r), (0, 0.3), (-0.18 * d, 0.92),
                                          (0.38 * d, 0.95), (0.52 * d, r))
        for p, q in ((rear, crank), (rear, seat), (crank, seat), (seat, head), (crank, head),
                     (head, front), (head, (0.42 * d, 1.08))):
            b.line(p, q, 0.035, frame, B)
        hip, shoulder, hand = (-0.15 * d, 1.0), (0.12 * d, 1.48), (0.42 * d, 1.08)
        pedal = rng.uniform(-0.15, 0.15)
        knee = (0.12 * d, 0.72 + pedal * 0.5)
        b.line(hip, knee, 0.11, legs, B)
        b.line(knee, (pedal * d, 0.3 + pedal), 0.085, legs, B)
        b.line(hip, shoulder, 0.2, jersey, B)
        b.line(shoulder, hand, 0.065, _mul(jersey, 0.85), B)
        b.ellipse(0.22 * d, 1.63, 0.1, 0.11, skin, B)
        b.ellipse(0.2 * d, 1.69, 0.13, 0.08, helmet, B)
    else:  # seen from behind or ahead
        b.rect(-0.025, 0, 0.025, 0.68, tyre, B)
        b.line((-0.28, 1.05), (0.28, 1.05), 0.03, frame, B)
        b.rect(-0.03, 0.3, 0.03, 1.0, frame, B)
        for sgn in (-1, 1):
            b.line((sgn * 0.1, 0.98), (sgn * 0.14, 0.3 + sgn * 0.08), 0.1, legs, B)
            b.line((sgn * 0.17, 1.45), (sgn * 0.27, 1.05), 0.06, _mul(jersey, 0.85), B)
        b.poly([[-0.16, 0.95], [0.16, 0.95], [0.19, 1.5], [-0.19, 1.5]], jersey, B)
        b.ellipse(0, 1.63, 0.09, 0.11, skin, B)
        b.ellipse(0, 1.69, 0.12, 0.08, helmet, B)


# ---------------------------------------------------------------------------- planning


_Job = tuple[float, Callable[[], None]]


def _plan_objects(c: _Canvas, rng: np.random.Generator, st: _Street) -> list[_Job]:
    """Everything standing in the street, as (depth, draw) pairs for far-to-near painting."""
    jobs: list[_Job] = []
    half = st.half

    def add(z: float, fn: Callable[..., None], *args: object) -> None:
        jobs.append((z, lambda: fn(c, *args)))

    # cars: per lane, front to back with gaps
    lanes = [(s * (k + 0.5) * st.lane, s < 0 and st.two_way, False)
             for s in (-1, 1) for k in range(st.lanes)]
    if st.parking:
        lanes += [(s * (st.lanes * st.lane + st.parking / 2), s < 0 and st.two_way, True)
                  for s in (-1, 1)]
    cars = 0
    for x, oncoming, parked in lanes:
        own = abs(x - c.cam.x) < st.lane / 2
        z = rng.uniform(9, 25) if own else rng.uniform(3, 20)
        while z < 110 and rng.random() < (0.75 if parked else 0.55):
            w, length = rng.uniform(1.65, 1.95), rng.uniform(3.8, 4.8)
            xc = x + (rng.normal(0, 0.15) if not parked else 0.0)
            add(z, _draw_car, rng, xc, z, oncoming, w, length)
            cars += 1
            z += length + (rng.uniform(0.8, 3) if parked else rng.uniform(4, 30))
    if cars == 0:
        x, oncoming, _ = lanes[int(rng.integers(len(lanes)))]
        z = rng.uniform(10, 40)
        add(z, _draw_car, rng, x, z, oncoming, rng.uniform(1.65, 1.95), rng.uniform(3.8, 4.8))

    for side, s in enumerate((-1, 1)):
        pave = st.pave[side]
        if rng.random() < 0.6:  # a row of street trees
            xt = half + rng.uniform(0.7, max(0.8, min(1.5, pave - 0.5)))
            z = rng.uniform(4, 14)
            while z < 90:
                add(z, _draw_tree, rng, s * xt + rng.normal(0, 0.1), z)
                z += rng.uniform(7, 14)
        if rng.random() < 0.65:  # street lights
            z = rng.uniform(5, 25)
            xl = half + rng.uniform(0.35, 0.6)
            while z < 150:
                add(z, _draw_streetlight, rng, s * xl, z, -s)
                z += rng.uniform(22, 35)
    for _ in range(int(rng.choice(5, p=[0.1, 0.3, 0.3, 0.2, 0.1]))):
        s, z = rng.choice((-1, 1)), rng.uniform(5, 35)
        add(z, _draw_sign, rng, s * (half + rng.uniform(0.3, 0.6)), z)
    for _ in range(int(rng.choice(3, p=[0.35, 0.45, 0.2]))):
        side, kind = int(rng.integers(2)), int(rng.integers(3))
        s = 2 * side - 1
        xf = half + 0.3 if kind == 1 else half + st.pave[side] - rng.uniform(0.1, 0.4)
        h = (rng.uniform(0.9, 1.1), rng.uniform(0.9, 1.5), rng.uniform(1.5, 2.2))[kind]
        z0 = rng.uniform(2, 30)
        step = rng.uniform(2, 2.8)
        col = _pick(rng, _FENCE_COLOURS, 10)
        for zs in np.arange(z0, z0 + rng.uniform(6, 40), step):
            add(zs, _draw_fence_section, s * xf, zs, zs + step, h, kind, col)
    for _ in range(int(rng.choice(7, p=[0.05, 0.15, 0.2, 0.2, 0.15, 0.15, 0.1]))):
        if rng.random() < 0.2:  # crossing the road
            x, z = rng.uniform(-half + 0.5, half - 0.5), rng.uniform(8, 30)
        else:
            side = int(rng.integers(2))
            x = (2 * side - 1) * (half + rng.uniform(0.4, st.pave[side] - 0.3))
            z = rng.uniform(4, 35)
        add(z, _draw_pedestrian, rng, x, z)
    for _ in range(int(rng.choice(3, p=[0.3, 0.5, 0.2]))):
        s = rng.choice((-1, 1))
        x = s * (st.lanes * st.lane - rng.uniform(0.5, 0.9))
        if st.two_way and s < 0 and rng.random() < 0.5:
            x = s * (half + rng.uniform(0.5, 1.0))  # on the pavement
        z = rng.uniform(5, 35)
        add(z, _draw_bicyclist, rng, x, z)
    return jobs


# ---------------------------------------------------------------------------- finishing


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float,
                  channels: int = 1) -> np.ndarray:
    shape = (int(h / cell) + 2, int(w / cell) + 2) + ((channels,) if channels > 1 else ())
    small = rng.standard_normal(shape, dtype=np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def _finish(c: _Canvas, rng: np.random.Generator, sky_kind: int) -> np.ndarray:
    """Textures, clouds, shadows and lighting, on the image alone."""
    lbl = c.label
    h, w = lbl.shape
    unit = w / 480.0
    f32 = np.float32
    yy = np.arange(h, dtype=f32)[:, None]
    xx = np.arange(w, dtype=f32)[None, :]
    period = max(rng.uniform(3, 9) * unit, 2.5)  # pixels; finer would alias
    stripes = np.sin(yy * f32(2 * np.pi / period) + f32(rng.uniform(0, 2 * np.pi)))
    grain = rng.random((h, w), dtype=f32)
    grain -= f32(0.5)
    lum = _TEX[0][lbl] * f32(3.4) * grain  # uniform grain with unit variance
    lum += _TEX[1][lbl] * _smooth_noise(rng, h, w, 3 * unit)
    lum += _TEX[2][lbl] * _smooth_noise(rng, h, w, 24 * unit)
    lum += _TEX[3][lbl] * stripes
    lum *= f32(rng.uniform(0.6, 1.4))
    img = c.image.astype(f32)
    img += lum[..., None]
    cloud = rng.uniform(0, 1.0) if sky_kind != 2 else rng.uniform(0, 0.4)
    sky = lbl == SKY
    rows = int(np.flatnonzero(sky.any(axis=1))[-1]) + 1 if sky.any() else 0
    if cloud > 0.05 and rows:
        a = _smooth_noise(rng, rows, w, 70 * unit) * f32(0.6) + f32(rng.uniform(-0.5, 0.2))
        np.clip(a, 0, 1, out=a)
        a *= f32(cloud) * sky[:rows]
        top = img[:rows]
        top += a[..., None] * (np.array(_jit(rng, (240, 240, 242), 6), f32) - top)
    light = np.where((lbl == ROAD) | (lbl == PAVEMENT), c.shade, f32(1))
    phi, ramp = rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.25)
    gx, gy = xx / w - f32(0.5), yy / h - f32(0.5)
    light *= 1 + f32(2 * ramp * np.cos(phi)) * gx + f32(2 * ramp * np.sin(phi)) * gy
    light *= 1 - f32(rng.uniform(0, 0.3)) * (gx ** 2 + gy ** 2)  # vignetting
    img *= light[..., None]
    np.clip(img, 0, 255, out=img)
    # global exposure, gamma and colour cast through one lookup table on the 8-bit image
    gain, gamma = rng.uniform(0.7, 1.25), rng.uniform(0.8, 1.25)
    cast = np.clip(1 + rng.normal(0, 0.06, 3), 0.8, 1.2)
    ramp8 = (np.arange(256) / 255.0) ** gamma * 255 * gain
    lut = np.clip(ramp8[:, None] * cast[None, :], 0, 255).astype(np.uint8)
    return cv2.LUT(img.astype(np.uint8), lut[None])


# ---------------------------------------------------------------------------- public API


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    h, w = (int(v) for v in size)
    if h < 8 or w < 8:
        raise ValueError(f'scene size must be at least 8x8 (height, width), got {size}')
    return h, w


def render_scene(seed: int, size: tuple[int, int] = (360, 480)) -> tuple[np.ndarray, np.ndarray]:
    """Draw one random street scene; returns (RGB uint8 HxWx3, CamVid class ids uint8 HxW).

    The whole scene follows from ``seed``, so a test or demo can regenerate any frame exactly
    instead of storing it. ``size`` is (height, width); the layout scales with the width.
    """
    h, w = _check_size(size)
    rng = np.random.default_rng(seed)
    lane, lanes = rng.uniform(3.0, 3.6), int(rng.choice((1, 2), p=(0.6, 0.4)))
    st = _Street(lane=lane, lanes=lanes,
                 parking=rng.uniform(2.0, 2.4) if rng.random() < 0.4 else 0.0,
                 two_way=bool(rng.random() < 0.75),
                 pave=(rng.uniform(2.0, 5.0), rng.uniform(2.0, 5.0)))
    if st.two_way:
        cam_x = (int(rng.integers(lanes)) + 0.5) * lane
    else:
        cam_x = (int(rng.integers(2 * lanes)) - lanes + 0.5) * lane
    cam = _Camera(f=w * rng.uniform(0.7, 0.95), u0=w * rng.uniform(0.42, 0.58),
                  v0=h * rng.uniform(0.4, 0.52), height=rng.uniform(1.3, 1.7),
                  x=cam_x + rng.normal(0, 0.3))
    c = _Canvas((h, w), cam)
    sky_kind = _draw_sky(c, rng)
    horizon = _SKIES[sky_kind][1]
    _draw_ground(c, rng, st)
    end = rng.uniform(280, 450)
    _draw_skyline(c, rng, end + 5, int(rng.choice(3, p=[0.7, 0.2, 0.1])), horizon)
    buildings = _plan_buildings(rng, st, end)
    if sky_kind in (0, 3) and rng.random() < 0.8:  # sunshine: facades on one side cast shadows
        s, reach, skew = rng.choice((-1, 1)), rng.uniform(0.3, 1.2), rng.uniform(-0.5, 0.5)
        strength = rng.uniform(0.3, 0.5)
        for b in buildings:
            if b.side == s:
                x, d, dz = s * b.xb, s * min(b.height * reach, 40), b.height * skew
                c.shadow(np.array([[(x, 0, b.z0), (x, 0, b.z1), (x - d, 0, b.z1 + dz),
                                    (x - d, 0, b.z0 + dz)]]), strength)
    for b in sorted(buildings, key=lambda b: -b.z0):
        _draw_building(c, rng, b)
    jobs = _plan_objects(c, rng, st)
    for _, draw in sorted(jobs, key=lambda job: -job[0]):
        draw()
    return _finish(c, rng, sky_kind), c.label


class SyntheticScenes(Sequence):
    """A fixed-length, reproducible sequence of synthetic scenes, usable wherever a
    SegmentationFolder is (``dataset[i]``, ``name(i)``, ``load_all()``, ``spec``), so the demo
    and the tests run without any dataset on disk."""

    spec: LabelSpec = CAMVID

    def __init__(self, count: int, seed: int = 0, size: tuple[int, int] = (360, 480)) -> None:
        if count < 0:
            raise ValueError(f'count must be non-negative, got {count}')
        if seed < 0:
            raise ValueError(f'seed must be non-negative, got {seed}')
        self.count, self.seed, self.size = int(count), int(seed), _check_size(size)

    def __len__(self) -> int:
        return self.count

    def _index(self, i: int) -> int:
        if not isinstance(i, (int, np.integer)):
            raise TypeError(f'scene index must be an integer, got {type(i).__name__}')
        j = int(i) + self.count if i < 0 else int(i)
        if not 0 <= j < self.count:
            raise IndexError(f'scene index {i} out of range for {self.count} scenes')
        return j

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[override]
        return render_scene(self.seed * SEED_STRIDE + self._index(i), self.size)

    def name(self, i: int) -> str:
        """File stem of scene i, as a folder reader would report it."""
        return f'synthetic_{self._index(i):06d}'

    def load_all(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """All scenes rendered into memory: (images, labels)."""
        items = [self[i] for i in range(len(self))]
        return [a for a, _ in items], [b for _, b in items]


def write_camvid_layout(root: str | Path, split: str, count: int, seed: int = 0,
                        size: tuple[int, int] = (360, 480)) -> Path:
    """Write ``count`` scenes as ``root/split/NAME.png`` (RGB frames) and
    ``root/splitannot/NAME.png`` (8-bit class ids), the layout ``camvid_layout`` reads, so the
    file-based training and evaluation paths can be exercised without downloading CamVid."""
    root = Path(root)
    scenes = SyntheticScenes(count, seed, size)
    img_dir, lbl_dir = root / split, root / f'{split}annot'
    img_dir.mkdir(parents=True, exist_ok=True)
    lbl_dir.mkdir(parents=True, exist_ok=True)
    for i in range(len(scenes)):
        image, label = scenes[i]
        name = scenes.name(i)
        for path, data in ((img_dir / f'{name}.png', cv2.cvtColor(image, cv2.COLOR_RGB2BGR)),
                           (lbl_dir / f'{name}.png', label)):
            if not cv2.imwrite(str(path), data):
                raise OSError(f'could not write {path}')
    return root
