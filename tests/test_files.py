"""`paradis_tf.files`: the one atomic writer and the one relative-path rule."""

import os
import stat

import pytest

from paradis_tf.files import PathError, atomic_write, atomic_write_json, check_relpath


def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "state.json"
    target.write_text("old")
    atomic_write(target, "new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_private_files_get_mode_600(tmp_path):
    atomic_write(tmp_path / "key.pem", b"secret", mode=0o600)
    assert stat.S_IMODE(os.stat(tmp_path / "key.pem").st_mode) == 0o600


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path):
    target = tmp_path / "manifest.json"
    target.write_text("good")
    with pytest.raises(TypeError):
        atomic_write(target, object())  # fails after the temporary file was created
    assert target.read_text() == "good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


def test_atomic_write_json_ends_with_a_newline(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"b": 1})
    assert (tmp_path / "a.json").read_text() == '{\n  "b": 1\n}\n'


@pytest.mark.parametrize("bad", ["", "/etc/passwd", "../x", "a/../../x", "a//b", "./a", "a/", "a\\b", "a\x00b", None, 3])
def test_check_relpath_refuses_paths_that_leave_their_root(bad):
    with pytest.raises(PathError) as e:
        check_relpath(bad)
    assert repr(bad) in str(e.value)


def test_check_relpath_keeps_good_paths():
    assert check_relpath("switches/2x0.5/device-0/segment-0.tflite") == "switches/2x0.5/device-0/segment-0.tflite"
