"""Reading and writing rosbag2 bags with ``rosbags`` (no ROS install needed).

Reads rosbag2 folders (sqlite3 or mcap, metadata versions 5 to 9) and single ``.db3`` /
``.mcap`` files; writes version 8 sqlite3 (readable by Humble) or version 9 mcap.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .bagcheck import holds_messages, metadata_problem

IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED = 'sensor_msgs/msg/CompressedImage'
BATTERY = 'sensor_msgs/msg/BatteryState'
FLOAT32 = 'std_msgs/msg/Float32'
DIAGNOSTICS = 'diagnostic_msgs/msg/DiagnosticArray'


class BagError(ValueError):
    """A bag that cannot be replayed as asked; the message says why."""


def typestore():
    from rosbags.typesys import Stores, get_typestore
    return get_typestore(Stores.ROS2_JAZZY)


def one_line(err: BaseException) -> str:
    """The first line of an error, so a refusal stays one line (rosbags' parse errors quote
    whole schemas)."""
    text = str(err).strip() or type(err).__name__
    line = text.splitlines()[0].strip()
    return line if len(line) <= 160 else line[:157] + '...'


@dataclass(frozen=True)
class BagMessage:
    topic: str
    msgtype: str
    time_ns: int           # receive (log) time
    msg: Any


@dataclass(frozen=True)
class ImageTopic:
    """An image topic as replay sees it: what its first frame says it holds."""

    topic: str
    msgtype: str
    encoding: str | None   # Image: its encoding; CompressedImage: its format; None: unread
    kind: str              # 'colour', 'mono', 'depth', 'labels', 'other'

    def describe(self) -> str:
        return f'{self.topic} ({self.encoding or self.msgtype.rsplit("/", 1)[-1]})'


def _definitions(conn) -> dict:
    """The types a connection's embedded definition declares (rosbags parse trees)."""
    from rosbags.interfaces import MessageDefinitionFormat
    from rosbags.typesys import get_types_from_idl, get_types_from_msg
    fmt, data = conn.msgdef.format, conn.msgdef.data
    if fmt == MessageDefinitionFormat.MSG:
        return get_types_from_msg(data, conn.msgtype)
    if fmt == MessageDefinitionFormat.IDL:
        sep = '=' * 80 + '\n'
        if not data.startswith(sep + 'IDL: '):
            return get_types_from_idl(data)
        types: dict = {}
        for part in data.split(sep)[1:]:           # 'IDL: pkg/msg/Name\n<idl text>'
            types.update(get_types_from_idl(part.split('\n', 1)[1]))
        return types
    raise ValueError('the bag has no definition for it')


def _unresolved(fielddefs: dict, msgtype: str) -> set[str]:
    """Types that ``msgtype`` uses, directly or through its fields, and nobody defines."""
    from rosbags.typesys.base import Nodetype
    missing: set[str] = set()
    seen: set[str] = set()
    todo = [msgtype]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name not in fielddefs:
            missing.add(name)
            continue
        for _, (node, arg) in fielddefs[name][1]:
            if node in (Nodetype.ARRAY, Nodetype.SEQUENCE):
                node, arg = arg[0]
            if node == Nodetype.NAME:
                todo.append(arg)
    return missing


class BagReader:
    """A bag opened for replay: its topics, and its messages in time order.

    Reads with rosbags' plain ``Reader`` and a Jazzy typestore of our own, registering the
    bag's embedded definitions only for types the store lacks; a connection whose type cannot
    be parsed (a service-event channel from ``ros2 bag record --all-services``, whose schema
    is the raw ``.srv``; an unknown custom type without a usable definition) is left out, so
    the camera in such a bag still replays. ``skipped`` names them with the reason."""

    def __init__(self, path: str | Path) -> None:
        from rosbags.rosbag2 import Reader
        self.path = Path(path)
        if not self.path.exists():
            raise BagError(f'{self.path} does not exist')
        if self.path.is_file() and self.path.suffix not in ('.mcap', '.db3'):
            raise BagError(f'{self.path} is not a bag: expected a rosbag2 folder or a '
                           '.mcap / .db3 file')
        if self.path.is_dir() and not (self.path / 'metadata.yaml').exists():
            raise BagError(f'{self.path} is not a bag: a rosbag2 folder has a metadata.yaml')
        problem = metadata_problem(self.path) if self.path.is_dir() else None
        if problem:
            raise BagError(problem)
        try:
            self.reader = Reader(self.path)
            self.reader.open()
        except Exception as err:  # rosbags raises several error types for broken bags
            raise BagError(f'cannot read bag {self.path}: {one_line(err)}') from None
        self.ts = typestore()
        self.skipped: dict[str, str] = {}          # topic -> why its type cannot be read
        self._verdict: dict[str, str] = {}         # msgtype -> '' or why not
        self.connections = [c for c in self.reader.connections if self._usable(c)]
        self.topics = {c.topic: c.msgtype for c in self.connections}
        if self.reader.message_count == 0 and not holds_messages(self.reader):
            self.close()
            raise BagError(f'bag {self.path} holds no messages')

    def _usable(self, conn) -> bool:
        """Whether messages of this connection can be deserialised; registers its type."""
        if conn.msgtype not in self._verdict:
            self._verdict[conn.msgtype] = self._register(conn)
        why = self._verdict[conn.msgtype]
        if why:
            self.skipped[conn.topic] = f'{conn.msgtype}: {why}'
        return not why

    def _register(self, conn) -> str:
        """'' once the connection's type is known to the typestore, else the reason why not."""
        if conn.msgtype in self.ts.fielddefs:
            return ''
        try:
            types = _definitions(conn)
            self.ts.register({k: v for k, v in types.items() if k not in self.ts.fielddefs})
            if conn.msgtype not in self.ts.fielddefs:
                return 'its definition does not declare it'
        except Exception as err:  # parse errors of several kinds: the type is left out
            return one_line(err)
        missing = _unresolved(self.ts.fielddefs, conn.msgtype)
        if missing:
            return f'it uses {", ".join(sorted(missing))}, which the bag does not define'
        return ''

    def close(self) -> None:
        self.reader.close()

    def __enter__(self) -> 'BagReader':
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def count(self, topic: str) -> int:
        """Messages on a topic, counted without deserialising them."""
        conns = [c for c in self.connections if c.topic == topic]
        return sum(1 for _ in self.reader.messages(connections=conns)) if conns else 0

    def describe(self) -> str:
        return ', '.join(f'{t} ({m})' for t, m in sorted(self.topics.items())) or 'none'

    def require(self, topic: str, types: tuple[str, ...], what: str) -> str:
        if topic not in self.topics:
            why = (f' (left out, its type cannot be read: {self.skipped[topic]})'
                   if topic in self.skipped else '')
            raise BagError(f'{what} topic {topic!r} is not in {self.path}{why}; its topics: '
                           f'{self.describe()}')
        if self.topics[topic] not in types:
            raise BagError(f'{what} topic {topic!r} has type {self.topics[topic]}, expected '
                           f'{" or ".join(types)}')
        return topic

    def pick(self, types: tuple[str, ...], prefer: tuple[str, ...] = ()) -> str | None:
        """The obvious topic of these types: the only one, or one whose name matches."""
        found = sorted(t for t, m in self.topics.items() if m in types)
        for word in prefer:
            for t in found:
                if word in t:
                    return t
        return found[0] if found else None

    # -- the camera ----------------------------------------------------------------------------
    def image_topics(self) -> list[ImageTopic]:
        """Every Image / CompressedImage topic, classified by its name and its first frame."""
        out = []
        for topic, msgtype in sorted(self.topics.items()):
            if msgtype not in (IMAGE, COMPRESSED):
                continue
            first = self._first(topic)
            if msgtype == IMAGE:
                encoding = getattr(first, 'encoding', None)
            else:
                encoding = getattr(first, 'format', None)
            out.append(ImageTopic(topic, msgtype, encoding, _kind(topic, msgtype, encoding)))
        return out

    def _first(self, topic: str) -> Any:
        conns = [c for c in self.connections if c.topic == topic]
        try:
            for conn, _, raw in self.reader.messages(connections=conns):
                return self.ts.deserialize_cdr(raw, conn.msgtype)
        except Exception:  # unreadable first frame: classified by name alone
            return None
        return None

    def camera_topic(self) -> ImageTopic:
        """The topic replay should segment when none is given: a colour camera before a mono
        one, raw Image before CompressedImage, never depth or labels. A bag whose only images
        are depth images is refused, saying so."""
        topics = self.image_topics()
        if not topics:
            raise BagError(f'no Image or CompressedImage topic in {self.path}; its topics: '
                           f'{self.describe()}')
        rank = {'colour': 0, 'mono': 1, 'other': 2}
        usable = [t for t in topics if t.kind in rank]
        if not usable:
            depth = [t.describe() for t in topics if t.kind == 'depth']
            if depth and len(depth) == len(topics):
                raise BagError(f'bag {self.path} holds only depth images ('
                               f'{", ".join(depth)}); replay segments a colour or mono camera')
            raise BagError(f'bag {self.path} has no camera image topic, only '
                           f'{", ".join(t.describe() for t in topics)}; name one with '
                           '--image-topic')
        words = ('color', 'colour', 'rgb', 'image', 'camera')

        def key(t: ImageTopic):
            named = next((i for i, w in enumerate(words) if w in t.topic.lower()), len(words))
            return rank[t.kind], t.msgtype != IMAGE, named, t.topic
        return min(usable, key=key)

    def messages(self, topics: list[str]) -> Iterator[BagMessage]:
        """Messages of ``topics`` in time order. A message that does not deserialise is
        yielded with ``msg=None`` so the caller can count it."""
        conns = [c for c in self.connections if c.topic in topics]
        try:
            for conn, t, raw in self.reader.messages(connections=conns):
                try:
                    msg = self.ts.deserialize_cdr(raw, conn.msgtype)
                except Exception:  # corrupt payload: counted by the caller
                    msg = None
                yield BagMessage(conn.topic, conn.msgtype, t, msg)
        except Exception as err:  # a truncated file fails while reading
            raise BagError(f'bag {self.path} is truncated or corrupt: {one_line(err)}') from None


def _kind(topic: str, msgtype: str, encoding: str | None) -> str:
    """'depth', 'labels', 'colour', 'mono' or 'other' for an image topic."""
    from ..image_codec import COLOUR, DEPTH, MONO
    name = topic.lower()
    enc = (encoding or '').lower()
    if 'depth' in name or (msgtype == IMAGE and encoding in DEPTH) or 'compresseddepth' in enc \
            or enc.split(';')[0].strip() in {e.lower() for e in DEPTH}:
        return 'depth'
    if 'label' in name:
        return 'labels'
    if encoding is None:
        return 'other'
    if msgtype == COMPRESSED:   # format 'jpeg', 'png' or 'rgb8; jpeg compressed bgr8'
        return 'mono' if enc.split(';')[0].strip() in ('mono8', 'mono16') else 'colour'
    if encoding in COLOUR:
        return 'colour'
    if encoding in MONO:
        return 'mono'
    return 'other'


def stamp_ns(msg: Any) -> int:
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


class BagWriter:
    """Writes masks and statistics, keeping the input stamps."""

    def __init__(self, path: Path, storage: str = 'sqlite3') -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer
        if storage not in ('sqlite3', 'mcap'):
            raise BagError(f'storage must be sqlite3 or mcap, got {storage!r}')
        self.ts = typestore()
        version = 8 if storage == 'sqlite3' else 9
        plugin = StoragePlugin.SQLITE3 if storage == 'sqlite3' else StoragePlugin.MCAP
        self.writer = Writer(path, version=version, storage_plugin=plugin)
        self.writer.open()
        self.conns: dict[str, Any] = {}

    def _conn(self, topic: str, msgtype: str):
        if topic not in self.conns:
            self.conns[topic] = self.writer.add_connection(topic, msgtype, typestore=self.ts)
        return self.conns[topic]

    def header(self, stamp: int, frame_id: str):
        T = self.ts.types
        return T['std_msgs/msg/Header'](
            stamp=T['builtin_interfaces/msg/Time'](sec=stamp // 1_000_000_000,
                                                   nanosec=stamp % 1_000_000_000),
            frame_id=frame_id)

    def image(self, topic: str, time_ns: int, header, pixels: np.ndarray,
              encoding: str) -> None:
        pixels = np.ascontiguousarray(pixels)
        msg = self.ts.types[IMAGE](header=header, height=pixels.shape[0],
                                   width=pixels.shape[1], encoding=encoding, is_bigendian=0,
                                   step=pixels.strides[0],
                                   data=pixels.reshape(-1).view(np.uint8))
        self.write(topic, IMAGE, time_ns, msg)

    def compressed(self, topic: str, time_ns: int, header, data: bytes, fmt: str) -> None:
        msg = self.ts.types[COMPRESSED](header=header, format=fmt,
                                        data=np.frombuffer(data, np.uint8))
        self.write(topic, COMPRESSED, time_ns, msg)

    def diagnostics(self, topic: str, time_ns: int, header, name: str, message: str,
                    values: dict) -> None:
        T = self.ts.types
        status = T['diagnostic_msgs/msg/DiagnosticStatus'](
            level=0, name=name, message=message, hardware_id=name,
            values=[T['diagnostic_msgs/msg/KeyValue'](key=str(k), value=str(v))
                    for k, v in values.items()])
        self.write(topic, DIAGNOSTICS, time_ns, T[DIAGNOSTICS](header=header, status=[status]))

    def write(self, topic: str, msgtype: str, time_ns: int, msg: Any) -> None:
        self.write_raw(topic, msgtype, time_ns, self.ts.serialize_cdr(msg, msgtype))

    def write_raw(self, topic: str, msgtype: str, time_ns: int, cdr: bytes) -> None:
        """A message already serialised as ROS 2 sends it (what ``ros2 bag record`` stores)."""
        self.writer.write(self._conn(topic, msgtype), time_ns, cdr)

    def close(self) -> None:
        self.writer.close()
