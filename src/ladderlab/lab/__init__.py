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

The lab controls: ``lab.reset()`` shows what a fresh environment would cost and
``lab.reset(confirm=True)`` replaces the environment with a fresh one for the
same seed; ``lab.extend(minutes)`` keeps it alive longer, within the course's
``environment_max_minutes``; ``lab.hint("<check-id>")`` shows the check's next
hint from ``lab.yaml`` and records that it was used (the grading of a
submission records the hints used with its evidence). The status panel shows
the time left, and a warning is shown once when less than ten minutes remain.

In the sandbox this module must import with the standard library and paramiko
only, so every heavier import happens inside the functions that need it. It
imports nothing from ``ladderlab.grading`` at module level: the grading side
imports the learner API's connection file, never the other way round at import time.
"""

from __future__ import annotations

import base64
import datetime
import getpass
import json
import math
import os
import re
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
WARN_MINUTES = 10  # the status panel, lab.sh and lab.check warn when less time than this is left
EXTEND_EXAMPLE = 30
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")  # a learner id or lab id that is a plain file name
_CHECK_ID = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
MAX_HINTS_PER_CHECK = 100


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

    def __init__(self, lab_id: str, conn: Connection, backend: _Backend, *, live: Any = None,
                 service: bool = False) -> None:
        self.id = lab_id
        self._conn = conn
        self._backend = backend
        self._live = live  # (settings, environment) when the kernel can reach the engine
        self._service = service  # on a hub: answers, checks and hints go through the ladderlab service
        self._warned: set[tuple[int, str]] = set()  # (expiry, level) warnings already shown

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
        self._notice_expiry()
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
        if self._service:
            _service_call("POST", f"api/labs/{self.id}/answers", {"name": name, "value": value})
            print(f"answer {name!r} recorded")
            return
        path = Path(self._conn.answers_path) if self._conn.answers_path else None
        if path is None:
            raise LabError("this lab session has nowhere to keep answers")
        write_answer(path, name, value)
        print(f"answer {name!r} recorded")

    # --- feedback ------------------------------------------------------------------------------
    def check(self, *check_ids: str) -> bool:
        """Formative feedback: one line per check (all of the lab's checks when none is named)."""
        if self._service and not self._conn.grading:
            from ladderlab.grading.feedback import line

            self._notice_expiry()
            found = _service_call("POST", f"api/labs/{self.id}/check", {"checks": list(check_ids)}, timeout=900)
            for passed, cid, feedback in found["lines"]:
                print(line(passed, cid, feedback))
            return all(p is not False for p, _, _ in found["lines"])
        if self._conn.grading or self._live is None:
            print("checks run by the grader, outside this notebook")
            return False
        # Only a live session (the full package, an engine) gets here: never the sandbox.
        from ladderlab.grading.feedback import FAIL, line, live_feedback

        self._notice_expiry()
        settings, env = self._live
        try:
            lines = live_feedback(settings, env, self.id, list(check_ids),
                                  _read_answers(Path(self._conn.answers_path)))
        except Exception as exc:
            print(f"{FAIL} could not run the checks: {exc}".splitlines()[0])
            return False
        for passed, cid, feedback in lines:
            print(line(passed, cid, feedback))
        return all(p is not False for p, _, _ in lines)

    def progress(self) -> bool:
        """Every check of the lab, as in :meth:`check` with no arguments."""
        return self.check()

    # --- hints ----------------------------------------------------------------------------------
    def hint(self, check_id: str) -> None:
        """Show the next hint for a check (hint 1 of N, then 2 of N...); each hint shown is recorded, and
        the grading of your submission records how many you used."""
        if self._conn.grading:
            print("hints are for practice: none are shown while the grader runs this notebook")
            return
        if self._service:
            got = _service_call("POST", f"api/labs/{self.id}/hints/{check_id}", {})
            texts, index = list(got["texts"]), got["index"]
        else:
            settings = self._settings("lab.hint")
            hints = _lab_hints(settings, self.id)
            if check_id not in hints:
                raise LabError(f"this lab has no check {check_id!r} (checks: {', '.join(hints)})")
            texts = hints[check_id]
            path = hint_log_path(settings.state_dir, self.learner, self.id)
            if path is None:
                raise LabError(f"learner id {self.learner!r} cannot keep a hint log")
            try:
                index = use_hint(path, check_id, len(texts)) if texts else None
            except OSError as exc:
                raise LabError(f"could not record the hint's use in {path}: {exc}") from None
        if not texts:
            print(f"there are no hints for {check_id}")
            return
        if index is None:
            print(f"no more hints for {check_id}: you have seen all {len(texts)}:")
            for i, text in enumerate(texts, 1):
                print(f"  {i}. {text}")
            return
        print(f"hint {index + 1} of {len(texts)} for {check_id}: {texts[index]}")
        if index + 1 < len(texts):
            print(f"  (lab.hint({check_id!r}) again for the next one; hints you use are recorded with your "
                  f"submission)")
        else:
            print("  (that was the last one; hints you use are recorded with your submission)")

    def hints_used(self) -> dict[str, int]:
        """How many hints you have seen, per check of this lab."""
        if self._service:
            return {k: int(v) for k, v in _service_call("GET", f"api/labs/{self.id}/hints").get("used", {}).items()}
        try:
            settings = self._settings("lab.hints_used")
        except LabError:
            return {}
        return hints_used(settings.state_dir, self.learner, self.id)

    def _settings(self, what: str) -> Any:
        if self._live is not None:
            return self._live[0]
        from ladderlab.config import Settings
        from ladderlab.errors import LadderlabError

        try:
            return Settings.from_env()
        except LadderlabError:
            raise LabError(f"{what} needs the course files, which this session cannot see "
                           f"(it reaches its environment over SSH)") from None

    # --- hand in -----------------------------------------------------------------------------------
    def submit(self, notebook: str | None = None, *, timeout: float = 1800) -> Any:
        """Hand this lab's notebook in (nbgrader's exchange, as the Assignments panel's *Submit* does), show the
        grading's progress and then its result; after a pass, your ladder.

        The notebook must be saved first: what is handed in is the file, not this kernel's memory.
        """
        if self.grading:
            print("lab.submit(): nothing is handed in while the notebook is being graded")
            return None
        if self._service:
            return self._submit_via_service(notebook, timeout)
        settings = self._settings("lab.submit")
        from ladderlab.service.handin import describe, submit

        path = self._saved_notebook(notebook)
        handle = _Progress()

        def on_change(sub: Any) -> None:
            handle.show(f"{self.id}: {sub.status}{' — ' + sub.stage if sub.stage else ''}")

        handle.show(f"{self.id}: handing in {path.name} as {self.learner}")
        sub = submit(settings, self.id, path, self.learner, on_change=on_change, timeout=timeout)
        lines = describe(sub)
        handle.show("\n".join(lines))
        if sub.passed:
            _show_ladder(self.learner)
        return sub

    def _saved_notebook(self, notebook: str | None) -> Path:
        """The notebook to hand in (this one, when ``notebook`` is None), refused when it is missing or lacks code
        this kernel ran (unsaved)."""
        from ladderlab.service.handin import kernel_notebook, unsaved_cells

        path = kernel_notebook(self.id, notebook)
        if not path.is_file():
            raise LabError(f"no notebook at {path}: save this notebook, or give its path: lab.submit('path.ipynb')")
        missing = unsaved_cells(path, _executed_cells()) if notebook is None else []
        if missing:
            first = missing[0].strip().splitlines()[0][:60]
            raise LabError(f"{path.name} has unsaved changes (code this kernel ran is not in the file, e.g. "
                           f"{first!r}): save it (Ctrl+S) and run lab.submit() again")
        return path

    def _submit_via_service(self, notebook: str | None, timeout: float) -> Any:
        """On a hub: the notebook file goes to the ladderlab service, which hands it in as this server's hub user
        and grades it; the progress and then the result are shown as locally."""
        import urllib.parse

        path = self._saved_notebook(notebook)
        handle = _Progress()
        handle.show(f"{self.id}: handing in {path.name} as {self.learner}")
        key = _service_call("POST", f"api/labs/{self.id}/submissions", raw=path.read_bytes(), timeout=300)["key"]
        deadline = time.monotonic() + timeout
        shown = ""
        while True:
            sub = _service_call("GET", "api/submissions/" + urllib.parse.quote(key, safe=""))
            now = f"{self.id}: {sub['status']}{' — ' + sub['stage'] if sub.get('stage') else ''}"
            if now != shown:
                handle.show(now)
                shown = now
            if sub["lines"]:
                handle.show("\n".join(sub["lines"]))
                if sub.get("passed"):  # your ladder, as the service reads it for you (the record is out of reach)
                    _show_ladder(None)
                return sub
            if time.monotonic() > deadline:
                raise LabError(f"{self.id}: still {sub['status']} after {timeout:g} s (key {key}); the grading "
                               f"goes on: your trainer sees its result")
            time.sleep(1.0)

    # --- the environment's lifetime -------------------------------------------------------------
    def extend(self, minutes: float) -> None:
        """Keep the environment alive ``minutes`` longer, up to the course's limit from its start."""
        if isinstance(minutes, bool) or not isinstance(minutes, int | float) or not 0 < minutes < math.inf:
            raise LabError(f"lab.extend(minutes): give a positive number of minutes, e.g. "
                           f"lab.extend({EXTEND_EXAMPLE}), not {minutes!r}")
        if self._conn.grading:
            raise LabError("a graded run cannot extend its environment: the grader gives it the time it needs")
        if self._live is None:
            raise LabError("this session reaches its environment over SSH: extend it where it runs "
                           "(ask whoever gave you the connection file)")
        from ladderlab.course import load_course
        from ladderlab.environments import runtime
        from ladderlab.errors import LadderlabError

        settings, env = self._live
        try:
            limit = load_course(settings.course_file, "course.yaml").policies.environment_limit_minutes
        except LadderlabError as exc:
            raise LabError(str(exc)) from None
        record = runtime.load_record(settings, self.env_id)
        if record is None:
            raise LabError(f"environment {self.env_id} is gone (stopped or removed): "
                           f"lab.reset(confirm=True) brings a fresh one")
        try:
            new = extended_expiry(record.created, record.expires, float(minutes), limit, time.time())
        except ValueError as exc:
            raise LabError(str(exc)) from None
        record.expires = new
        runtime._save_record(settings, record)  # the reaper and a reattaching start() read it there
        env.record.expires = new
        self._conn = replace(self._conn, expires=new)
        until = datetime.datetime.fromtimestamp(new).strftime("%H:%M")
        print(f"environment {self.env_id} extended by {minutes:g} min: {format_left(new - time.time())} left "
              f"(until {until}); the course lets an environment live {format_left(limit * 60)} from its start")

    def _expires(self) -> float:
        """The current expiry (re-read from the environment's record: another kernel may have extended it)."""
        if self._live is not None:
            from ladderlab.environments.runtime import load_record

            try:
                record = load_record(self._live[0], self.env_id)
            except Exception:  # reading the time left never breaks the command that asked
                record = None
            if record is not None and record.expires != self._conn.expires:
                self._conn = replace(self._conn, expires=record.expires)
        return self._conn.expires

    def _time_left(self) -> str:
        return format_left(self._expires() - time.time())

    def _expiry_warning(self, *, once: bool) -> str | None:
        """The warning for the time left, if any; with ``once``, None when it was shown for this expiry."""
        if self._conn.grading:
            return None
        expires = self._expires()
        left = expires - time.time()
        level = expiry_level(left)
        if level is None:
            return None
        key = (int(expires), level)
        if once and key in self._warned:
            return None
        self._warned.add(key)
        return expiry_warning(level, left)

    def _notice_expiry(self) -> None:
        warning = self._expiry_warning(once=True)
        if warning:
            print(warning, file=sys.stderr)

    # --- reset -----------------------------------------------------------------------------------
    def reset(self, *, confirm: bool = False) -> None:
        """Replace the environment with a fresh one for the same seed (the same values). Without
        ``confirm=True`` it only shows what would be lost."""
        if self._conn.grading:
            raise LabError("a graded run never resets: the grader started this environment fresh for your notebook")
        if self._live is None:
            raise LabError("this session reaches its environment over SSH: reset it where it runs "
                           "(`ladderlab env down ID`, then a new connection file from `ladderlab env connect`)")
        settings, env = self._live
        record = env.record
        if not confirm:
            _show(_Notice(*reset_notice(self.id, record.id, list(record.hosts), record.created, time.time())))
            return
        from ladderlab.environments import runtime

        transport = self._backend.transport if isinstance(self._backend, _DockerBackend) else "docker"
        self._backend.close()
        print(f"removing {record.id} ...", file=sys.stderr)
        try:
            env.down()
        except Exception as exc:
            raise LabError(f"could not remove {record.id}: {exc}".splitlines()[0]) from None
        print(f"starting a fresh {record.env} environment for the same seed ...", file=sys.stderr)
        try:
            fresh = runtime.up(settings, record.env, client=env.client, learner=record.learner,
                               lab=record.lab or self.id, seed=record.seed,
                               overrides={k: str(v) for k, v in record.params.items()})
        except Exception as exc:
            raise LabError(f"{record.id} is removed, but a fresh environment did not start: "
                           f"{exc}".splitlines()[0] + f" (ladderlab.start({self.id!r}) tries again)") from None
        self._live = (settings, fresh)
        self._backend = _DockerBackend(fresh, transport)
        self._conn = live_connection(settings, fresh, self.id)
        self._warned.clear()
        print(f"{record.id} removed; fresh environment {fresh.id} started with the same values", file=sys.stderr)
        _display(self)

    # --- status ----------------------------------------------------------------------------------
    def __repr__(self) -> str:
        lines = [f"lab {self.id} - learner {self.learner} - environment {self.env_id} - {self._time_left()} left"]
        warning = self._expiry_warning(once=False)
        if warning:
            lines.append(warning)
        for name, h in self._conn.hosts.items():
            lines.append(f"  {name:<10} {h.role:<8} {h.address}")
        if self._conn.params:
            lines.append("  params: " + ", ".join(f"{k}={v}" for k, v in self._conn.params.items()))
        return "\n".join(lines)

    def _repr_html_(self) -> str | None:
        return _html("lab/status.html.j2", lab=self.id, learner=self.learner, env_id=self.env_id,
                     time_left=self._time_left(), warning=self._expiry_warning(once=False),
                     hosts=list(self._conn.hosts.items()), params=[(k, str(v)) for k, v in self._conn.params.items()])

    def stop(self) -> None:
        """Tear the environment down (the next ``start`` brings a fresh one)."""
        self._backend.close()
        if self._live is not None:
            self._live[1].down()


# --- the lab controls' logic (standard library only: this module imports in the sandbox) ------------


def format_left(seconds: float) -> str:
    """``1h05m`` (``expired`` when none is left)."""
    if seconds <= 0:
        return "expired"
    minutes = math.ceil(seconds / 60)
    return f"{minutes // 60}h{minutes % 60:02d}m"


def expiry_level(seconds_left: float) -> str | None:
    """``expired``, ``low`` (less than :data:`WARN_MINUTES` left) or None."""
    if seconds_left <= 0:
        return "expired"
    if seconds_left < WARN_MINUTES * 60:
        return "low"
    return None


def expiry_warning(level: str, seconds_left: float) -> str:
    if level == "expired":
        return ("\u26a0 this lab environment has expired: ladderlab may remove it at any moment. "
                "lab.reset(confirm=True) brings a fresh one (your notebook is kept).")
    minutes = max(1, math.ceil(seconds_left / 60))
    return (f"\u26a0 {minutes} minute{'s' if minutes != 1 else ''} left in this lab environment: "
            f"lab.extend({EXTEND_EXAMPLE}) adds time (within the course's limit). When it expires, its hosts "
            f"and what you did on them are gone; your notebook is kept.")


def extended_expiry(created: float, expires: float, minutes: float, limit_minutes: int, now: float) -> float:
    """The expiry after extending by ``minutes``; ValueError when it is past, or past the limit (counted
    from ``created``)."""
    if expires <= now:
        raise ValueError("this environment has expired and may be removed at any moment: "
                         "lab.reset(confirm=True) brings a fresh one")
    room = max(0.0, created + limit_minutes * 60 - expires)
    if minutes * 60 > room + 1:
        raise ValueError(f"lab.extend({minutes:g}): the course lets an environment live "
                         f"{format_left(limit_minutes * 60)} from its start; this one can be extended by "
                         f"{int(room // 60)} more minute{'s' if int(room // 60) != 1 else ''}")
    return expires + minutes * 60


def reset_notice(lab_id: str, env_id: str, hosts: list[str], created: float, now: float) -> tuple[str, str | None]:
    """What ``lab.reset()`` without ``confirm`` shows: (text, html; None where Jinja2 is not installed)."""
    since = datetime.datetime.fromtimestamp(created).strftime("%H:%M")
    ago = max(0, int((now - created) // 60))
    lost = (f"the hosts {', '.join(hosts)} as they are now: everything done on them since the environment "
            f"started at {since} ({ago} min ago): files, firewall rules, services, packages")
    kept = "this notebook, your recorded answers (lab.answer) and the hints you used"
    text = (f"lab.reset() removes environment {env_id} and starts a fresh one for {lab_id} with your same "
            f"values (same seed, same parameters).\n  lost: {lost}\n  kept: {kept}\n"
            f"to go ahead: lab.reset(confirm=True)")
    markup = _html("lab/reset.html.j2", env_id=env_id, lab_id=lab_id, lost=lost, kept=kept)
    return text, markup


def _html(template: str, **values: Any) -> str | None:
    """A rich cell output: ``template`` rendered by :mod:`ladderlab.templating` (autoescaped). None where Jinja2
    is not installed (the grading sandbox: the trusted side keeps only the text of its outputs anyway,
    grading/pipeline.sanitize_outputs), and IPython shows the object's text instead."""
    try:
        from ladderlab.templating import render
    except ModuleNotFoundError as exc:
        if exc.name not in ("jinja2", "markupsafe"):
            raise
        return None
    return render(template, **values)


class _Notice:
    """One cell output: plain text, or HTML in a notebook (when there is HTML)."""

    def __init__(self, text: str, markup: str | None) -> None:
        self.text = text
        self.markup = markup

    def __repr__(self) -> str:
        return self.text

    def _repr_html_(self) -> str | None:
        return self.markup


def hint_log_path(state_dir: Path, learner: str, lab_id: str) -> Path | None:
    """``<state>/hints/<learner>/<lab>.json``; None for an id that is not a plain name (never a path elsewhere)."""
    if not (_SAFE_ID.fullmatch(learner) and _SAFE_ID.fullmatch(lab_id)):
        return None
    return state_dir / "hints" / learner / f"{lab_id}.json"


def _read_json_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _counts(raw: Any) -> dict[str, int]:
    if not isinstance(raw, dict):
        return {}
    return {k: v for k, v in sorted(raw.items())
            if isinstance(k, str) and len(k) <= 64 and _CHECK_ID.fullmatch(k)
            and isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_HINTS_PER_CHECK}


def hints_used(state_dir: Path, learner: str, lab_id: str) -> dict[str, int]:
    """How many hints ``learner`` has seen per check of ``lab_id`` (checks with none left out)."""
    path = hint_log_path(state_dir, learner, lab_id)
    return {} if path is None else _counts(_read_json_object(path).get("used"))


def use_hint(path: Path, check_id: str, available: int, now: float | None = None) -> int | None:
    """Record that the next hint of ``check_id`` is shown and return its index (0-based); None, recording
    nothing, when all ``available`` hints were used. Writers take turns (a lock file); the log is replaced
    atomically."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    lock = os.open(path.with_suffix(".lock"), os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = _read_json_object(path)
        used = _counts(data.get("used"))
        n = used.get(check_id, 0)
        if n >= min(available, MAX_HINTS_PER_CHECK):
            return None
        used[check_id] = n + 1
        events = data.get("events")
        events = [ev for ev in events if isinstance(ev, dict)] if isinstance(events, list) else []
        events.append({"check": check_id, "hint": n + 1, "at": int(time.time() if now is None else now)})
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"version": 1, "used": used, "events": events[-1000:]}, indent=1, sort_keys=True))
        os.replace(tmp, path)
        return n
    finally:
        os.close(lock)


def _lab_hints(settings: Any, lab_id: str) -> dict[str, list[str]]:
    """check id -> its hints, from the lab's ``lab.yaml`` (every check, hidden ones too: hints are written
    for learners)."""
    from ladderlab.course import load_course
    from ladderlab.course.labs import LabSpec
    from ladderlab.course.loading import load_model
    from ladderlab.errors import LadderlabError

    try:
        load_course(settings.course_file, "course.yaml").lab(lab_id)
        spec = load_model(settings.root / "labs" / lab_id / "lab.yaml", LabSpec, f"labs/{lab_id}/lab.yaml")
    except LadderlabError as exc:
        raise LabError(str(exc)) from None
    except KeyError:
        raise LabError(f"course.yaml has no lab {lab_id!r}") from None
    return {cid: list(c.hints) for cid, c in spec.checks.items()}


def write_answer(path: Path, name: str, value: Any) -> None:
    """Set one named answer in the answers file at ``path`` (replaced whole, never half-written)."""
    answers = _read_answers(path)
    answers[name] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(answers, indent=1, sort_keys=True))
    tmp.replace(path)


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
    service = conn is None and bool(os.environ.get(SERVICE_URL_ENV) and os.environ.get("JUPYTERHUB_API_TOKEN"))
    if service:
        conn = _connect_via_service(lab_id, fresh)
    if conn is not None:
        if conn.lab != lab_id:
            raise LabError(f"this session is connected to lab {conn.lab!r}, not {lab_id!r}")
        lab = Lab(lab_id, conn, _SSHBackend(conn), service=service)
    else:
        lab = _start_live(lab_id, learner, fresh, transport or "docker")
    _CURRENT = lab
    _register_magic()
    if show:
        _display(lab)
    return lab


SERVICE_URL_ENV = "LADDERLAB_SERVICE_URL"


def _service_call(method: str, path: str, body: Any = None, *, timeout: float = 120, raw: bytes | None = None) -> Any:
    """One call to the hub's ladderlab service as this server's hub user (its token); its JSON answer.
    A refusal is a :class:`LabError` with the service's message."""
    import urllib.error
    import urllib.request

    base = os.environ.get(SERVICE_URL_ENV, "")
    token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
    if not base.startswith(("http://", "https://")) or not token:
        raise LabError(f"this session has no ladderlab service (${SERVICE_URL_ENV} and the hub's token)")
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base.rstrip("/") + "/" + path, data=data, method=method,  # noqa: S310 - http(s)
                                 headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - http(s) only, checked above
            text = resp.read().decode()
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read().decode()).get("message") or exc.reason
        except ValueError:
            message = exc.reason
        raise LabError(f"the ladderlab service refused: {message}") from None
    except OSError as exc:
        raise LabError(f"the ladderlab service does not answer ({base}): {exc}") from None
    try:
        return json.loads(text)
    except ValueError:
        raise LabError(f"the ladderlab service answered something that is not JSON: {text[:80]!r}") from None


def _connect_via_service(lab_id: str, fresh: bool) -> Connection:
    """On a hub: the ladderlab service starts (or reattaches to) this learner's environment, the learner being the
    hub user of this server's token; its connection is kept 0600 in ~/.ladderlab/connect/<lab>.json."""
    print(f"starting {lab_id} ...", file=sys.stderr)
    try:
        got = _service_call("POST", f"api/labs/{lab_id}/env" + ("?fresh=1" if fresh else ""), {}, timeout=900)
        conn = Connection.from_json(json.dumps(got))
    except LabError as exc:
        raise LabError(f"could not start {lab_id}: {exc}") from None
    except (ValueError, TypeError, KeyError) as exc:
        raise LabError(f"the ladderlab service answered something that is not a connection: {exc}") from None
    folder = Path.home() / ".ladderlab" / "connect"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    conn.write(folder / f"{lab_id}.json")
    return conn


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
                         course_id=course.id, reuse=not fresh,
                         say=lambda line: print(line, file=sys.stderr) if "lost" in line else None)
    except LadderlabError as exc:
        raise LabError(str(exc)) from None
    conn = live_connection(settings, env, lab_id)
    return Lab(lab_id, conn, _DockerBackend(env, transport), live=(settings, env))


def _executed_cells() -> list[str]:
    """The code this kernel ran before the current cell (IPython's input history), or nothing outside IPython."""
    try:
        from IPython import get_ipython
    except ImportError:
        return []
    ip = get_ipython()
    if ip is None:
        return []
    history: list[str] = list(ip.history_manager.input_hist_raw)
    return [h for h in history[1:-1] if h.strip()]


class _Progress:
    """One cell output, updated in place while a submission is graded (printed lines outside a notebook)."""

    def __init__(self) -> None:
        self._handle: Any = None

    def show(self, text: str) -> None:
        try:
            from IPython import get_ipython
            from IPython.display import display
        except ImportError:
            print(text)
            return
        if get_ipython() is None:
            print(text)
            return
        notice = _Notice(text, _html("lab/progress.html.j2", text=text))
        if self._handle is None:
            self._handle = display(notice, display_id=True)
        else:
            self._handle.update(notice)


def _show_ladder(learner: str | None) -> None:
    """The learner's ladder under a passing hand-in; when it cannot be read, say so: the hand-in stands."""
    from ladderlab.lab.ladder_view import my_ladder

    try:
        _show(my_ladder(learner))
    except LabError as exc:
        print(f"(your ladder could not be shown just now: {exc}; ladderlab.my_ladder() shows it)", file=sys.stderr)


def _display(lab: Lab) -> None:
    _show(lab)


def _show(obj: object) -> None:
    """One cell output: rich in a notebook, else its text."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        print(repr(obj))
        return
    if get_ipython() is None:
        print(repr(obj))
    else:
        display(obj)


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
