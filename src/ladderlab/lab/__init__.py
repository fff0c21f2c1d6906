"""The learner API: what a lab notebook imports.

>>> import ladderlab
>>> lab = ladderlab.start("sec-1-iptables-hardening")      # doctest: +SKIP
>>> lab.sh("target", "iptables -S")                        # doctest: +SKIP
>>> lab.params["metrics_port"]                             # doctest: +SKIP
9137

``start`` brings up (or reattaches to) the learner's own seeded environment and
shows a status panel. Commands go through ``docker exec`` when the kernel can
reach the Docker engine, else over SSH using the connection file named by
``$LADDERLAB_CONNECT`` (the grading sandbox works this way). ``lab.check(...)``
gives formative feedback, one line per check; it never decides a grade, and at
grading time it does nothing: the grader evaluates the checks itself, outside
the notebook. ``lab.sh`` returns the transports' own
:class:`~ladderlab.environments.transports.base.CommandResult`, which shows
like a terminal.

In the sandbox this module must import with the standard library and paramiko
only, so every heavier import happens inside the functions that need it. It
imports nothing from ``ladderlab.grading`` at module level: the grading side
imports the learner API's connection file, never the other way round at import time.
"""

from __future__ import annotations

import base64
import getpass
import html
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ladderlab.environments.connection import Connection, HostEntry, from_environment

if TYPE_CHECKING:
    from ladderlab.environments.transports.base import CommandResult

MAX_WRITE = 256 * 1024


class LabError(Exception):
    """Something the learner can fix; shown as one line, never a traceback."""

    def _render_traceback_(self) -> list[str]:  # IPython shows this instead of a traceback
        return [f"{type(self).__name__}: {self}"]


def learner_id(explicit: str | None = None) -> str:
    """Who is working: the explicit id, ``$LADDERLAB_LEARNER``, the JupyterHub user, else the login name.

    This matches how nbgrader names a student who submits (JupyterHub user or OS user),
    so the seed at grading is the seed the learner worked with.
    """
    for candidate in (explicit, os.environ.get("LADDERLAB_LEARNER"), os.environ.get("JUPYTERHUB_USER")):
        if candidate:
            return candidate
    return getpass.getuser()


class _Backend:
    """How the lab reaches hosts; implemented for docker exec (live) and SSH (connection file)."""

    def run(self, host: str, command: str, timeout: float) -> CommandResult:
        """Run ``command`` on ``host``; the result names the host."""
        raise NotImplementedError

    def close(self) -> None:
        return None


class _SSHBackend(_Backend):
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._transports: dict[str, Any] = {}

    def run(self, host: str, command: str, timeout: float) -> CommandResult:
        from ladderlab.environments.transports.ssh import SSHTransport

        entry = self.conn.hosts[host]
        if not entry.reachable:
            raise LabError(f"{host} is a probe host: during grading only ladderlab's checks observe from it "
                           f"(your notebook cannot run commands there)")
        if host not in self._transports:
            self._transports[host] = SSHTransport(entry.address, private_key=self.conn.private_key,
                                                  host_key=entry.ssh_host_key)
        result: CommandResult = replace(self._transports[host].run(command, timeout=timeout), host=host)
        return result

    def close(self) -> None:
        for t in self._transports.values():
            t.close()


class _DockerBackend(_Backend):
    def __init__(self, env: Any, transport: str) -> None:
        self.env = env
        self.transport = transport
        self._hosts: dict[str, Any] = {}

    def run(self, host: str, command: str, timeout: float) -> CommandResult:
        if host not in self._hosts:
            self._hosts[host] = self.env.host(host, self.transport)
        result: CommandResult = replace(self._hosts[host].run(command, timeout=timeout), host=host)
        return result

    def close(self) -> None:
        for h in self._hosts.values():
            h.transport.close()


class Lab:
    """A learner's running lab environment."""

    def __init__(self, lab_id: str, conn: Connection, backend: _Backend, *, live: Any = None) -> None:
        self.id = lab_id
        self._conn = conn
        self._backend = backend
        self._live = live  # (settings, environment) when the kernel can reach the engine

    # --- what the instructions refer to ------------------------------------------------------
    @property
    def params(self) -> dict[str, str | int]:
        """The learner's seeded values (their port, their zone...)."""
        return dict(self._conn.params)

    @property
    def hosts(self) -> dict[str, HostEntry]:
        return dict(self._conn.hosts)

    @property
    def learner(self) -> str:
        return self._conn.learner

    @property
    def env_id(self) -> str:
        return self._conn.env_id

    @property
    def grading(self) -> bool:
        return self._conn.grading

    def address(self, host: str) -> str:
        """The IP address of ``host`` on the lab network."""
        return self._entry(host).address

    def _entry(self, host: str) -> HostEntry:
        try:
            return self._conn.hosts[host]
        except KeyError:
            raise LabError(f"this lab has no host {host!r} (hosts: {', '.join(self._conn.hosts)})") from None

    # --- doing things ------------------------------------------------------------------------
    def sh(self, host: str, command: str, *, timeout: float = 120, check: bool = False) -> CommandResult:
        """Run a shell command as root on ``host``; ``check=True`` raises when it fails."""
        self._entry(host)
        try:
            result = self._backend.run(host, command, timeout)
        except LabError:
            raise
        except Exception as exc:
            raise LabError(f"{host}: could not run the command: {exc}") from None
        if check and not result.ok:
            raise LabError(f"{host}: `{command[:80]}` exited {result.rc}: {result.stderr.strip()[:300]}")
        return result

    def write(self, host: str, path: str, text: str, *, mode: str = "0644") -> None:
        """Write ``text`` to ``path`` on ``host`` (parent directories are created)."""
        data = text.encode()
        if len(data) > MAX_WRITE:
            raise LabError(f"lab.write: {len(data)} bytes is more than the {MAX_WRITE} a write may carry")
        if not path.startswith("/"):
            raise LabError(f"lab.write: give an absolute path, not {path!r}")
        from ladderlab.environments.transports.base import quote_command

        blob = base64.b64encode(data).decode()
        cmd = quote_command('mkdir -p "$(dirname %s)" && printf %%s %s | base64 -d > %s && chmod %s %s',
                            path, blob, path, mode, path)
        self.sh(host, cmd, check=True)

    def read(self, host: str, path: str) -> str:
        from ladderlab.environments.transports.base import quote_command

        return self.sh(host, quote_command("cat -- %s", path), check=True).stdout

    def answer(self, name: str, value: str | int) -> None:
        """Record a named answer the lab asks for (it is graded from the environment and these answers)."""
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise LabError(f"lab.answer({name!r}): give a string or an integer, not {type(value).__name__}")
        path = Path(self._conn.answers_path) if self._conn.answers_path else None
        if path is None:
            raise LabError("this lab session has nowhere to keep answers")
        answers = _read_answers(path)
        answers[name] = value
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(answers, indent=1, sort_keys=True))
        tmp.replace(path)
        print(f"answer {name!r} recorded")

    # --- feedback ------------------------------------------------------------------------------
    def check(self, *check_ids: str) -> bool:
        """Formative feedback: one line per check (all of the lab's checks when none is named)."""
        if self._conn.grading or self._live is None:
            print("checks run by the grader, outside this notebook")
            return False
        # Only a live session (the full package, an engine) gets here: never the sandbox.
        from ladderlab.grading.feedback import FAIL, line, live_feedback

        settings, env = self._live
        try:
            lines = live_feedback(settings, env, self.id, list(check_ids),
                                  _read_answers(Path(self._conn.answers_path)))
        except Exception as exc:
            print(f"{FAIL} could not run the checks: {exc}".splitlines()[0])
            return False
        for passed, cid, feedback in lines:
            print(line(passed, cid, feedback))
        return all(p for p, _, _ in lines)

    def progress(self) -> bool:
        """Every check of the lab, as in :meth:`check` with no arguments."""
        return self.check()

    # --- status ----------------------------------------------------------------------------------
    def _time_left(self) -> str:
        left = self._conn.expires - time.time()
        return "expired" if left <= 0 else f"{int(left // 3600)}h{int(left % 3600 // 60):02d}m"

    def __repr__(self) -> str:
        lines = [f"lab {self.id} - learner {self.learner} - environment {self.env_id} - {self._time_left()} left"]
        for name, h in self._conn.hosts.items():
            lines.append(f"  {name:<10} {h.role:<8} {h.address}")
        if self._conn.params:
            lines.append("  params: " + ", ".join(f"{k}={v}" for k, v in self._conn.params.items()))
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        e = html.escape
        rows = "".join(f"<tr><td><code>{e(n)}</code></td><td>{e(h.role)}</td><td><code>{e(h.address)}</code></td></tr>"
                       for n, h in self._conn.hosts.items())
        params = "".join(f"<tr><td><code>{e(k)}</code></td><td><code>{e(str(v))}</code></td></tr>"
                         for k, v in self._conn.params.items())
        return (f"<div><b>{e(self.id)}</b> &middot; learner <code>{e(self.learner)}</code> &middot; "
                f"environment <code>{e(self.env_id)}</code> &middot; {e(self._time_left())} left"
                f"<table><tr><th>host</th><th>role</th><th>address</th></tr>{rows}</table>"
                f"<table><tr><th>parameter</th><th>your value</th></tr>{params}</table></div>")

    def stop(self) -> None:
        """Tear the environment down (the next ``start`` brings a fresh one)."""
        self._backend.close()
        if self._live is not None:
            self._live[1].down()


def _read_answers(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


_CURRENT: Lab | None = None


def current() -> Lab | None:
    return _CURRENT


def live_connection(settings: Any, env: Any, lab_id: str) -> Connection:
    """The connection file for a running environment (``ladderlab env connect``): every host reachable, the
    environment's SSH key, the learner's answers file."""
    from ladderlab.environments.runtime import key_path

    rec = env.record
    answers = settings.state_dir / "answers" / rec.learner / f"{lab_id}.json"
    try:
        key = key_path(settings, rec.id).read_text()
    except OSError:
        key = ""
    hosts = {n: HostEntry(h.address, h.role, h.ssh_host_key, True) for n, h in rec.hosts.items()}
    return Connection(lab=lab_id, env_id=rec.id, learner=rec.learner, params=rec.learner_params(),
                      expires=rec.expires, hosts=hosts, private_key=key, answers_path=str(answers))


def start(lab_id: str, *, learner: str | None = None, fresh: bool = False, transport: str | None = None,
          show: bool = True) -> Lab:
    """Bring up (or reattach to) the learner's environment for ``lab_id`` and return the :class:`Lab`."""
    global _CURRENT
    conn = from_environment()
    if conn is not None:
        if conn.lab != lab_id:
            raise LabError(f"this session is connected to lab {conn.lab!r}, not {lab_id!r}")
        lab = Lab(lab_id, conn, _SSHBackend(conn))
    else:
        lab = _start_live(lab_id, learner, fresh, transport or "docker")
    _CURRENT = lab
    _register_magic()
    if show:
        _display(lab)
    return lab


def _start_live(lab_id: str, learner: str | None, fresh: bool, transport: str) -> Lab:
    from ladderlab.config import Settings
    from ladderlab.course import load_course
    from ladderlab.environments import engine, runtime
    from ladderlab.errors import LadderlabError

    try:
        settings = Settings.from_env()
        course = load_course(settings.course_file, "course.yaml")
        entry = course.lab(lab_id)
        who = learner_id(learner)
        try:
            client = engine.connect(timeout=10)
            client.ping()
        except Exception:
            raise LabError("no Docker engine answers: run `make lab` (or `ladderlab setup`) on this machine, "
                           "or set LADDERLAB_CONNECT to a connection file from `ladderlab env connect`") from None
        print(f"starting {lab_id} for {who} ...", file=sys.stderr)
        env = runtime.up(settings, entry.environment, client=client, learner=who, lab=lab_id,
                         course_id=course.id, reuse=not fresh)
    except LadderlabError as exc:
        raise LabError(str(exc)) from None
    conn = live_connection(settings, env, lab_id)
    return Lab(lab_id, conn, _DockerBackend(env, transport), live=(settings, env))


def _display(lab: Lab) -> None:
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        print(repr(lab))
        return
    if get_ipython() is None:
        print(repr(lab))
    else:
        display(lab)


def sh_magic(line: str, cell: str) -> CommandResult | None:
    """``%%sh <host>``: run the cell as a shell script on a host of the current lab."""
    host = line.strip()
    if _CURRENT is None:
        raise LabError("start the lab first: lab = ladderlab.start('<lab-id>')")
    if not host:
        raise LabError("name the host: %%sh target")
    result = _CURRENT.sh(host, cell)
    sys.stdout.write(result.stdout)
    if result.stderr:
        sys.stderr.write(result.stderr)
    if not result.ok:
        print(f"[exit {result.rc}]")
    return None


def _register_magic() -> None:
    try:
        from IPython import get_ipython
    except ImportError:
        return
    ip = get_ipython()
    if ip is not None:
        register: Callable[..., Any] = ip.register_magic_function
        register(sh_magic, magic_kind="cell", magic_name="sh")
