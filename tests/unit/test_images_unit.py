from __future__ import annotations

from pathlib import Path

from ladderlab.environments.images import content_hash, host_apt_mirror

DEB822 = """Types: deb
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
"""


def test_mirror_from_deb822_sources(tmp_path):
    d = tmp_path / "etc/apt/sources.list.d"
    d.mkdir(parents=True)
    (d / "debian.sources").write_text(DEB822)
    assert host_apt_mirror(tmp_path) == "http://mirror.example/debian"


def test_mirror_from_one_line_list(tmp_path):
    (tmp_path / "etc/apt").mkdir(parents=True)
    (tmp_path / "etc/apt/sources.list").write_text(
        "# comment\ndeb [arch=amd64] http://other.example/debian bookworm main\n")
    assert host_apt_mirror(tmp_path) == "http://other.example/debian"


def test_no_mirror(tmp_path):
    assert host_apt_mirror(tmp_path) is None


def test_content_hash_tracks_files_ca_and_parent(tmp_path: Path):
    (tmp_path / "Dockerfile").write_text("FROM x\n")
    h = content_hash(tmp_path, b"", "p1")
    assert h == content_hash(tmp_path, b"", "p1")
    assert h != content_hash(tmp_path, b"CA", "p1")
    assert h != content_hash(tmp_path, b"", "p2")
    (tmp_path / "extra").write_text("1")
    assert h != content_hash(tmp_path, b"", "p1")
