"""The trusted side of a check: observers, scratch containers and file reads.

An *observer* is a container from ladderlab's own probe image that joins the
network namespace of one lab host (``network_mode=container:<host>``): it
sees the network exactly as that host does (its address, its firewall), but
runs ladderlab's binaries, not the host's. A *scratch* container has no
network at all (for replaying saved rules). Both carry the environment's
labels, so tearing the environment down removes them too.
"""

from __future__ import annotations

import tarfile
import threading
from collections.abc import Callable, Mapping
from typing import Any

import docker
from docker.errors import APIError, NotFound

from ladderlab.environments import labels as L
from ladderlab.environments.runtime import LOG_CONFIG, Environment, read_file, tar_files
from ladderlab.environments.transports import CommandResult, DockerTransport
from ladderlab.errors import EnvError, UsageError
from ladderlab.grading.checks import FileStat, Process, T


class Sidecar:
    """A running trusted container; commands go through docker exec."""

    def __init__(self, client: docker.DockerClient, container: str) -> None:
        self.client = client
        self.container = container
        self.transport = DockerTransport(client, container)

    def run(self, command: str, *args: object, timeout: float | None = None) -> CommandResult:
        return self.transport.run(command, *args, timeout=timeout)

    def put_file(self, path: str, data: bytes) -> None:
        """Write ``path`` (absolute; missing parent directories are created by the archive)."""
        self.client.api.put_archive(self.container, "/", tar_files([(path.lstrip("/"), data, 0o644, 0)]))

    def __repr__(self) -> str:
        return f"<sidecar {self.container}>"


class LiveContext:
    """A :class:`~ladderlab.grading.checks.Context` over a running environment."""

    def __init__(self, env: Environment, probe_image: str, answers: Mapping[str, Any] | None = None) -> None:
        self.env = env
        self.client = env.client
        self.probe_image = probe_image
        self._answers = dict(answers or {})
        self._sidecars: dict[tuple[str, bool], Sidecar] = {}
        self._lock = threading.Lock()
        self._scratch: Sidecar | None = None
        self._key_locks: dict[tuple[str, bool], threading.Lock] = {("", True): threading.Lock()}
        self._memo: dict[str, Any] = {}
        self._memo_locks: dict[str, threading.Lock] = {}

    @property
    def params(self) -> Mapping[str, str | int]:
        return self.env.params

    @property
    def answers(self) -> Mapping[str, Any]:
        return self._answers

    def cached(self, key: str, compute: Callable[[], T]) -> T:
        with self._lock:
            lock = self._memo_locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._memo:
                self._memo[key] = compute()
            value: T = self._memo[key]
            return value

    def set_answers(self, answers: Mapping[str, Any]) -> None:
        self._answers = dict(answers)

    def _info(self, host: str) -> Any:
        try:
            return self.env.record.hosts[host]
        except KeyError:
            raise UsageError(f"environment {self.env.id} has no host {host!r}") from None

    def address(self, host: str) -> str:
        return str(self._info(host).address)

    def _labels(self, name: str) -> dict[str, str]:
        r = self.env.record
        stamp = L.Stamp(r.id, r.env, r.lab, r.learner, r.expires, r.created, L.owner_token())
        labels = stamp.labels(host=name, role="observer")
        labels[L.KIND] = "sidecar"
        return labels

    def _start(self, name: str, network_mode: str, caps: list[str]) -> Sidecar:
        api = self.client.api
        container = f"ll-{self.env.id}-{name}"
        host_config = api.create_host_config(
            cap_drop=["ALL"], cap_add=caps, security_opt=["no-new-privileges:true"], init=True,
            pids_limit=128, mem_limit=256 * 1024 * 1024, memswap_limit=256 * 1024 * 1024,
            network_mode=network_mode, log_config=docker.types.LogConfig(type="json-file", config=LOG_CONFIG))
        try:
            api.create_container(self.probe_image, command=["sleep", "infinity"], name=container,
                                 labels=self._labels(name), host_config=host_config, detach=True)
            api.start(container)
        except (APIError, NotFound) as exc:
            raise EnvError(f"cannot start observer {container}: {getattr(exc, 'explanation', None) or exc}") from None
        return Sidecar(self.client, container)

    def observe(self, host: str, *, admin: bool = False) -> Sidecar:
        """Trusted tools in ``host``'s network namespace (``admin`` adds NET_ADMIN to read netfilter)."""
        info = self._info(host)
        key = (host, admin)
        with self._lock:
            lock = self._key_locks.setdefault(key, threading.Lock())
        with lock:  # one sidecar per (host, admin), created once, others wait for it
            if key not in self._sidecars:
                caps = ["NET_RAW", "NET_ADMIN"] if admin else ["NET_RAW"]
                name = f"obs{'a' if admin else ''}-{host}"
                self._sidecars[key] = self._start(name, f"container:{info.container}", caps)
            return self._sidecars[key]

    def scratch(self) -> Sidecar:
        """An isolated trusted container with its own empty network namespace and NET_ADMIN."""
        with self._key_locks.setdefault(("", True), threading.Lock()):
            if self._scratch is None:
                self._scratch = self._start("scratch", "none", ["NET_ADMIN"])
            return self._scratch

    def warm(self, admin_roles: frozenset[str] = frozenset({"target"})) -> None:
        """Start an observer for every host (and the scratch container) now, in parallel.

        Grading calls this while the sandbox runs, so the checks find them ready. Observers are
        out of the learner's reach: no SSH, no shared process or file namespace with any host.
        """
        from concurrent.futures import ThreadPoolExecutor

        jobs: list[Any] = [lambda: self.scratch()]
        for name, info in self.env.record.hosts.items():
            jobs.append(lambda n=name: self.observe(n))
            if info.role in admin_roles:
                jobs.append(lambda n=name: self.observe(n, admin=True))
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            list(pool.map(lambda job: job(), jobs))

    def tools(self, host: str) -> Sidecar:
        """A fresh container of ``host``'s image, no network: the image's binaries, not the host's.

        The learner may have replaced any binary inside the running host; the image is ladderlab's.
        """
        info = self._info(host)
        key = (f"tools:{host}", False)
        with self._lock:
            lock = self._key_locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._sidecars:
                api = self.client.api
                container = f"ll-{self.env.id}-tools-{host}"
                host_config = api.create_host_config(
                    cap_drop=["ALL"], security_opt=["no-new-privileges:true"], init=True, pids_limit=128,
                    mem_limit=512 * 1024 * 1024, memswap_limit=512 * 1024 * 1024, network_mode="none",
                    log_config=docker.types.LogConfig(type="json-file", config=LOG_CONFIG))
                try:
                    api.create_container(info.image, command=["sleep", "infinity"], name=container,
                                         entrypoint=[], labels=self._labels(f"tools-{host}"),
                                         host_config=host_config, detach=True)
                    api.start(container)
                except (APIError, NotFound) as exc:
                    raise EnvError(f"cannot start {container}: {getattr(exc, 'explanation', None) or exc}") from None
                self._sidecars[key] = Sidecar(self.client, container)
            return self._sidecars[key]

    def read_dir(self, host: str, path: str, limit: int = 1 << 20) -> dict[str, bytes]:
        """Regular files directly inside directory ``path`` of ``host`` (name -> bytes), via the Docker API."""
        import io as _io

        try:
            stream, _ = self.client.api.get_archive(self._info(host).container, path)
        except NotFound:
            return {}
        raw = bytearray()
        for chunk in stream:
            raw += chunk
            if len(raw) > limit:
                raise EnvError(f"{path} on {host} holds more than {limit} bytes")
        out = {}
        with tarfile.open(fileobj=_io.BytesIO(bytes(raw))) as tar:
            for member in tar.getmembers():
                parts = member.name.split("/")
                if member.isfile() and len(parts) == 2:
                    fh = tar.extractfile(member)
                    if fh is not None:
                        out[parts[1]] = fh.read()
        return out

    def stat(self, host: str, path: str) -> FileStat | None:
        """Mode and owner of ``path`` from the archive the Docker API builds (no binary in the host runs)."""
        try:
            stream, _ = self.client.api.get_archive(self._info(host).container, path)
        except NotFound:
            return None
        raw = bytearray()
        for chunk in stream:
            raw += chunk
            if len(raw) > 1024 or len(raw) >= 512:  # the first header is all we need
                break
        import io as _io

        try:
            with tarfile.open(fileobj=_io.BytesIO(bytes(raw) + b"\0" * 1024), mode="r|") as tar:
                member = tar.next()
        except tarfile.TarError:
            return None
        if member is None:
            return None
        return FileStat(member.mode & 0o7777, member.uid, member.gid, member.size)

    def processes(self, host: str) -> list[Process]:
        """The host's processes as the engine sees them (``docker top``: the host's /proc, not the container's ps)."""
        try:
            top = self.client.api.top(self._info(host).container, ps_args="-o uid,pid,args")
        except (APIError, NotFound) as exc:
            raise EnvError(f"cannot list processes of {host}: {getattr(exc, 'explanation', None) or exc}") from None
        titles = [t.upper() for t in top.get("Titles") or []]
        out = []
        for row in top.get("Processes") or []:
            item = dict(zip(titles, row, strict=False))
            try:
                out.append(Process(int(item["UID"]), int(item["PID"]), str(item.get("COMMAND", item.get("ARGS", "")))))
            except (KeyError, ValueError):
                continue
        return out

    def read_file(self, host: str, path: str) -> bytes | None:
        """The file's bytes through the Docker API (no binary in the host runs), or None if absent."""
        try:
            return read_file(self.client, self._info(host).container, path)
        except NotFound:
            return None
        except EnvError:
            return None

    def close(self) -> None:
        """Remove the sidecars now (tearing the environment down would, too)."""
        from ladderlab.environments.runtime import remove_containers

        with self._lock:
            names = [s.container for s in self._sidecars.values()]
            if self._scratch is not None:
                names.append(self._scratch.container)
            self._sidecars.clear()
            self._scratch = None
        remove_containers(self.client, names)
