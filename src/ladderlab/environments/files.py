"""Reading files and directories out of a container: the one bounded way.

Everything ladderlab reads from a container (a lab host's config for a check,
the sandbox's executed notebook and answers, an sshd host key) goes through
:func:`read_path`, which asks the Docker API for an archive of the path (no
binary inside the container runs) and is hostile-input safe:

* the size the engine reports is checked *before* a byte of content is
  read, and the stream is never read past ``limit`` (plus tar framing): a
  sparse 4 GB file costs nothing;
* a symlink is never followed implicitly: it comes back as
  ``kind="symlink"`` with its target; ``follow=True`` resolves it (at most
  :data:`MAX_LINKS` hops, each hop read the same bounded way);
* a fifo, socket or device is ``kind="special"`` with no content (reading it
  could block or never end); a directory's archive is bounded as a whole.

The learner is root in their hosts and can make any path anything, so an
oversized or special file is the learner's state, reported as such
(:class:`TooLarge`), never a crash of the grader.
"""

from __future__ import annotations

import io
import posixpath
import tarfile
from dataclasses import dataclass
from typing import Any

import docker
from docker.errors import NotFound

from ladderlab.errors import EnvError, LearnerState

#: Default limit on a file's bytes; a directory archive may hold ``limit`` of content in all.
DEFAULT_LIMIT = 1 << 20
MAX_LINKS = 8
_TAR_SLACK = 64 * 1024  # headers and padding around the content

# Go's os.FileMode type bits, as the engine reports them in the path stat header.
_DIR, _SYMLINK, _DEVICE, _PIPE, _SOCKET, _CHARDEV, _IRREGULAR = (
    1 << 31, 1 << 27, 1 << 26, 1 << 25, 1 << 24, 1 << 21, 1 << 19)


class TooLarge(LearnerState):
    """The path holds more than the reader's limit (the container's state, not a fault of ours)."""


@dataclass(frozen=True)
class Entry:
    """What a path in a container is. ``data`` is set for regular files (and, for directories, empty)."""

    path: str
    kind: str  # "file", "dir", "symlink", "special"
    size: int
    mode: int  # permission bits
    data: bytes = b""
    target: str = ""  # a symlink's target


def _kind(mode: int) -> str:
    if mode & _DIR:
        return "dir"
    if mode & _SYMLINK:
        return "symlink"
    if mode & (_DEVICE | _PIPE | _SOCKET | _CHARDEV | _IRREGULAR):
        return "special"
    return "file"


def _open(client: docker.DockerClient, container: str, path: str) -> tuple[Any, dict[str, Any]]:
    """The engine's streaming response for ``path``'s archive and its stat header (NotFound if absent)."""
    api = client.api
    res = api._get(api._url("/containers/{0}/archive", container), params={"path": path}, stream=True,
                   headers={"Accept-Encoding": "identity"})
    api._raise_for_status(res)
    from docker.utils import decode_json_header

    raw = res.headers.get("x-docker-container-path-stat")
    return res, (decode_json_header(raw) if raw else {})


def _read_capped(res: Any, cap: int, what: str) -> bytes:
    buf = bytearray()
    try:
        for chunk in res.iter_content(64 * 1024, decode_unicode=False):
            buf += chunk
            if len(buf) > cap:
                raise TooLarge(f"{what} holds more than {cap - _TAR_SLACK} bytes")
    finally:
        res.close()
    return bytes(buf)


def stat_path(client: docker.DockerClient, container: str, path: str) -> Entry | None:
    """What ``path`` is (kind, size, mode, link target) without reading any content; None if absent."""
    try:
        res, stat = _open(client, container, path)
    except NotFound:
        return None
    res.close()
    mode = int(stat.get("mode", 0))
    return Entry(path, _kind(mode), int(stat.get("size", 0)), mode & 0o7777, target=str(stat.get("linkTarget", "")))


def read_path(client: docker.DockerClient, container: str, path: str, *, limit: int = DEFAULT_LIMIT,
              follow: bool = False) -> Entry | None:
    """Read ``path`` from ``container`` (None if absent); :class:`TooLarge` past ``limit`` bytes.

    A regular file comes back with its bytes; a symlink as itself unless ``follow``; anything
    else without content. Engine errors other than not-found propagate (the caller's fault line).
    """
    for _ in range(MAX_LINKS + 1):
        try:
            res, stat = _open(client, container, path)
        except NotFound:
            return None
        mode, size = int(stat.get("mode", 0)), int(stat.get("size", 0))
        kind = _kind(mode)
        if kind == "symlink":
            res.close()
            target = str(stat.get("linkTarget", ""))
            if not follow:
                return Entry(path, "symlink", 0, mode & 0o7777, target=target)
            path = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
            continue
        if kind == "special":
            res.close()
            return Entry(path, "special", 0, mode & 0o7777)
        if kind == "file" and size > limit:
            res.close()
            raise TooLarge(f"{path} is {size} bytes, over the limit of {limit}")
        raw = _read_capped(res, limit + _TAR_SLACK, path)
        if kind == "dir":
            return Entry(path, "dir", len(raw), mode & 0o7777, data=raw)
        data = _first_file(raw, limit, path)
        return Entry(path, "file", len(data), mode & 0o7777, data=data)
    raise TooLarge(f"{path}: more than {MAX_LINKS} symlinks to follow")


def _first_file(raw: bytes, limit: int, path: str) -> bytes:
    try:
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            member = tar.next()
            if member is None or not member.isfile():
                return b""
            if member.size > limit:
                raise TooLarge(f"{path} is {member.size} bytes, over the limit of {limit}")
            fh = tar.extractfile(member)
            return fh.read(limit) if fh else b""
    except tarfile.TarError as exc:
        raise EnvError(f"the engine's archive of {path} is unreadable: {exc}") from None


def read_bytes(client: docker.DockerClient, container: str, path: str, *, limit: int = DEFAULT_LIMIT,
               follow: bool = True) -> bytes | None:
    """A regular file's bytes (following symlinks by default), or None when absent or not a regular file."""
    entry = read_path(client, container, path, limit=limit, follow=follow)
    return entry.data if entry is not None and entry.kind == "file" else None


def list_files(client: docker.DockerClient, container: str, path: str, *,
               limit: int = DEFAULT_LIMIT) -> dict[str, bytes]:
    """Regular files directly inside directory ``path`` (name -> bytes); symlinks and specials skipped.

    The whole directory's archive is bounded by ``limit`` (TooLarge past it).
    """
    entry = read_path(client, container, path, limit=limit, follow=True)
    if entry is None or entry.kind != "dir":
        return {}
    out: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(entry.data)) as tar:
            for member in tar.getmembers():
                parts = member.name.split("/")
                if member.isfile() and len(parts) == 2 and member.size <= limit:
                    fh = tar.extractfile(member)
                    if fh is not None:
                        out[parts[1]] = fh.read(limit)
    except tarfile.TarError as exc:
        raise EnvError(f"the engine's archive of {path} is unreadable: {exc}") from None
    return out


def owner(client: docker.DockerClient, container: str, path: str) -> tuple[int, int, int, int] | None:
    """(mode, uid, gid, size) of ``path`` from the first tar header of its archive; None if absent.

    Reads at most one header block whatever the path holds.
    """
    try:
        res, _ = _open(client, container, path)
    except NotFound:
        return None
    try:  # the first member's headers (a pax header first for long names), never the content
        head = bytearray()
        for chunk in res.iter_content(512, decode_unicode=False):
            head += chunk
            if len(head) >= 8 * 512:
                break
    finally:
        res.close()
    try:
        with tarfile.open(fileobj=io.BytesIO(bytes(head) + b"\0" * 1024), mode="r|") as tar:
            info = tar.next()
    except tarfile.TarError:
        return None
    if info is None:
        return None
    return info.mode & 0o7777, info.uid, info.gid, info.size
