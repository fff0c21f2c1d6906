"""The trusted side of a check: observers, scratch containers and file reads.

An *observer* is a container from ladderlab's own probe image that joins the
network namespace of one lab host (``network_mode=container:<host>``): it
sees the network exactly as that host does (its address, its firewall), but
runs ladderlab's binaries, not the host's. A *scratch* container has no
network at all (for replaying saved rules). Both carry the environment's
labels, so tearing the environment down removes them too.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import docker
from docker.errors import APIError, NotFound

from ladderlab.environments import files, hardening
from ladderlab.environments import labels as L
from ladderlab.environments.runtime import Environment, tar_files
from ladderlab.environments.transports import CommandResult, DockerTransport
from ladderlab.environments.watchdog import DiskWatch
from ladderlab.errors import EnvError, LearnerState, UsageError
from ladderlab.grading.checks import CannotJudge, FileStat, Listener, Process, T

#: Runs in an observer that shares a host's network and pid namespaces: the sockets listening on a port
#: (from /proc/net/{tcp,udp}{,6}: kernel text, hex fields only), the processes holding them (their
#: /proc/<pid>/fd links), each holder's uids (/proc/<pid>/status) and the sha256 of the executable the
#: kernel runs for it (/proc/<pid>/exe, bounded). Prints JSON; pids it may not inspect are listed as denied.
_LISTENER_SCRIPT = r"""
import hashlib, ipaddress, json, os, sys
port, proto, cap = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
def address(hexaddr):
    raw = bytes.fromhex(hexaddr)
    if len(raw) == 4:
        return ipaddress.IPv4Address(raw[::-1])
    ip = ipaddress.IPv6Address(b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))
    return ip.ipv4_mapped or ip
sockets = {}
for family in ("", "6"):
    try:
        with open("/proc/net/%s%s" % (proto, family), "rb") as fh:
            lines = fh.read(1 << 24).decode("ascii").splitlines()[1:]
    except FileNotFoundError:
        continue
    for line in lines:
        f = line.split()
        if len(f) < 10 or ":" not in f[1]:
            continue
        hexaddr, hexport = f[1].split(":")
        if int(hexport, 16) != port or f[3] != ("0A" if proto == "tcp" else "07") or f[9] == "0":
            continue
        ip = address(hexaddr)
        sockets[f[9]] = {"address": str(ip), "loopback": ip.is_loopback, "holders": []}
denied, me = [], str(os.getpid())
for pid in sorted((p for p in os.listdir("/proc") if p.isdigit()), key=int):
    if pid == me:
        continue
    try:
        fds = [os.readlink("/proc/%s/fd/%s" % (pid, fd)) for fd in os.listdir("/proc/%s/fd" % pid)]
    except (FileNotFoundError, ProcessLookupError):
        continue
    except PermissionError:
        denied.append(int(pid)); continue
    held = [s for s in sockets if "socket:[%s]" % s in fds]
    if not held:
        continue
    try:
        with open("/proc/%s/status" % pid) as fh:
            uids = next(l.split()[1:5] for l in fh if l.startswith("Uid:"))
        exe = os.readlink("/proc/%s/exe" % pid)
        digest, size = hashlib.sha256(), 0
        with open("/proc/%s/exe" % pid, "rb") as fh:
            while size <= cap:
                chunk = fh.read(1 << 20)
                if not chunk:
                    break
                digest.update(chunk); size += len(chunk)
    except (FileNotFoundError, ProcessLookupError):
        continue
    except PermissionError:
        denied.append(int(pid)); continue
    holder = {"pid": int(pid), "uids": [int(u) for u in uids], "exe": exe,
              "sha256": digest.hexdigest() if size <= cap else ""}
    for s in held:
        sockets[s]["holders"].append(holder)
print(json.dumps({"sockets": list(sockets.values()), "denied": denied}))
"""


#: Runs in an observer that shares a host's pid namespace: every process's /proc/<pid>/environ (argv[1]:
#: the most bytes read per process; 16 times that in all). Prints JSON {"environ": {pid: [entries]},
#: "denied": [pids it may not read], "over": [pids past the bound]}; a process that ended meanwhile is left out.
_ENVIRON_SCRIPT = r"""
import json, os, sys
cap = int(sys.argv[1]); total = 0
out, denied, over, me = {}, [], [], str(os.getpid())
for pid in sorted((p for p in os.listdir("/proc") if p.isdigit()), key=int):
    if pid == me:
        continue
    try:
        with open("/proc/%s/environ" % pid, "rb") as fh:
            raw = fh.read(cap + 1)
    except (FileNotFoundError, ProcessLookupError):
        continue
    except PermissionError:
        denied.append(int(pid)); continue
    total += len(raw)
    if len(raw) > cap or total > 16 * cap:
        over.append(int(pid)); break
    out[pid] = [e.decode("utf-8", "replace") for e in raw.split(b"\0") if e]
print(json.dumps({"environ": out, "denied": denied, "over": over}))
"""
#: The most bytes of one process's environment :meth:`LiveContext.process_environments` reads (the kernel's
#: default limit on argv and environment together is 2 MiB).
ENVIRON_LIMIT = 2 << 20

#: What a run in an :meth:`LiveContext.isolated` container may write to its layer before it is stopped.
ISOLATED_DISK = 256 << 20

#: Hosts a check never acts on: ladderlab's own vantage points (their lockout is made once, at start).
ACTION_EXEMPT_ROLES = frozenset({"probe"})

#: How long a restarted host must keep running before it counts as back (a start-up that fails exits sooner).
RESTART_SETTLE = 1.0

#: The signals a check may send to a learner's process (:meth:`LiveContext.signal`).
SIGNALS = ("KILL", "TERM", "INT", "HUP", "STOP", "CONT")


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
        self._sidecars: dict[str, Sidecar] = {}
        self._lock = threading.Lock()
        self._memo: dict[str, Any] = {}
        self._memo_locks: dict[str, threading.Lock] = {}
        self._isolated = 0
        self._may_act = False  # set by the pipeline while a disruptive check runs
        self._down: set[str] = set()  # hosts a check stopped
        self._paused: set[str] = set()  # hosts a check paused
        self._cut: dict[tuple[str, str], str] = {}  # (host, network) a check disconnected -> its address there
        self._addresses: dict[str, str] = {}  # host -> its address after a restart, when the engine moved it
        self._netns: dict[str, str] = {}  # host container -> the network namespace its observers joined
        #: What this context did to hosts through the engine: (host, action, start ns, end ns). The pipeline
        #: tells these apart from disturbances nobody asked for (:func:`~ladderlab.grading.pipeline.host_state`).
        self.actions: list[tuple[str, str, int, int]] = []

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

    def _sidecar(self, key: str, make: Callable[[], Sidecar]) -> Sidecar:
        """One trusted container per ``key``, made once (checks asking meanwhile wait for it)."""

        def made() -> Sidecar:
            sidecar = make()
            with self._lock:
                self._sidecars[key] = sidecar
            return sidecar

        return self.cached(f"sidecar:{key}", made)

    def set_answers(self, answers: Mapping[str, Any]) -> None:
        self._answers = dict(answers)

    def _info(self, host: str) -> Any:
        try:
            return self.env.record.hosts[host]
        except KeyError:
            raise UsageError(f"environment {self.env.id} has no host {host!r}") from None

    def address(self, host: str) -> str:
        return self._addresses.get(host) or str(self._info(host).address)

    def _stamp(self) -> L.Stamp:
        return self.env.record.stamp()

    def _start_sidecar(self, name: str, network_mode: str, caps: list[str], pid_mode: str | None = None,
               kind: str = "observer", image: str | None = None, memory: int = 256 * hardening.MiB,
               read_only: bool = False) -> Sidecar:
        """Create and start a trusted container (through the one hardening policy)."""
        container = f"ll-{self.env.id}-{name}"
        pid_of = pid_mode.removeprefix("container:") if pid_mode else None
        hardening.create(self.client, hardening.Plan(
            kind=kind, name=container, image=image or self.probe_image, stamp=self._stamp(), host=name,
            role=kind, network=network_mode, pid_namespace_of=pid_of, capabilities=caps, memory=memory,
            command=["sleep", "infinity"], entrypoint=[] if image else None, read_only=read_only))
        hardening.start(self.client, container)
        sidecar = Sidecar(self.client, container)
        if network_mode.startswith("container:"):
            self._check_joined(network_mode.removeprefix("container:"), sidecar)
        return sidecar

    def _check_joined(self, host_container: str, sidecar: Sidecar) -> None:
        """Every sidecar that joins ``host_container``'s network namespace must find the same one as the
        first: an observer elsewhere would read another namespace's state as the learner's. One that does
        not is removed (the next check to ask makes a new one) and the checks asking meet
        :class:`CannotJudge`: never a verdict from the wrong namespace."""
        from ladderlab.environments.runtime import remove_containers

        result = sidecar.run("readlink /proc/self/ns/net", timeout=20)
        found = result.stdout.strip()
        if result.failed or not found.startswith("net:["):
            remove_containers(self.client, [sidecar.container])
            raise CannotJudge(f"{sidecar.container} cannot tell its network namespace: "
                              f"{(result.stderr or result.stdout).strip()[:200]}")
        with self._lock:
            first = self._netns.setdefault(host_container, found)
        if found != first:
            remove_containers(self.client, [sidecar.container])
            raise CannotJudge(f"{sidecar.container} joined network namespace {found}, not {first} where "
                              f"{host_container}'s other observers are")

    def observe(self, host: str, *, admin: bool = False) -> Sidecar:
        """Trusted tools in ``host``'s network namespace (``admin`` adds NET_ADMIN to read netfilter)."""
        info = self._info(host)
        name = f"obs{'a' if admin else ''}-{host}"
        caps = ["NET_RAW", "NET_ADMIN"] if admin else ["NET_RAW"]
        return self._sidecar(name, lambda: self._start_sidecar(name, f"container:{info.container}", caps))

    def scratch(self) -> Sidecar:
        """An isolated trusted container with its own empty network namespace and NET_ADMIN."""
        return self._sidecar("scratch", lambda: self._start_sidecar("scratch", "none", ["NET_ADMIN"], kind="scratch"))

    def warm(self, admin_roles: frozenset[str] = frozenset({"target"})) -> None:
        """Start an observer for every host (and the scratch container) now, in parallel.

        Grading calls this while the sandbox runs, so the checks find them ready; one that cannot start
        (the learner's code stopped its host) is left for the checks to meet and report. Observers are
        out of the learner's reach: no SSH, no shared process or file namespace with any host.
        """
        from concurrent.futures import ThreadPoolExecutor

        jobs: list[Any] = [lambda: self.scratch()]
        for name, info in self.env.record.hosts.items():
            jobs.append(lambda n=name: self.observe(n))
            if info.role in admin_roles:
                jobs.append(lambda n=name: self.observe(n, admin=True))

        def attempt(job: Callable[[], object]) -> None:
            with contextlib.suppress(Exception):  # a check that needs it tries again and reports what it meets
                job()

        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            list(pool.map(attempt, jobs))

    def tools(self, host: str) -> Sidecar:
        """A fresh container of ``host``'s image, no network: the image's binaries, not the host's.

        The learner may have replaced any binary inside the running host; the image is ladderlab's.
        """
        info = self._info(host)
        return self._sidecar(f"tools-{host}", lambda: self._start_sidecar(
            f"tools-{host}", "none", [], kind="tools", image=info.image, memory=512 * hardening.MiB))

    @contextlib.contextmanager
    def isolated(self, host: str) -> Iterator[Sidecar]:
        """A new container of ``host``'s image, no network, no capabilities, for this ``with`` block only.

        Never cached or shared: a check runs the learner's code in it beside hidden material (a reference
        implementation, fixtures) copied in after it starts, so nothing the learner did before can have
        prepared it and no other run sees what one run leaves behind. Removed when the block ends.
        """
        info = self._info(host)
        with self._lock:
            self._isolated += 1
            name = f"iso{self._isolated}-{host}"
        sidecar = self._start_sidecar(name, "none", [], kind="tools", image=info.image, memory=512 * hardening.MiB)
        with self._lock:
            self._sidecars[name] = sidecar
        # The learner's code writes to this container's layer: the hosts' disk watchdog stops it past the limit.
        watch = DiskWatch(self.client, {host: sidecar.container}, ISOLATED_DISK).start()
        overrun = LearnerState(f"code run for {host} wrote more than {ISOLATED_DISK >> 20} MiB to disk and was stopped")
        try:
            yield sidecar
        except Exception:
            watch.stop()  # waits for a poll in progress: its kill may be what ended the run
            if watch.exceeded:  # the run failed because it was stopped: the learner's doing, not ours
                raise overrun from None
            raise
        else:
            watch.stop()
            if watch.exceeded:
                raise overrun from None
        finally:
            from ladderlab.environments.runtime import remove_containers

            watch.stop()
            with self._lock:
                self._sidecars.pop(name, None)
            remove_containers(self.client, [sidecar.container])

    def _pid_observer(self, host: str) -> Sidecar:
        """An observer in ``host``'s network *and* pid namespaces, to read /proc for :meth:`listener`.

        SYS_PTRACE and DAC_READ_SEARCH are the least that reads another user's /proc/<pid>/fd and
        /proc/<pid>/exe (measured: without either, a process of the host's service user is refused).
        Its root file system is read-only: the host's root (who may hold SYS_PTRACE) can see this
        container's processes and reach their files through /proc/<pid>/root.
        """
        target = f"container:{self._info(host).container}"
        return self._sidecar(f"obsp-{host}", lambda: self._start_sidecar(
            f"obsp-{host}", target, ["SYS_PTRACE", "DAC_READ_SEARCH"], pid_mode=target, read_only=True))

    def listener(self, host: str, port: int, proto: str = "tcp") -> Listener | None:
        """The process behind ``port`` on ``host``, identified by the socket's owner and the executable the
        kernel runs for it (read by an observer in the host's namespaces), never by argv or process names.

        Only sockets other hosts can reach count (not those bound to loopback). None when no such socket
        listens. When several processes hold them and they differ in uid or executable, or no process of
        the host holds one, the answer says so: ``uid`` -1, ``exe_sha256`` empty and ``exe`` naming what
        differs. ``uid`` is the least of the process's real, effective, saved and file-system uids (a
        process that can become root again counts as root). :class:`CannotJudge` when the observer fails.
        """
        if proto not in ("tcp", "udp") or not 0 < int(port) < 65536:
            raise UsageError(f"listener: bad port {proto}/{port}")
        result = self._pid_observer(host).run("python3 -c %s %s %s %s", _LISTENER_SCRIPT, int(port), proto,
                                              1 << 28, timeout=30)
        if result.failed:
            raise CannotJudge(f"the process observer of {host} exited {result.rc}: {result.stderr.strip()[-200:]}")
        try:
            found = json.loads(result.stdout)
            sockets = [s for s in found["sockets"] if not s["loopback"]]
            denied = list(found["denied"])
            holders = {int(h["pid"]): (min(int(u) for u in h["uids"]), str(h["exe"]), str(h["sha256"]))
                       for s in sockets for h in s["holders"]}
            unheld = sum(1 for s in sockets if not s["holders"])
        except (ValueError, KeyError, TypeError) as exc:
            raise CannotJudge(f"the process observer of {host} answered {result.stdout[:80]!r}: {exc}") from None
        if denied:
            raise CannotJudge(f"the process observer of {host} may not inspect pids {denied[:5]}")
        if not sockets:
            return None
        if not holders or unheld:
            return Listener(0, -1, f"no process of {host} holds the {proto}/{port} socket", "")
        kinds = sorted(set(holders.values()))
        pid = min(holders)
        if len(kinds) > 1:
            what = ", ".join(f"{exe} as uid {uid}" for uid, exe, _ in kinds)
            return Listener(pid, -1, f"several different processes hold {proto}/{port}: {what}", "")
        uid, exe, digest = kinds[0]
        return Listener(pid, uid, exe, digest)

    def process_environments(self, host: str) -> dict[int, list[str]]:
        """Every process of ``host`` (pid in the host's namespace) -> its environment, ``NAME=value`` entries as
        the kernel keeps them (/proc/<pid>/environ, read by an observer in the host's namespaces; not what
        the host's ps or shell says). Each bounded to :data:`ENVIRON_LIMIT` bytes, all to 16 of them: more is
        :class:`~ladderlab.errors.LearnerState`. :class:`CannotJudge` when the observer fails or may not read a pid.
        """
        result = self._pid_observer(host).run("python3 -c %s %s", _ENVIRON_SCRIPT, ENVIRON_LIMIT, timeout=30)
        if result.failed:
            raise CannotJudge(f"the process observer of {host} exited {result.rc}: {result.stderr.strip()[-200:]}")
        try:
            found = json.loads(result.stdout)
            denied, over = [int(p) for p in found["denied"]], [int(p) for p in found["over"]]
            out = {int(pid): [str(e) for e in entries] for pid, entries in found["environ"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CannotJudge(f"the process observer of {host} answered {result.stdout[:80]!r}: {exc}") from None
        if denied:
            raise CannotJudge(f"the process observer of {host} may not read the environment of pids {denied[:5]}")
        if over:
            raise LearnerState(f"{host}: the environment of pid {over[0]} (or all of them together) is larger than "
                               f"ladderlab reads ({ENVIRON_LIMIT >> 20} MiB)")
        return out

    def read_dir(self, host: str, path: str, limit: int = files.DEFAULT_LIMIT) -> dict[str, bytes]:
        """Regular files directly inside directory ``path`` of ``host`` (name -> bytes), via the Docker API.

        Bounded (``files.TooLarge`` past ``limit`` bytes in all); symlinks and special files are skipped."""
        return files.list_files(self.client, self._info(host).container, path, limit=limit)

    def stat(self, host: str, path: str) -> FileStat | None:
        """Mode and owner of ``path`` from the archive the Docker API builds (no binary in the host runs)."""
        found = files.owner(self.client, self._info(host).container, path)
        return FileStat(*found) if found is not None else None

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

    def read_file(self, host: str, path: str, limit: int = files.DEFAULT_LIMIT) -> bytes | None:
        """The file's bytes through the Docker API (no binary in the host runs), following symlinks;
        None if absent or not a regular file; ``files.TooLarge`` (the learner's state) past ``limit``."""
        return files.read_bytes(self.client, self._info(host).container, path, limit=limit)

    # --- actions: only while a disruptive check runs ------------------------------------------------

    @contextlib.contextmanager
    def acting(self) -> Iterator[None]:
        """Allow the actions (:meth:`restart`, :meth:`stop`, :meth:`start`, :meth:`pause`, :meth:`unpause`,
        :meth:`disconnect`, :meth:`connect`, :meth:`signal`, :meth:`put_file`) within this block: the
        pipeline's, around one disruptive check. When it ends, whatever the check left undone is undone
        (hosts stopped are started, paused ones resumed, cut ones connected again), so the next check, and
        the fault line, meet the environment whole."""
        self._may_act = True
        try:
            yield
        finally:
            self._may_act = False
            self._undo()

    def _undo(self) -> None:
        with self._lock:
            cut, paused, down = dict(self._cut), set(self._paused), set(self._down)
        for (host, network), address in cut.items():
            with contextlib.suppress(Exception):  # what cannot be undone shows in the fault line
                self._connect(host, network, address)
        for host in paused:
            with contextlib.suppress(Exception):
                self._unpause(host)
        if down:
            with contextlib.suppress(Exception):
                self._start(sorted(down))

    def _action(self, what: str, host: str) -> Any:
        if not self._may_act:
            raise UsageError(f"{what} acts on the environment: only a check registered with "
                             f"@check(disruptive=True) may call it")
        info = self._info(host)
        if info.role in ACTION_EXEMPT_ROLES:
            raise UsageError(f"{what}: host {host} is a {info.role} host, ladderlab's own: checks do not act on it")
        return info

    @contextlib.contextmanager
    def _recorded(self, action: str, *hosts: str) -> Iterator[None]:
        """Note the engine-time window of an action on ``hosts`` in :attr:`actions`."""
        start = time.time_ns()
        try:
            yield
        finally:
            end = time.time_ns()
            with self._lock:
                self.actions += [(h, action, start, end) for h in hosts]

    def restart(self, *hosts: str, timeout: float = 60.0) -> None:
        """Kill ``hosts`` and start them again through the engine (what a reboot does to a container: every
        process gone, its start-up run again, its files kept), then wait until each runs.

        The hosts' observers are removed first (they share the hosts' namespaces, which a restart replaces)
        and made anew when next asked for; every cached observation is forgotten. A host whose start-up
        exits (the learner's start-up) is :class:`~ladderlab.errors.LearnerState`."""
        for h in hosts:
            self._action("restart", h)
        with self._recorded("restart", *hosts):
            self._stop(list(hosts), timeout)
            self._start(list(hosts))

    def stop(self, *hosts: str, timeout: float = 60.0) -> None:
        """Kill ``hosts`` (as a power cut would: SIGKILL to every process) and wait until they are down. They
        stay down until :meth:`start`, or the end of the check."""
        for h in hosts:
            self._action("stop", h)
        with self._recorded("stop", *hosts):
            self._stop(list(hosts), timeout)

    def start(self, *hosts: str) -> None:
        """Start hosts stopped by :meth:`stop` and wait until they run (see :meth:`restart`)."""
        for h in hosts:
            self._action("start", h)
        with self._recorded("start", *hosts):
            self._start(list(hosts))

    def _stop(self, hosts: list[str], timeout: float) -> None:
        self._forget(set(hosts))
        for host in hosts:
            with contextlib.suppress(APIError):  # already stopped: what matters is that it is down
                self.client.api.kill(self._info(host).container)
            with self._lock:
                self._down.add(host)
        for host in hosts:
            self._wait_stopped(self._info(host).container, timeout)

    def _start(self, hosts: list[str]) -> None:
        for host in hosts:
            self.client.api.start(self._info(host).container)
            with self._lock:
                self._down.discard(host)
        for host in hosts:
            self._wait_running(host, self._info(host).container)

    def pause(self, *hosts: str) -> None:
        """Freeze every process of ``hosts`` (the engine's pause: a hung machine, its sockets open and silent)
        until :meth:`unpause` or the end of the check."""
        for h in hosts:
            self._action("pause", h)
        with self._recorded("pause", *hosts):
            for host in hosts:
                self.client.api.pause(self._info(host).container)
                with self._lock:
                    self._paused.add(host)

    def unpause(self, *hosts: str) -> None:
        for h in hosts:
            self._action("unpause", h)
        with self._recorded("unpause", *hosts):
            for host in hosts:
                self._unpause(host)

    def _unpause(self, host: str) -> None:
        self.client.api.unpause(self._info(host).container)
        with self._lock:
            self._paused.discard(host)

    def disconnect(self, host: str, network: str) -> None:
        """Cut ``host`` off ``network`` (one of the environment's networks, by its env.yaml name) until
        :meth:`connect` or the end of the check; it gets the same address back."""
        info = self._action("disconnect", host)
        if network not in info.addresses:
            raise UsageError(f"disconnect: host {host} is not on network {network!r} "
                             f"(its networks: {', '.join(info.addresses) or 'none'})")
        address = self._addresses.get(host) if network == next(iter(info.addresses)) else None
        with self._recorded("disconnect", host):
            self.client.api.disconnect_container_from_network(info.container, self.env.record.networks[network],
                                                              force=True)
            with self._lock:
                self._cut[(host, network)] = address or info.addresses[network]

    def connect(self, host: str, network: str) -> None:
        """Undo :meth:`disconnect`."""
        self._action("connect", host)
        with self._lock:
            address = self._cut.get((host, network))
        if address is None:
            raise UsageError(f"connect: host {host} was not cut off {network!r} by this check")
        with self._recorded("connect", host):
            self._connect(host, network, address)

    def _connect(self, host: str, network: str, address: str) -> None:
        container, name = self._info(host).container, self.env.record.networks[network]
        try:
            self.client.api.connect_container_to_network(container, name, aliases=[host], ipv4_address=address)
        except APIError as exc:  # a network whose subnet the engine chose takes no address from us
            if "user configured subnets" not in str(exc):
                raise
            self.client.api.connect_container_to_network(container, name, aliases=[host])
            now = self.client.api.inspect_container(container)["NetworkSettings"]["Networks"][name]["IPAddress"]
            if network == next(iter(self._info(host).addresses)):
                with self._lock:
                    self._addresses[host] = str(now)
        with self._lock:
            self._cut.pop((host, network), None)

    def signal(self, host: str, pid: int, sig: str = "KILL") -> bool:
        """Send ``sig`` to process ``pid`` of ``host`` (its pid as the host sees it: :meth:`listener`'s),
        from a short-lived trusted container in the host's pid namespace with only CAP_KILL. False when
        no such process is left. Not undone at the end of the check: the process is the learner's."""
        self._action("signal", host)
        if sig not in SIGNALS or int(pid) < 2:
            raise UsageError(f"signal: {sig} to pid {pid} is not allowed (signals: {', '.join(SIGNALS)}; "
                             f"never pid 1, the host's start-up)")
        target = f"container:{self._info(host).container}"
        killer = self._sidecar(f"obsk-{host}", lambda: self._start_sidecar(
            f"obsk-{host}", target, ["KILL"], pid_mode=target, read_only=True))
        with self._recorded(f"signal {sig}", host):
            result = killer.run("kill -s %s %s", sig, int(pid), timeout=10)
        if result.failed and "No such process" not in result.stderr:
            raise CannotJudge(f"could not signal pid {pid} of {host}: {result.stderr.strip()[-200:]}")
        return not result.failed

    def _wait_stopped(self, container: str, timeout: float) -> None:
        until = time.monotonic() + timeout
        while self.client.api.inspect_container(container)["State"].get("Running"):
            if time.monotonic() > until:
                raise CannotJudge(f"{container} still runs {timeout:g} s after the engine killed it")
            time.sleep(0.1)

    def _wait_running(self, host: str, container: str) -> None:
        """Until ``host`` has run for :data:`RESTART_SETTLE` seconds since the engine started it: stopped
        meanwhile, its start-up (the learner's) exited."""
        since = time.monotonic()
        while True:
            state = self.client.api.inspect_container(container)
            if not state["State"].get("Running"):
                raise LearnerState(f"host {host} did not come back after a restart: its start-up exited "
                                   f"with code {state['State'].get('ExitCode')}")
            if time.monotonic() - since >= RESTART_SETTLE:
                break
            time.sleep(0.1)
        info = self._info(host)
        if not info.addresses:
            return
        network = self.env.record.networks[next(iter(info.addresses))]  # where :meth:`address` answers from
        found = (state.get("NetworkSettings", {}).get("Networks") or {}).get(network) or {}
        now = str(found.get("IPAddress") or "")
        if not now:
            raise CannotJudge(f"host {host} has no address on {network} after its restart")
        with self._lock:
            self._addresses[host] = now

    def _forget(self, hosts: set[str]) -> None:
        """Drop every cached observation, and the sidecars that share a namespace with one of ``hosts``."""
        from ladderlab.environments.runtime import remove_containers

        joined = {f"{kind}-{h}" for h in hosts for kind in ("obs", "obsa", "obsp", "obsk")}
        with self._lock:
            for h in hosts:  # a restart gives the host a new namespace
                self._netns.pop(self._info(h).container, None)
            gone = [self._sidecars.pop(k).container for k in list(self._sidecars) if k in joined]
            for key in list(self._memo):
                if not key.startswith("sidecar:") or key.removeprefix("sidecar:") in joined:
                    del self._memo[key]
        remove_containers(self.client, gone)

    def put_file(self, host: str, path: str, data: bytes, *, mode: int = 0o644, uid: int = 0) -> None:
        """Write ``data`` to ``path`` (absolute) in ``host`` through the engine's archive upload (no binary in
        the host runs); missing parent directories are made by the upload."""
        info = self._action("put_file", host)
        if not path.startswith("/") or ".." in path.split("/"):
            raise UsageError(f"put_file: {path!r} is not an absolute path without '..'")
        start = time.time_ns()
        self.client.api.put_archive(info.container, "/", tar_files([(path.lstrip("/"), data, mode, uid)]))
        with self._lock:
            self.actions.append((host, "put_file", start, time.time_ns()))

    def close(self) -> None:
        """Remove the sidecars now (tearing the environment down would, too)."""
        from ladderlab.environments.runtime import remove_containers

        with self._lock:
            names = [s.container for s in self._sidecars.values()]
            for key in self._sidecars:
                self._memo.pop(f"sidecar:{key}", None)
            self._sidecars.clear()
        remove_containers(self.client, names)
