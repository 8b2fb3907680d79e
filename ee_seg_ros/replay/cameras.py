"""Which cameras a bag holds: their image topics, names and label topics.

By default replay segments every colour camera of the bag (a raw ``Image`` topic and its
``/compressed`` twin are one camera: the raw one is taken), never a depth image or a labels
topic. Each camera gets a short name from its topic (``/front/image_raw`` -> ``front``), used
for its report section and its topics in the output bag, as the node's ``cameras`` names are.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from .bagio import BagReader

IMAGE_WORDS = ('image_raw', 'image_rect_color', 'image_rect', 'image_color', 'image')


@dataclass(frozen=True)
class CameraTopics:
    name: str
    image: str
    labels: str | None


def _namespace(topic: str) -> str:
    """'/front/image_raw/compressed' -> '/front'; '/cam/rgb' -> '/cam'."""
    t = topic.rstrip('/')
    if t.endswith('/compressed'):
        t = t[: -len('/compressed')]
    head, tail = posixpath.split(t)
    return head if tail.startswith('image') or tail in ('rgb', 'color', 'colour') else t


def camera_names(topics: list[str]) -> list[str]:
    """Short unique names: the camera's namespace, its last part when that is unique."""
    spaces = [_namespace(t).strip('/') or 'camera' for t in topics]
    last = [s.rsplit('/', 1)[-1] for s in spaces]
    names = last if len(set(last)) == len(last) else [s.replace('/', '_') for s in spaces]
    if len(set(names)) != len(names):
        names = [t.strip('/').replace('/', '_') for t in topics]
    return names


def colour_camera_topics(bag: BagReader) -> list[str]:
    """Every colour camera topic of the bag (mono when it has no colour one); refused with a
    message saying so when the only images are depth images or labels."""
    kinds = {t.topic: t.kind for t in bag.image_topics()}   # by name and first frame
    colour = sorted(t for t, k in kinds.items() if k == 'colour')
    chosen = colour or sorted(t for t, k in kinds.items() if k == 'mono')
    if not chosen:
        return [bag.camera_topic().topic]   # refuses depth-only bags, saying so
    raw = set(chosen)
    return [t for t in chosen if not (t.endswith('/compressed')
                                      and t[: -len('/compressed')] in raw)]


def label_topic_for(image: str, label_topics: list[str], single: bool) -> str | None:
    """The labels topic of a camera: one in the camera's namespace (``/front/labels`` for
    ``/front/image_raw``); with one camera, any labels topic."""
    space = _namespace(image)
    same = [t for t in label_topics if posixpath.dirname(t.rstrip('/')) == space]
    if same:
        return sorted(same)[0]
    if single and label_topics:
        return sorted(label_topics)[0]
    return None
