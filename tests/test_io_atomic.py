"""smallseg.io.atomic: complete-or-absent writes, one temporary-name scheme, one writer per output."""

import os
import subprocess
import sys
import textwrap

import pytest

from smallseg.errors import SmallsegError
from smallseg.io.atomic import (
    OutputLock,
    atomic_path,
    csv_safe,
    is_partial_name,
    partial_path,
    remove_partials,
    split_extension,
    write_json_atomic,
)


def test_partial_names_keep_the_extension_and_are_recognised(tmp_path):
    for name, ext in [("labels.nii.gz", ".nii.gz"), ("scene.instances.tif", ".tif"), ("README", "")]:
        tmp = partial_path(tmp_path / name)
        assert tmp.parent == tmp_path and tmp.name.endswith(ext) and tmp.name.startswith(".")
        assert is_partial_name(tmp.name)
        assert not is_partial_name(name)
    assert partial_path(tmp_path / "a.tif") != partial_path(tmp_path / "a.tif")  # never shared by two writers
    assert split_extension("x.NII.GZ") == ("x", ".NII.GZ")
    assert not is_partial_name(".hidden") and not is_partial_name("scene.partial-notes.txt")


def test_a_failed_write_leaves_neither_the_file_nor_a_temporary(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    write_json_atomic(target, {"a": 1})
    assert target.read_text() == '{\n  "a": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_remove_partials_removes_exactly_the_leftovers(tmp_path):
    leftover = partial_path(tmp_path / "scene.geojson")
    leftover.write_text("x")
    keep = [tmp_path / "scene.geojson", tmp_path / ".smallseg.lock", tmp_path / "band.3.npz"]
    for path in keep:
        path.write_text("y")
    assert remove_partials(tmp_path) == [leftover]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in keep)


def test_a_second_process_is_refused_while_the_lock_is_held_and_admitted_after(tmp_path):
    lock_file = tmp_path / ".smallseg.lock"
    probe = textwrap.dedent(f"""
        import sys
        from smallseg.errors import SmallsegError
        from smallseg.io.atomic import OutputLock
        try:
            with OutputLock({str(lock_file)!r}, what="OUT"):
                print("acquired")
        except SmallsegError as exc:
            print(exc)
    """)
    with OutputLock(lock_file, what="OUT"):
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
        assert out.strip() == (f"OUT is in use by process {os.getpid()} (another smallseg run writes there); "
                               "wait for it to finish or write to another folder")
        with pytest.raises(SmallsegError, match="in use by process"):
            OutputLock(lock_file).acquire()  # a second lock in the same process is refused too (flock per open)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "acquired"


def test_a_killed_holder_releases_the_lock(tmp_path):
    lock_file = tmp_path / ".lock"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from smallseg.io.atomic import OutputLock
        OutputLock({str(lock_file)!r}).acquire()
        print("held", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SmallsegError, match=f"process {holder.pid}"):
            OutputLock(lock_file).acquire()
    finally:
        holder.kill()
        holder.wait()
    with OutputLock(lock_file):
        pass


def test_lock_in_a_read_only_folder_is_one_line(tmp_path):
    if os.geteuid() == 0:
        missing = tmp_path / "no" / "such" / ".lock"  # root ignores permission bits: use a missing folder
    else:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        missing = ro / ".lock"
    with pytest.raises(SmallsegError, match="cannot write there") as info:
        OutputLock(missing).acquire()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("text", ["=HYPERLINK(\"http://x\")", "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx"])
def test_formula_like_text_is_neutralised(text):
    assert csv_safe(text) == "'" + text


@pytest.mark.parametrize("value", ["-3.5", "1e-3", "car", "1.2.840.10008", -3, 2.5, None, ""])
def test_numbers_and_plain_text_are_unchanged(value):
    assert csv_safe(value) == value
