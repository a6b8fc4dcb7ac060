"""The control socket's place (a private runtime dir, one socket per profile and
data dir) and its request checks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fleet.headless.control.address import (ControlUnavailable, runtime_dir, socket_key,
                                            socket_path)
from fleet.headless.control.wire import check_request, request_frame, text_frames
from fleet.sites.protocol import MAX_FRAME, ProtocolError, encode


@pytest.fixture
def runtime(tmp_path, monkeypatch) -> Path:
    base = tmp_path / "rt"
    base.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(base))
    return base


def test_socket_lives_in_a_private_dir_under_xdg_runtime_dir(runtime, tmp_path):
    path = socket_path(tmp_path / "lab.yaml", tmp_path / "data", create=True)
    assert path.parent == runtime / "fleet" and path.name.startswith("lab-")
    assert oct(os.stat(path.parent).st_mode & 0o777) == "0o700"


def test_without_xdg_runtime_dir_a_per_uid_dir_in_tmp(monkeypatch):
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    assert runtime_dir() == Path(f"/tmp/fleet-{os.getuid()}")


def test_two_profiles_or_two_data_dirs_never_share_a_socket(runtime, tmp_path):
    a = socket_path(tmp_path / "a" / "p.yaml", tmp_path / "data", create=True)
    b = socket_path(tmp_path / "b" / "p.yaml", tmp_path / "data")
    c = socket_path(tmp_path / "a" / "p.yaml", tmp_path / "data2")
    assert len({a, b, c}) == 3
    # the same file named two ways is one profile
    (tmp_path / "a").mkdir()
    assert socket_key(tmp_path / "a" / ".." / "a" / "p.yaml", tmp_path / "data") == \
        socket_key(tmp_path / "a" / "p.yaml", tmp_path / "data")


def test_a_dir_others_can_enter_or_not_ours_is_not_used(runtime, tmp_path):
    socket_path(tmp_path / "p.yaml", tmp_path / "data", create=True)
    os.chmod(runtime / "fleet", 0o755)
    with pytest.raises(ControlUnavailable, match="open to others"):
        socket_path(tmp_path / "p.yaml", tmp_path / "data")
    os.chmod(runtime / "fleet", 0o700)
    if os.geteuid() == 0:  # root can give it away, as another user's dir would be
        os.chown(runtime / "fleet", 65534, 65534)
        with pytest.raises(ControlUnavailable, match="belongs to uid 65534"):
            socket_path(tmp_path / "p.yaml", tmp_path / "data")


def test_a_runtime_dir_too_deep_for_a_unix_socket_is_refused(tmp_path, monkeypatch):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(deep))
    with pytest.raises(ControlUnavailable, match="too long"):
        socket_path(tmp_path / "p.yaml", tmp_path / "data", create=True)


def test_request_checks():
    good = request_frame("k" * 16, ["exec", "web1"], ["echo", "a\tb\nc"], False)
    assert check_request(good).command == ["echo", "a\tb\nc"]
    for bad, why in [({**good, "argv": "machines"}, "argv must be a list"),
                     ({**good, "argv": ["a", 1]}, "argv must be a list"),
                     ({**good, "command": ["a\0b"]}, "NUL"),
                     ({**good, "cwd": "relative"}, "absolute"),
                     ({**good, "read_only": "no"}, "true or false"),
                     ({**good, "key": ""}, "key must be"),
                     ({**good, "extra": 1}, "unknown field"),
                     ({**good, "control": 2}, "is not 1")]:
        with pytest.raises(ProtocolError, match=why):
            check_request(bad)


def test_output_of_any_size_fits_in_frames():
    text = "\x01" * (TEXT := 300_000)  # escapes to 6 bytes each in JSON
    frames = text_frames("out", text)
    assert "".join(f["out"] for f in frames) == text and len(frames) == -(-TEXT // 65536)
    assert all(len(encode(f)) < MAX_FRAME for f in frames)
