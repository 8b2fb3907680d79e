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


@dataclass(frozen=True)
class BagMessage:
    topic: str
    msgtype: str
    time_ns: int           # receive (log) time
    msg: Any


class BagReader:
    """A bag opened for replay: its topics, and its messages in time order."""

    def __init__(self, path: str | Path) -> None:
        from rosbags.highlevel import AnyReader
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
            self.reader = AnyReader([self.path], default_typestore=typestore())
            self.reader.open()
        except Exception as err:  # rosbags raises several error types for broken bags
            raise BagError(f'cannot read bag {self.path}: {err}') from None
        self.topics = {c.topic: c.msgtype for c in self.reader.connections}
        if self.reader.message_count == 0 and not holds_messages(self.reader):
            self.close()
            raise BagError(f'bag {self.path} holds no messages')

    def close(self) -> None:
        self.reader.close()

    def __enter__(self) -> 'BagReader':
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def describe(self) -> str:
        return ', '.join(f'{t} ({m})' for t, m in sorted(self.topics.items())) or 'none'

    def require(self, topic: str, types: tuple[str, ...], what: str) -> str:
        if topic not in self.topics:
            raise BagError(f'{what} topic {topic!r} is not in {self.path}; its topics: '
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

    def messages(self, topics: list[str]) -> Iterator[BagMessage]:
        """Messages of ``topics`` in time order. A message that does not deserialise is
        yielded with ``msg=None`` so the caller can count it."""
        conns = [c for c in self.reader.connections if c.topic in topics]
        try:
            for conn, t, raw in self.reader.messages(connections=conns):
                try:
                    msg = self.reader.deserialize(raw, conn.msgtype)
                except Exception:  # corrupt payload: counted by the caller
                    msg = None
                yield BagMessage(conn.topic, conn.msgtype, t, msg)
        except Exception as err:  # a truncated file fails while reading
            raise BagError(f'bag {self.path} is truncated or corrupt: {err}') from None


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
