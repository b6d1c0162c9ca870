"""Tests for shrewd_tf.io: atomic files and staged directories, on the local
file system and on TensorFlow's in-memory `ram://` file system."""

import json
import os
import uuid

import pytest
import tensorflow as tf

from shrewd_tf import io as io_lib


def _umask():
    umask = os.umask(0)
    os.umask(umask)
    return umask


@pytest.fixture
def ram_dir():
    """A fresh folder of TF's in-memory file system (a non-local path)."""
    path = f"ram://shrewd-io-{uuid.uuid4().hex[:8]}"
    yield path
    if tf.io.gfile.exists(path):
        tf.io.gfile.rmtree(path)


def _gfile_tree(root):
    """{relative path: bytes} of every file under `root` (any file system)."""
    files = {}
    for directory, _, names in tf.io.gfile.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            with tf.io.gfile.GFile(path, "rb") as f:
                files[os.path.relpath(path, root)] = f.read()
    return files


# === Local files ===


def test_writes_text_bytes_and_json_with_the_usual_mode(tmp_path):
    text_path = tmp_path / "a" / "b" / "notes.txt"
    io_lib.write_text_atomically(text_path, "héllo\n")
    io_lib.write_bytes_atomically(tmp_path / "blob.bin", b"\x00\xff")
    io_lib.write_json_atomically(
        str(tmp_path / "m.json"), {"b": 1, "a": [1.5]}, sort_keys=True
    )
    assert text_path.read_text(encoding="utf-8") == "héllo\n"
    assert (tmp_path / "blob.bin").read_bytes() == b"\x00\xff"
    text = (tmp_path / "m.json").read_text()
    assert text.endswith("}\n") and text.index('"a"') < text.index('"b"')
    assert json.loads(text) == {"a": [1.5], "b": 1}
    assert (text_path.stat().st_mode & 0o777) == 0o666 & ~_umask()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a", "blob.bin", "m.json"
    ]


def test_a_failed_write_keeps_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "model.keras"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="crash"):
        with io_lib.atomic_path(path) as temp:
            assert temp.endswith(".keras")  # writers that read the suffix
            assert os.path.dirname(temp) == str(tmp_path)
            with open(temp, "w") as f:
                f.write("half")
            raise RuntimeError("crash")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["model.keras"]
    with pytest.raises(TypeError):
        io_lib.write_json_atomically(path, {"x": object()})
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["model.keras"]


def test_atomic_path_replaces_and_fsyncs_file_and_directory(
    tmp_path, monkeypatch
):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(
        io_lib.os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd)
    )
    with io_lib.atomic_path(tmp_path / "fig.png") as temp:
        with open(temp, "wb") as f:
            f.write(b"png")
    assert (tmp_path / "fig.png").read_bytes() == b"png"
    assert len(synced) == 2  # the file, then its directory
    io_lib.write_text_atomically(tmp_path / "x.txt", "x", fsync=False)
    assert len(synced) == 2


# === Local directories ===


def test_staged_directory_creates_then_replaces_a_folder(tmp_path):
    target = tmp_path / "corpus"
    with io_lib.staged_directory(target) as staging:
        assert os.path.dirname(staging) == str(tmp_path)
        os.makedirs(os.path.join(staging, "sub"))
        with open(os.path.join(staging, "sub", "f"), "w") as f:
            f.write("1")
        assert not target.exists()
    assert (target / "sub" / "f").read_text() == "1"
    assert (os.stat(target).st_mode & 0o777) == 0o777 & ~_umask()
    with io_lib.staged_directory(target) as staging:
        with open(os.path.join(staging, "g"), "w") as f:
            f.write("2")
    assert sorted(os.listdir(target)) == ["g"]
    assert os.listdir(tmp_path) == ["corpus"]  # no staging or aside left


def test_a_failed_staging_leaves_the_old_folder(tmp_path):
    target = tmp_path / "export"
    target.mkdir()
    (target / "saved_model.pb").write_text("old")
    with pytest.raises(RuntimeError):
        with io_lib.staged_directory(target) as staging:
            with open(os.path.join(staging, "saved_model.pb"), "w") as f:
                f.write("half")
            raise RuntimeError("crash")
    assert (target / "saved_model.pb").read_text() == "old"
    assert os.listdir(tmp_path) == ["export"]


def test_replace_false_refuses_an_existing_or_racing_target(
    tmp_path, monkeypatch
):
    target = tmp_path / "7"
    target.mkdir()
    (target / "keep").write_text("k")
    with pytest.raises(FileExistsError, match="already exists"):
        with io_lib.staged_directory(target, replace=False) as staging:
            open(os.path.join(staging, "new"), "w").close()
    assert os.listdir(target) == ["keep"]
    assert os.listdir(tmp_path) == ["7"]
    # Another writer creates the target after the existence check.
    real_lexists = os.path.lexists
    checks = []

    def lexists(path):
        checks.append(path)
        return False if len(checks) == 1 else real_lexists(path)

    monkeypatch.setattr(io_lib.os.path, "lexists", lexists)
    staging = io_lib.make_staging_dir(target)
    open(os.path.join(staging, "new"), "w").close()
    with pytest.raises(FileExistsError, match="appeared"):
        io_lib.replace_directory(staging, target)
    monkeypatch.undo()
    assert os.listdir(target) == ["keep"]
    io_lib.remove_tree(staging)
    assert os.listdir(tmp_path) == ["7"]


# === ram:// (another file system, through tf.io.gfile) ===


def test_ram_files_are_written_through_gfile(ram_dir):
    assert not io_lib.is_local(ram_dir)
    io_lib.write_text_atomically(f"{ram_dir}/a/notes.txt", "héllo")
    io_lib.write_bytes_atomically(f"{ram_dir}/blob", b"\x01")
    io_lib.write_json_atomically(f"{ram_dir}/m.json", {"k": 2})
    io_lib.write_json_atomically(f"{ram_dir}/m.json", {"k": 3})
    assert _gfile_tree(ram_dir) == {
        "a/notes.txt": "héllo".encode(),
        "blob": b"\x01",
        "m.json": b'{\n  "k": 3\n}\n',
    }


def test_ram_failed_write_keeps_the_old_file(ram_dir):
    path = f"{ram_dir}/model.keras"
    io_lib.write_text_atomically(path, "old")
    with pytest.raises(RuntimeError):
        with io_lib.atomic_path(path) as temp:
            assert temp.startswith(ram_dir) and temp.endswith(".keras")
            with tf.io.gfile.GFile(temp, "w") as f:
                f.write("half")
            raise RuntimeError("crash")
    assert _gfile_tree(ram_dir) == {"model.keras": b"old"}


def test_ram_staged_directory_moves_every_file(ram_dir):
    target = f"{ram_dir}/export/3"
    with io_lib.staged_directory(target, replace=False) as staging:
        assert staging.startswith(f"{ram_dir}/export/")
        tf.io.gfile.makedirs(f"{staging}/variables")
        for name in ("saved_model.pb", "variables/v.index"):
            with tf.io.gfile.GFile(f"{staging}/{name}", "wb") as f:
                f.write(name.encode())
    assert _gfile_tree(ram_dir) == {
        "export/3/saved_model.pb": b"saved_model.pb",
        "export/3/variables/v.index": b"variables/v.index",
    }
    with pytest.raises(FileExistsError):
        with io_lib.staged_directory(target, replace=False) as staging:
            io_lib.write_text_atomically(f"{staging}/other", "x")
    with io_lib.staged_directory(target) as staging:
        io_lib.write_text_atomically(f"{staging}/new", "n")
    with pytest.raises(RuntimeError):
        with io_lib.staged_directory(target) as staging:
            io_lib.write_text_atomically(f"{staging}/half", "h")
            raise RuntimeError("crash")
    assert _gfile_tree(ram_dir) == {"export/3/new": b"n"}
    names = tf.io.gfile.listdir(f"{ram_dir}/export")
    assert [name.rstrip("/") for name in names] == ["3"]


@pytest.mark.parametrize("root", ["local", "ram"])
def test_read_helpers_work_locally_and_on_a_scheme(tmp_path, root):
    base = str(tmp_path) if root == "local" else f"ram://io-read-{uuid.uuid4().hex}"
    folder = os.path.join(base, "a", "b")
    assert not io_lib.exists(folder)
    io_lib.makedirs(folder)
    io_lib.makedirs(folder)  # again: fine
    assert io_lib.isdir(folder)
    io_lib.write_text_atomically(os.path.join(folder, "x-2.txt"), "two")
    io_lib.write_bytes_atomically(os.path.join(folder, "x-1.txt"), b"\xffone")
    io_lib.write_text_atomically(os.path.join(folder, "y.txt"), "other")
    matched = io_lib.glob(os.path.join(folder, "x-*.txt"))
    assert [os.path.basename(p) for p in matched] == ["x-1.txt", "x-2.txt"]
    assert io_lib.read_text(matched[1]) == "two"
    assert io_lib.read_bytes(matched[0]) == b"\xffone"
    assert io_lib.exists(matched[0]) and not io_lib.isdir(matched[0])
