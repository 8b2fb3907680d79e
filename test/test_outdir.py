"""Output folders: only ee-seg's own output is ever replaced, inputs and the user's folders
are refused before anything is touched, and a failed run leaves the old output in place."""

import os
from pathlib import Path

import pytest

from ee_seg_ros.outdir import (MARKER, OutputError, check_out, is_ours, make_output_dir,
                               remove_ours, staged_output, write_text_atomic)


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None
            for p in sorted(root.rglob('*'))}


def test_a_new_output_is_marked_and_appears_only_when_the_run_ends(tmp_path):
    out = tmp_path / 'a' / 'out'
    with staged_output(out, command='replay') as tmp:
        assert not out.exists() and is_ours(tmp)
        (tmp / 'report.json').write_text('{}')
    assert is_ours(out) and (out / 'report.json').read_text() == '{}'
    assert sorted(p.name for p in out.parent.iterdir()) == ['out']   # no staging left


def test_overwrite_replaces_only_our_own_folders(tmp_path):
    out = tmp_path / 'out'
    with staged_output(out) as tmp:
        (tmp / 'old.txt').write_text('old')
    with pytest.raises(OutputError, match='exists; choose another or pass --overwrite'):
        check_out(out)
    with staged_output(out, overwrite=True) as tmp:
        (tmp / 'new.txt').write_text('new')
    assert not (out / 'old.txt').exists() and (out / 'new.txt').read_text() == 'new'

    mine = tmp_path / 'mine'
    mine.mkdir()
    (mine / 'thesis.tex').write_text('precious')
    before = _tree(mine)
    with pytest.raises(OutputError, match='not made by ee-seg'):
        with staged_output(mine, overwrite=True):
            pytest.fail('must be refused before the block runs')
    assert _tree(mine) == before
    with pytest.raises(OutputError, match='not made by ee-seg'):
        remove_ours(mine)
    assert _tree(mine) == before

    empty = tmp_path / 'empty'          # an empty folder loses nothing
    empty.mkdir()
    with staged_output(empty, overwrite=True) as tmp:
        (tmp / 'x').write_text('x')
    assert is_ours(empty)


def test_a_file_or_a_link_is_never_replaced(tmp_path):
    f = tmp_path / 'notes.txt'
    f.write_text('keep')
    with pytest.raises(OutputError, match='not a folder'):
        check_out(f, overwrite=True)
    target = tmp_path / 'target'
    make_output_dir(target)
    link = tmp_path / 'link'
    link.symlink_to(target)
    with pytest.raises(OutputError, match='symbolic link'):
        check_out(link, overwrite=True)
    assert f.read_text() == 'keep' and is_ours(target)
    # a marker that is a link to somewhere else does not make a folder ours
    fake = tmp_path / 'fake'
    fake.mkdir()
    (fake / MARKER).symlink_to(target / MARKER)
    assert not is_ours(fake)


def test_inputs_and_the_users_places_are_refused(tmp_path, monkeypatch):
    bag = tmp_path / 'bag'
    bag.mkdir()
    (bag / 'metadata.yaml').write_text('x')
    for out, why in [(bag, 'is the input'), (tmp_path, 'contains the input'),
                     (bag / 'report', 'lies inside the input')]:
        with pytest.raises(OutputError, match=why):
            check_out(out, [bag], overwrite=True)
    # the same, spelled differently: relative, with '..', through a link
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OutputError, match='is the input'):
        check_out('sub/../bag', [str(bag)], overwrite=True)
    (tmp_path / 'bag_link').symlink_to(bag)
    with pytest.raises(OutputError, match='lies inside the input'):
        check_out(tmp_path / 'bag_link' / 'r', [bag])
    work = tmp_path / 'work'
    work.mkdir()
    monkeypatch.chdir(work)
    for out, why in [('.', 'is the working directory'), ('..', 'contains the working'),
                     ('/', 'is the root folder'), (str(Path.home()), 'the home directory')]:
        with pytest.raises(OutputError, match=why):
            check_out(out, overwrite=True)
    assert (bag / 'metadata.yaml').read_text() == 'x'


def test_a_failed_run_keeps_the_old_output_and_leaves_nothing_behind(tmp_path):
    out = tmp_path / 'out'
    with staged_output(out) as tmp:
        (tmp / 'report.json').write_text('old')
    with pytest.raises(RuntimeError):
        with staged_output(out, overwrite=True) as tmp:
            (tmp / 'report.json').write_text('half')
            raise RuntimeError('the run failed')
    assert (out / 'report.json').read_text() == 'old'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['out']


def test_a_writer_that_creates_its_own_folder(tmp_path):
    out = tmp_path / 'bag'
    with staged_output(out, make=False, command='bag-from-images') as tmp:
        assert not tmp.exists()
        tmp.mkdir()
        (tmp / 'metadata.yaml').write_text('m')
    assert is_ours(out) and (out / 'metadata.yaml').read_text() == 'm'
    with pytest.raises(OutputError, match='nothing was written'):
        with staged_output(tmp_path / 'none', make=False):
            pass
    assert not (tmp_path / 'none').exists()


def test_write_text_atomic_replaces_whole_files(tmp_path):
    path = tmp_path / 'summary.json'
    write_text_atomic(path, 'one')
    write_text_atomic(path, 'two')
    assert path.read_text() == 'two' and os.listdir(tmp_path) == ['summary.json']
