"""``ee-seg bag-from-images``: a bag from a folder of frames, with labels and synthetic battery
and CPU-load traces, so any image set can be replayed (and tests can make their own bags)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..data.folder import IMAGE_SUFFIXES, read_rgb
from ..outdir import check_out, staged_output
from .bagio import BATTERY, FLOAT32, BagError, BagWriter

IMAGE_TOPIC = '/camera/image_raw'
LABEL_TOPIC = '/camera/labels'
BATTERY_TOPIC = '/battery_state'
CPU_TOPIC = '/cpu_load'


@dataclass(frozen=True)
class Trace:
    """A signal over the bag: 'const:V', 'drain:START,END' (linear over the bag) or
    'spike:T0,T1,LEVEL[,BASE]' (LEVEL between T0 and T1 seconds, BASE elsewhere)."""

    kind: str
    args: tuple[float, ...]

    @classmethod
    def parse(cls, text: str) -> 'Trace':
        kind, _, rest = text.partition(':')
        try:
            args = tuple(float(v) for v in rest.split(',')) if rest else ()
        except ValueError:
            args = ()
        arity = {'const': (1,), 'drain': (2,), 'spike': (3, 4)}
        if kind not in arity or len(args) not in arity[kind]:
            raise BagError(f'cannot parse trace {text!r}; expected const:V, drain:START,END '
                           'or spike:T0,T1,LEVEL[,BASE]')
        return cls(kind, args)

    def at(self, t: float, duration: float) -> float:
        if self.kind == 'const':
            return self.args[0]
        if self.kind == 'drain':
            a, b = self.args
            return a + (b - a) * (t / duration if duration > 0 else 1.0)
        t0, t1, level = self.args[:3]
        base = self.args[3] if len(self.args) == 4 else 0.2
        return level if t0 <= t <= t1 else base


def bag_from_images(images: str | Path, out: str | Path, labels: str | Path | None = None,
                    rate: float = 10.0, storage: str = 'sqlite3', compressed: bool = False,
                    battery_trace: str | None = None, cpu_trace: str | None = None,
                    overwrite: bool = False, frame_id: str = 'camera') -> Path:
    images, out = Path(images), Path(out)
    if not images.is_dir():
        raise BagError(f'{images} is not a folder of images')
    files = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise BagError(f'no images in {images}')
    if not (math.isfinite(rate) and rate > 0):
        raise BagError(f'rate must be a positive number of frames per second, got {rate}')
    label_files = {}
    if labels is not None:
        labels = Path(labels)
        if not labels.is_dir():
            raise BagError(f'{labels} is not a folder of label images')
        label_files = {p.stem: p for p in labels.iterdir() if p.suffix.lower() == '.png'}
    battery = Trace.parse(battery_trace) if battery_trace else None
    cpu = Trace.parse(cpu_trace) if cpu_trace else None
    inputs = (images, labels)
    check_out(out, inputs, overwrite)            # before any frame is read
    with staged_output(out, inputs, overwrite, 'bag-from-images', make=False) as tmp:
        writer = BagWriter(tmp, storage)
        try:
            _write_frames(writer, files, label_files, rate, compressed, battery, cpu, frame_id)
        finally:
            writer.close()
    return out


def _write_frames(writer: BagWriter, files: list[Path], label_files: dict[str, Path],
                  rate: float, compressed: bool, battery: Trace | None, cpu: Trace | None,
                  frame_id: str) -> None:
    period = int(1e9 / rate)
    start = 1_700_000_000 * 1_000_000_000
    duration = (len(files) - 1) / rate
    for i, path in enumerate(files):
        t = start + i * period
        header = writer.header(t, frame_id)
        rgb = read_rgb(path)
        if compressed:
            ok, jpeg = cv2.imencode('.jpg', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                                    [cv2.IMWRITE_JPEG_QUALITY, 95])
            writer.compressed(IMAGE_TOPIC + '/compressed', t, header, jpeg.tobytes(),
                              'rgb8; jpeg compressed bgr8')
        else:
            writer.image(IMAGE_TOPIC, t, header, rgb, 'rgb8')
        if path.stem in label_files:
            lbl = cv2.imread(str(label_files[path.stem]), cv2.IMREAD_UNCHANGED)
            if lbl is None or lbl.ndim != 2:
                raise BagError(f'label {label_files[path.stem]} is not a mono8 image')
            writer.image(LABEL_TOPIC, t, header, lbl.astype(np.uint8), 'mono8')
        ts = writer.ts.types
        if battery is not None and i % max(1, round(rate / 2)) == 0:
            level = float(np.clip(battery.at(i / rate, duration), 0.0, 1.0))
            msg = ts[BATTERY](
                header=header, voltage=12.0, temperature=25.0, current=-1.0, charge=0.0,
                capacity=0.0, design_capacity=0.0, percentage=level,
                power_supply_status=2, power_supply_health=1, power_supply_technology=2,
                present=True, cell_voltage=np.zeros(0, np.float32),
                cell_temperature=np.zeros(0, np.float32), location='', serial_number='')
            writer.write(BATTERY_TOPIC, BATTERY, t, msg)
        if cpu is not None and i % max(1, round(rate / 2)) == 0:
            writer.write(CPU_TOPIC, FLOAT32, t,
                         ts[FLOAT32](data=float(cpu.at(i / rate, duration))))
