"""Test doubles for content authors: unit-test a check without Docker.

A check sees an environment only through a :class:`~ladderlab.grading.checks.Context`;
:class:`FakeContext` is one made of canned parts, and :class:`FakeRunner` answers the
commands a check runs in an observer, a scratch container or a tools container with
canned output, matched by regular expression (every command is recorded).

>>> from ladderlab.grading.checks import evaluate, fail, ok
>>> def metrics_listen(ctx, *, host, port):                  # a check, as in graders/
...     ss = ctx.observe(host).run("ss -Htln sport = :%s", port)
...     return ok(f"{host}:{port} listens") if ss.stdout else fail(f"nothing listens on {host}:{port}")
>>> observer = FakeRunner([(r"^ss -Htln", "LISTEN 0 128 0.0.0.0:9137 0.0.0.0:*\\n", 0)])
>>> ctx = FakeContext({"target": observer}, params={"metrics_port": 9137})
>>> evaluate(ctx, metrics_listen, {"host": "target", "port": 9137})
Verdict(passed=True, feedback='target:9137 listens', fraction=1.0, status='passed')
>>> observer.ran
['ss -Htln sport = :9137']

A command no pattern matches raises ``AssertionError``, which ``evaluate`` turns into an
``error`` verdict naming the command: a check that runs something unexpected shows up.

>>> evaluate(FakeContext({"target": FakeRunner([])}), metrics_listen, {"host": "target", "port": 1}).status
'error'

Whatever is not given is absent: no file (``read_file`` returns None), an empty
directory, no process, nothing listening; asking for a host or runner the test did not
provide is a ``KeyError`` that names it.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ladderlab.config import Settings
from ladderlab.environments.transports.base import CommandResult, quote_command
from ladderlab.grading.checks import FileStat, Listener, Process, Runner

T = TypeVar("T")

__all__ = ["FakeContext", "FakeRunner"]


class FakeRunner:
    """Answers commands by regular expression and records what ran.

    ``answers`` are ``(pattern, output, rc)``: the first pattern that ``re.search`` finds in the
    command (after ``%s`` arguments are quoted in, as a real runner does) gives the result. The
    output is stdout; for a failing command (``rc != 0``) it is stderr too. ``ran`` lists the
    commands in order; ``files`` holds what a check put with :meth:`put_file`.
    """

    def __init__(self, answers: Iterable[tuple[str, str, int]] = ()) -> None:
        self.answers = list(answers)
        self.ran: list[str] = []
        self.files: dict[str, bytes] = {}

    def run(self, command: str, *args: object, timeout: float | None = None) -> CommandResult:
        full = quote_command(command, *args)
        self.ran.append(full)
        for pattern, out, rc in self.answers:
            if re.search(pattern, full, re.S):
                return CommandResult(full, rc, out, "" if rc == 0 else out)
        raise AssertionError(f"unexpected command {full[:120]!r}")

    def put_file(self, path: str, data: bytes) -> None:
        self.files[path] = data

    def __repr__(self) -> str:
        return f"<FakeRunner {len(self.answers)} answers, {len(self.ran)} ran>"


class FakeContext:
    """A check's whole :class:`~ladderlab.grading.checks.Context`, from canned parts.

    ``observers``: host -> runner, or ``(host, admin)`` -> runner where a check observes with
    ``admin=True`` (a key without ``admin`` serves both). ``tools``: one runner for every host, or
    host -> runner. ``files``, ``dirs``, ``stats``: ``(host, path)`` -> bytes, ``{name: bytes}``,
    :class:`~ladderlab.grading.checks.FileStat`. ``procs``: host -> processes; ``environs``: host -> pid ->
    environment entries. ``listeners``:
    ``(host, port)`` or ``(host, port, proto)`` -> :class:`~ladderlab.grading.checks.Listener`.
    ``isolated``: host -> a new runner, called once per :meth:`isolated` block (``isolated_for`` lists
    the hosts asked for). ``params`` and ``answers`` are the learner's seeded parameters and named answers;
    both can be reassigned. :meth:`cached` computes once per context, as the real one does in one grading.
    """

    def __init__(self, observers: Mapping[str | tuple[str, bool], Runner] | None = None, *,
                 files: Mapping[tuple[str, str], bytes] | None = None,
                 scratch: Runner | None = None,
                 params: Mapping[str, str | int] | None = None,
                 answers: Mapping[str, Any] | None = None,
                 addresses: Mapping[str, str] | None = None,
                 tools: Runner | Mapping[str, Runner] | None = None,
                 dirs: Mapping[tuple[str, str], dict[str, bytes]] | None = None,
                 stats: Mapping[tuple[str, str], FileStat] | None = None,
                 procs: Mapping[str, list[Process]] | None = None,
                 listeners: Mapping[tuple[str, int] | tuple[str, int, str], Listener] | None = None,
                 isolated: Callable[[str], Runner] | None = None,
                 environs: Mapping[str, Mapping[int, list[str]]] | None = None) -> None:
        self._observers = dict(observers or {})
        self._files = dict(files or {})
        self._scratch = scratch
        self.params: Mapping[str, str | int] = dict(params or {})
        self.answers: Mapping[str, Any] = dict(answers or {})
        self._addresses = dict(addresses or {})
        self._tools = tools
        self._dirs = dict(dirs or {})
        self._stats = dict(stats or {})
        self._procs = dict(procs or {})
        self._listeners = dict(listeners or {})
        self._isolated = isolated
        self._environs = {h: dict(e) for h, e in (environs or {}).items()}
        #: The hosts :meth:`isolated` was asked for, in order (one entry per container a check started).
        self.isolated_for: list[str] = []
        self._memo: dict[str, Any] = {}
        self._lock = threading.RLock()
        #: The hosts each :meth:`restart` was asked for, in order; what :meth:`put_file` wrote.
        self.restarted: list[tuple[str, ...]] = []
        self.written: dict[tuple[str, str], tuple[bytes, int, int]] = {}
        self.on_restart: Callable[[tuple[str, ...]], None] | None = None
        self.acted: list[tuple[object, ...]] = []

    def address(self, host: str) -> str:
        try:
            return self._addresses[host]
        except KeyError:
            raise KeyError(f"FakeContext has no address for host {host!r}: pass addresses={{...}}") from None

    def observe(self, host: str, *, admin: bool = False) -> Runner:
        for key in ((host, admin), host):
            if key in self._observers:
                return self._observers[key]
        raise KeyError(f"FakeContext has no observer for host {host!r}{' (admin)' if admin else ''}")

    def scratch(self) -> Runner:
        if self._scratch is None:
            raise KeyError("FakeContext has no scratch runner: pass scratch=FakeRunner([...])")
        return self._scratch

    def tools(self, host: str) -> Runner:
        if isinstance(self._tools, Mapping):
            if host in self._tools:
                return self._tools[host]
        elif self._tools is not None:
            return self._tools
        raise KeyError(f"FakeContext has no tools runner for host {host!r}: pass tools=FakeRunner([...])")

    @contextlib.contextmanager
    def isolated(self, host: str) -> Iterator[Runner]:
        if self._isolated is None:
            raise KeyError("FakeContext has no isolated containers: pass isolated=lambda host: FakeRunner([...])")
        self.isolated_for.append(host)
        yield self._isolated(host)

    def read_file(self, host: str, path: str) -> bytes | None:
        return self._files.get((host, path))

    def read_dir(self, host: str, path: str) -> dict[str, bytes]:
        return dict(self._dirs.get((host, path), {}))

    def stat(self, host: str, path: str) -> FileStat | None:
        return self._stats.get((host, path))

    def processes(self, host: str) -> list[Process]:
        return list(self._procs.get(host, []))

    def listener(self, host: str, port: int, proto: str = "tcp") -> Listener | None:
        found = self._listeners.get((host, port, proto))
        return found if found is not None or proto != "tcp" else self._listeners.get((host, port))

    def process_environments(self, host: str) -> dict[int, list[str]]:
        return {pid: list(entries) for pid, entries in self._environs.get(host, {}).items()}

    def cached(self, key: str, compute: Callable[[], T]) -> T:
        with self._lock:
            if key not in self._memo:
                self._memo[key] = compute()
            value: T = self._memo[key]
            return value

    def restart(self, *hosts: str) -> None:
        """Recorded in :attr:`restarted`; cached observations are forgotten, and ``on_restart`` (if set)
        is called with the hosts, so that a test can change what the fake observes from then on."""
        self.restarted.append(tuple(hosts))
        with self._lock:
            self._memo.clear()
        if self.on_restart is not None:
            self.on_restart(hosts)

    def put_file(self, host: str, path: str, data: bytes, *, mode: int = 0o644, uid: int = 0) -> None:
        """Kept where :meth:`read_file` finds it, and in :attr:`written`."""
        self._files[(host, path)] = data
        self.written[(host, path)] = (data, mode, uid)

    # The other actions are recorded in :attr:`acted`, in order, as (action, *arguments).
    def stop(self, *hosts: str) -> None:
        self.acted.append(("stop", *hosts))

    def start(self, *hosts: str) -> None:
        self.acted.append(("start", *hosts))

    def pause(self, *hosts: str) -> None:
        self.acted.append(("pause", *hosts))

    def unpause(self, *hosts: str) -> None:
        self.acted.append(("unpause", *hosts))

    def disconnect(self, host: str, network: str) -> None:
        self.acted.append(("disconnect", host, network))

    def connect(self, host: str, network: str) -> None:
        self.acted.append(("connect", host, network))

    def signal(self, host: str, pid: int, sig: str = "KILL") -> bool:
        self.acted.append(("signal", host, pid, sig))
        return True

    def __repr__(self) -> str:
        hosts = sorted({k[0] if isinstance(k, tuple) else k for k in self._observers})
        return f"<FakeContext observing {', '.join(hosts) or 'nothing'}>"


if TYPE_CHECKING:  # mypy proves the doubles are the protocols they stand in for
    from ladderlab.grading.checks import Context

    _context: Context = FakeContext()
    _runner: Runner = FakeRunner()


def private_cache(settings: Settings, cache_dir: Path) -> Settings:
    """``settings`` with a cache of its own (queue, ledger, gradebook, evidence, environment state) at
    ``cache_dir``, holding a copy of the machine's course keys so that seeds are the course's. Tests and
    benchmarks that hand work in use it: nothing they do is written to the machine's cache."""
    import dataclasses
    import shutil

    from ladderlab.course.seeds import course_secret
    from ladderlab.ladder.keys import load_or_create

    # Made first if the machine has none yet (a fresh machine): a copy taken before they exist would
    # give the private cache keys of its own, and its seeds would not be the course's.
    course_secret(settings)
    load_or_create(settings)
    cache_dir.mkdir(parents=True, exist_ok=True)
    keys = settings.cache_dir / "keys"
    if not (cache_dir / "keys").exists():
        shutil.copytree(keys, cache_dir / "keys")
    return dataclasses.replace(settings, cache_dir=cache_dir)


def stop_process(proc: subprocess.Popen[Any], timeout: float = 60) -> int:
    """Stop a server a test started: SIGTERM (it shuts down in order), then SIGKILL when it has not exited within
    ``timeout`` seconds; its exit status. One that already exited is left as it is."""
    if proc.poll() is None:
        proc.terminate()
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()
