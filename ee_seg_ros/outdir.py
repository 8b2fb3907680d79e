"""Output folders that can never cost a user a file they made.

Every command that writes a folder (``ee-seg replay``, ``score``, ``bag-from-images``,
``demo``) goes through this module, so one set of rules holds everywhere:

- An output folder carries a marker file, ``.ee-seg-output``, from the moment it appears.
  ``--overwrite`` replaces only a folder that carries the marker (or an empty folder); any
  other existing path is refused and left as it is. Nothing else in the package deletes.
- ``--out`` is refused, before anything is touched, when it is ``/``, the working directory,
  the home directory or a folder above one of them, when it is a symbolic link, or when it
  is, contains or lies inside one of the command's inputs (a bag, an image or labels folder,
  a model bundle).
- The new contents are written into a hidden folder beside ``--out`` and renamed into place
  only when the command has finished, so a failed or interrupted run leaves neither a half
  output nor a missing old one; the hidden folder is removed on failure.

API (all paths may be ``str`` or ``Path``)::

    check_out(out, inputs=(), overwrite=False)      -> Path   # raise OutputError or return out
    with staged_output(out, inputs=(), overwrite=False, command='replay') as tmp:
        ...write everything into tmp (a marked, empty folder)...
    # here out holds what was written into tmp; the old out (ours) is gone
    with staged_output(out, ..., make=False) as tmp:  # tmp does not exist yet: a writer
        ...                                            # that must create it (rosbags Writer)
    make_output_dir(path, command)                  -> Path   # a new marked folder (sub-folders)
    is_ours(path)                                   -> bool
    remove_ours(path)                                         # rmtree, only a marked folder
    write_text_atomic(path, text)                             # temp file + rename

``OutputError`` is a ``ValueError``, so the command line prints it as one line.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

MARKER = '.ee-seg-output'
_HOLDER_PREFIX = '.ee-seg-tmp-'


class OutputError(ValueError):
    """An output path this package will not write to or replace; the message says why."""


def _resolved(path: str | Path) -> Path:
    # no expanduser: a '~' that reaches us unexpanded names a folder '~', as it does for mkdir
    return Path(os.path.abspath(str(path))).resolve()


def _within(inner: Path, outer: Path) -> bool:
    """``inner`` is ``outer`` or lies somewhere below it."""
    return inner == outer or outer in inner.parents


def is_ours(path: str | Path) -> bool:
    """A real folder (not a link) that carries this package's marker file."""
    path = Path(path)
    marker = path / MARKER
    return (path.is_dir() and not path.is_symlink() and marker.is_file()
            and not marker.is_symlink())


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


def _mark(path: Path, command: str) -> None:
    (path / MARKER).write_text(
        f'Written by ee-seg {command}. ee-seg --overwrite replaces only folders that hold '
        'this file; delete the file to keep ee-seg from ever replacing this folder.\n')


def check_out(out: str | Path, inputs: Iterable[str | Path | None] = (),
              overwrite: bool = False) -> Path:
    """Refuse an ``out`` that must not be written or replaced; returns ``out`` as a Path.

    ``inputs`` are the paths the command reads (``None`` entries are skipped)."""
    out = Path(out)
    name = str(out)
    if out.is_symlink():
        raise OutputError(f'--out {name} is a symbolic link; give the folder itself')
    target = _resolved(out)
    protected = [(Path('/'), 'the root folder'), (_resolved(os.getcwd()), 'the working directory')]
    try:
        protected.append((_resolved(Path.home()), 'the home directory'))
    except (RuntimeError, KeyError):     # no home directory known: nothing to protect there
        pass
    for place, what in protected:
        if target == place:
            raise OutputError(f'--out {name} is {what}; give a new folder for the output')
        if _within(place, target):
            raise OutputError(f'--out {name} contains {what}; give a new folder for the output')
    for inp in inputs:
        if inp is None or str(inp) == '':
            continue
        src = _resolved(inp)
        if target == src:
            raise OutputError(f'--out {name} is the input {inp}; give a new folder for the output')
        if _within(src, target):
            raise OutputError(f'--out {name} contains the input {inp}; give a new folder')
        if _within(target, src):
            raise OutputError(f'--out {name} lies inside the input {inp}; give a folder '
                              'outside it')
    if out.exists():
        if not out.is_dir():
            raise OutputError(f'--out {name} exists and is not a folder; it is left as it is')
        if not overwrite:
            raise OutputError(f'output folder {name} exists; choose another or pass --overwrite')
        if not (is_ours(out) or _is_empty_dir(out)):
            raise OutputError(f'output folder {name} exists and was not made by ee-seg (it has '
                              f'no {MARKER} file); --overwrite replaces only ee-seg output, so '
                              'choose another --out')
    return out


def make_output_dir(path: str | Path, command: str = 'ee-seg') -> Path:
    """A new folder with the marker (parents as needed); refuses one that exists."""
    path = Path(path)
    path.mkdir(parents=True)
    _mark(path, command)
    return path


def remove_ours(path: str | Path) -> None:
    """Delete a folder this package made; anything else is refused, not deleted."""
    path = Path(path)
    if not is_ours(path):
        raise OutputError(f'{path} was not made by ee-seg (no {MARKER} file); not deleting it')
    shutil.rmtree(path)


@contextmanager
def staged_output(out: str | Path, inputs: Iterable[str | Path | None] = (),
                  overwrite: bool = False, command: str = 'ee-seg',
                  make: bool = True) -> Iterator[Path]:
    """Write a command's output beside ``out`` and rename it into place on success.

    Yields the folder to write into: an empty marked folder, or with ``make=False`` a path
    that does not exist yet (for writers that insist on creating their folder); the marker
    is added when the block ends. ``out`` is checked (``check_out``) before anything is
    created, and again before it is replaced."""
    out = check_out(out, inputs, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    holder = Path(tempfile.mkdtemp(prefix=_HOLDER_PREFIX + out.name + '-', dir=out.parent))
    staging = holder / out.name
    try:
        if make:
            make_output_dir(staging, command)
        yield staging
        if not staging.is_dir():
            raise OutputError(f'nothing was written for {out}')
        if not is_ours(staging):
            _mark(staging, command)
        replaced = None
        if out.exists() or out.is_symlink():
            check_out(out, (), overwrite)         # still ours, or empty: move it aside
            replaced = holder / 'replaced'
            os.replace(out, replaced)
        try:
            os.replace(staging, out)
        except BaseException:
            if replaced is not None:
                os.replace(replaced, out)         # put the old output back
            raise
    finally:
        shutil.rmtree(holder, ignore_errors=True)   # made by mkdtemp above: ours alone


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename,
    so a reader never sees half a file and an interrupted write keeps the old one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    try:
        with os.fdopen(fd, 'w') as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
