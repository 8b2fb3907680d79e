"""Checks on a bag that rosbags does not make for us, so a user reads what is wrong with the
bag rather than what went wrong inside the reader (an empty ``metadata.yaml`` otherwise gives
"'NoneType' object is not subscriptable")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def metadata_problem(folder: Path) -> str | None:
    """What makes a rosbag2 folder's ``metadata.yaml`` unusable (empty, not YAML, not
    rosbag2's), in one line; ``None`` when it looks like rosbag2 metadata."""
    meta = folder / 'metadata.yaml'
    hint = (f'(a recording that did not finish? `ros2 bag reindex {folder}` rebuilds the '
            'metadata from the storage files)')
    try:
        data = yaml.safe_load(meta.read_text(errors='replace'))
    except yaml.YAMLError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return f'{meta} is not YAML ({first}) {hint}'
    if data is None:
        return f'{meta} is empty {hint}'
    info = data.get('rosbag2_bagfile_information') if isinstance(data, dict) else None
    if not isinstance(info, dict):
        return f'{meta} is not rosbag2 metadata (no rosbag2_bagfile_information) {hint}'
    return None


def holds_messages(reader: Any) -> bool:
    """Whether an open rosbags reader yields at least one message. Metadata counts are not
    trusted: a bag whose recorder stopped early or was reindexed can count 0 and hold many."""
    try:
        return next(iter(reader.messages()), None) is not None
    except Exception:  # corrupt storage: reading the messages reports it, with the bag's name
        return True
