"""A watchdog on lab hosts' writable layers: a host that writes past its disk limit is stopped.

Learners are root in lab hosts, and overlay2 on an ext4 or overlay root has no quota
(``--storage-opt size`` needs xfs with project quotas), so nothing in the kernel stops
a host from filling the grading machine's disk, which would break every other
environment's start, the sandbox's output and the gradebook. A :class:`DiskWatch`
polls the size of each watched container's writable layer (``SizeRw``, the engine's
own accounting, one ``containers?size=1`` call per poll for all of them) every
``interval`` seconds from a daemon thread of the process that owns the environment.
A host over its limit (``resources.disk`` in ``env.yaml``, default 1 GiB) is killed
at once and recorded in :attr:`DiskWatch.exceeded`; the caller turns that into the
learner's failure and tears the environment down (which removes the layer).

What bounds the damage: about ``limit + (interval + one poll) * write speed`` per host,
freed at teardown. Measured here (ext4, cgroup v1, where Docker's blkio limits do not
throttle buffered writes): an unthrottled ``dd`` writes ~1 GiB/s into the page cache and
one poll takes up to 2 s under that load, so a 256 MiB limit was caught at 993 MiB with a
1 s interval; a writer at 80 MiB/s is caught within one interval. Other learners are
protected by headroom (free space for concurrent environments x hosts x (limit + ~2 GiB)),
not by a hard cap: that needs ``--storage-opt size`` on xfs with project quotas. ``SizeRw``
is the apparent size, so a sparse file counts at its full length (an overrun, never an
escape). What it does not bound: inode exhaustion by many empty files (they weigh 0
bytes; 100k files make one poll take ~0.4 s), and writes to volumes or tmpfs (lab hosts
have neither; tmpfs counts against the container's memory limit).

>>> with DiskWatch(client, {"target": "ll-x-target"}, 1 << 30) as watch:   # doctest: +SKIP
...     run_the_notebook()
>>> watch.exceeded                                                        # doctest: +SKIP
{}
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import docker
from docker.errors import APIError, NotFound

if TYPE_CHECKING:
    from ladderlab.environments.runtime import Environment
    from ladderlab.environments.spec import EnvSpec

DEFAULT_INTERVAL = 1.0


@dataclass(frozen=True)
class Overrun:
    """One host found over its limit: how much it had written, its limit, and whether it was stopped."""

    host: str
    size: int
    limit: int
    stopped: bool

    @property
    def feedback(self) -> str:
        what = "it was stopped" if self.stopped else "it could not be stopped"
        return (f"host {self.host} wrote {_mib(self.size)} to its disk, over its limit of {_mib(self.limit)}; "
                f"{what}")


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.0f} MiB"


class DiskWatch:
    """Watch ``containers`` (host name -> container name or id) against ``limit`` bytes (one for all, or
    per host). :meth:`start` / :meth:`stop`, or use it as a context manager; :meth:`poll` runs one round."""

    def __init__(self, client: docker.DockerClient, containers: Mapping[str, str], limit: int | Mapping[str, int],
                 *, interval: float = DEFAULT_INTERVAL, stop_hosts: bool = True,
                 on_exceed: Callable[[Overrun], None] | None = None) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval!r}")
        limits = {h: limit for h in containers} if isinstance(limit, int) else dict(limit)
        missing = sorted(set(containers) - set(limits))
        if missing:
            raise ValueError(f"no disk limit for hosts {', '.join(missing)}")
        bad = sorted(h for h in containers if limits[h] <= 0)
        if bad:
            raise ValueError(f"disk limits must be positive (hosts {', '.join(bad)})")
        self.client = client
        self.containers = dict(containers)
        self.limits = {h: limits[h] for h in containers}
        self.interval = interval
        self.stop_hosts = stop_hosts
        self.on_exceed = on_exceed
        self.sizes: dict[str, int] = {}
        self.overruns: dict[str, Overrun] = {}
        self.errors: list[str] = []
        self.polls = 0
        self._ids: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @classmethod
    def for_env(cls, env: Environment, spec: EnvSpec | None = None, **kwargs: Any) -> DiskWatch:
        """A watch on every host of ``env`` with the limits its ``env.yaml`` sets (``resources.disk``)."""
        if spec is None:
            from ladderlab.environments.runtime import load_spec

            spec = load_spec(env.settings, env.record.env)
        containers = {name: info.container for name, info in env.record.hosts.items()}
        limits = {name: spec.hosts[name].resources.disk_bytes for name in containers}
        return cls(env.client, containers, limits, **kwargs)

    def __repr__(self) -> str:
        return f"<disk watch on {len(self.containers)} hosts, {len(self.overruns)} over>"

    @property
    def exceeded(self) -> dict[str, int]:
        """Hosts found over their limit -> the bytes their writable layer held then."""
        with self._lock:
            return {h: o.size for h, o in self.overruns.items()}

    def feedback(self) -> list[str]:
        """One line per overrun, for the learner's report."""
        with self._lock:
            return [o.feedback for o in self.overruns.values()]

    # --- polling ---------------------------------------------------------------------------------

    def _resolve(self) -> None:
        for host, container in self.containers.items():
            if host not in self._ids:
                try:
                    self._ids[host] = str(self.client.api.inspect_container(container)["Id"])
                except NotFound:
                    continue

    def poll(self) -> dict[str, int]:
        """One round: read every watched layer's size, stop hosts over their limit; returns the sizes."""
        self._resolve()
        by_id = {cid: host for host, cid in self._ids.items() if host not in self.overruns}
        if not by_id:
            return {}
        listed = self.client.api.containers(all=True, size=True, filters={"id": list(by_id)})
        sizes: dict[str, int] = {}
        for c in listed:
            host = by_id.get(str(c.get("Id")))
            if host is not None:
                sizes[host] = int(c.get("SizeRw") or 0)
        self.polls += 1
        with self._lock:
            self.sizes.update(sizes)
        for host, size in sizes.items():
            if size > self.limits[host]:
                self._overrun(host, size)
        return sizes

    def _overrun(self, host: str, size: int) -> None:
        stopped = False
        if self.stop_hosts:
            try:
                self.client.api.kill(self._ids[host])
                stopped = True
            except NotFound:
                stopped = True  # already gone
            except APIError as exc:
                stopped = "is not running" in str(exc)
                if not stopped:
                    self.errors.append(f"could not stop {host}: {exc}")
        overrun = Overrun(host, size, self.limits[host], stopped)
        with self._lock:
            self.overruns[host] = overrun
        if self.on_exceed is not None:
            self.on_exceed(overrun)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception as exc:  # the watch keeps going; the error is kept for the caller
                self.errors.append(f"{type(exc).__name__}: {exc}"[:300])
            self._stop.wait(self.interval)

    def start(self) -> DiskWatch:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="ladderlab-diskwatch", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop polling (waits for a poll in progress). Idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> DiskWatch:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

