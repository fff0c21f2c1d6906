"""What a check is: a function of a trusted context that returns a verdict.

Checks live in the course's ``graders/`` folder, one module per skill domain,
each check decorated with :func:`check`::

    @check
    def loopback_allowed(ctx: Context, *, host: str, port: int) -> Verdict:
        state = tcp_states(ctx.observe(host), [("127.0.0.1", port)])[0]
        return ok("loopback answers") if state == "open" else fail(f"...")

A check sees the environment only through :class:`Context`: trusted tools run
in an observer that shares a host's network namespace (``observe``), an
isolated scratch container (``scratch``), a container of a host's *image* (not
the host: ``tools``, for its daemon's own validators such as promtool or
named-checkzone), a new network-less container of a host's image for one run
of the learner's code beside hidden material (``isolated``), and files read
through the Docker API (``read_file``, ``read_dir``). It never runs a binary inside a learner's host and never
reads what the learner's code printed.

A verdict has a status (DESIGN.md, "Verdicts and faults"): ``passed``,
``failed`` (the learner's work is wrong) or ``error`` (the grader could not
judge: infrastructure, our own tools). A check raises :class:`CannotJudge`
(or lets a Docker/engine error escape) when it cannot observe; any other
exception inside a check is a defect of the check, also an ``error``;
:class:`~ladderlab.errors.LearnerState` (an oversized file, control
characters where a check parses text) is the learner's state: ``failed``. An
error never passes; the pipeline decides whether the learner caused it (a
host the learner's code crashed is a failure) before anything is recorded.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import pkgutil
import sys
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar, overload

from ladderlab.environments.transports.base import CommandResult
from ladderlab.errors import LadderlabError, LearnerState

T = TypeVar("T")

#: Longest feedback line kept (one actionable line per check).
FEEDBACK_LIMIT = 300


PASSED, FAILED, ERROR = "passed", "failed", "error"
STATUSES = (PASSED, FAILED, ERROR)


class CannotJudge(Exception):
    """Raised by a check when the grader cannot judge (our tool broke, an observer died, a timeout of ours).

    Never the learner's failure: the grading is incomplete and records nothing.
    """


@dataclass(frozen=True)
class Verdict:
    """The outcome of one check: passed or not, the fraction of its points earned, one line of feedback,
    and its status (``passed``, ``failed`` or ``error``; see the module's docstring)."""

    passed: bool
    feedback: str
    fraction: float = 1.0
    status: str = ""

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction <= 1.0 or math.isnan(self.fraction):
            raise ValueError(f"fraction must be within [0, 1], got {self.fraction}")
        if not self.status:
            object.__setattr__(self, "status", PASSED if self.passed else FAILED)
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {self.status!r}")
        if self.status == ERROR and (self.passed or self.fraction):
            raise ValueError("an error verdict never passes and earns nothing")
        if self.passed != (self.status == PASSED):
            raise ValueError(f"passed={self.passed} contradicts status {self.status!r}")


def ok(feedback: str) -> Verdict:
    return Verdict(True, feedback, 1.0)


def fail(feedback: str) -> Verdict:
    return Verdict(False, feedback, 0.0)


def error(feedback: str) -> Verdict:
    """The grader could not judge (never a learner's failure)."""
    return Verdict(False, feedback, 0.0, ERROR)


@dataclass(frozen=True)
class FileStat:
    """What the Docker API says about a file in a container (not what ``ls`` inside it says)."""

    mode: int  # permission bits
    uid: int
    gid: int
    size: int


@dataclass(frozen=True)
class Process:
    """A process of a container, as the engine lists it from the host's /proc."""

    uid: int
    pid: int
    args: str


@dataclass(frozen=True)
class Listener:
    """The process behind a listening socket, identified by trusted means (the socket's owner and the
    executable the kernel runs for it, read by an observer in the host's namespaces), never by argv."""

    pid: int  # in the host's own pid namespace
    uid: int
    exe: str  # where /proc/<pid>/exe points
    exe_sha256: str  # digest of the running executable's bytes


class Runner(Protocol):
    """Something that runs trusted commands: an observer, or a scratch container."""

    def run(self, command: str, *args: object, timeout: float | None = None) -> CommandResult: ...

    def put_file(self, path: str, data: bytes) -> None: ...


class Context(Protocol):
    """What a check may use. ``LiveContext`` is the real one; tests use a fake."""

    @property
    def params(self) -> Mapping[str, str | int]: ...

    @property
    def answers(self) -> Mapping[str, Any]: ...

    def address(self, host: str) -> str: ...

    def observe(self, host: str, *, admin: bool = False) -> Runner: ...

    def scratch(self) -> Runner: ...

    def tools(self, host: str) -> Runner: ...

    def isolated(self, host: str) -> AbstractContextManager[Runner]:
        """A new container of ``host``'s image with no network, for one ``with`` block only (removed after):
        where a check runs the learner's code beside hidden material (a reference, fixtures) that no other
        run, and nothing the learner did before, can see or prepare."""
        ...

    def read_file(self, host: str, path: str) -> bytes | None: ...

    def read_dir(self, host: str, path: str) -> dict[str, bytes]: ...

    def stat(self, host: str, path: str) -> FileStat | None: ...

    def processes(self, host: str) -> list[Process]: ...

    def listener(self, host: str, port: int, proto: str = "tcp") -> Listener | None:
        """The process listening on ``port`` inside ``host`` (None: nothing listens)."""
        ...

    def process_environments(self, host: str) -> dict[int, list[str]]:
        """Every process of ``host`` (its pid) -> its environment (``NAME=value`` entries, from the kernel's
        /proc/<pid>/environ, read by an observer in the host's namespaces)."""
        ...

    def cached(self, key: str, compute: Callable[[], T]) -> T:
        """``compute()`` once per context (checks of one grading share observations, e.g. a ruleset)."""
        ...

    def restart(self, *hosts: str) -> None:
        """Restart lab hosts through the engine, as a reboot would (every process killed, the container's
        start-up run again, its files kept), and wait until they run again. Only a disruptive check may
        call it. Observations cached before are forgotten. :class:`~ladderlab.errors.LearnerState` when a
        host does not come back (its start-up is the learner's)."""
        ...

    def put_file(self, host: str, path: str, data: bytes, *, mode: int = 0o644, uid: int = 0) -> None:
        """Write ``data`` to ``path`` in ``host`` through the engine (no binary in the host runs); only a
        disruptive check may call it."""
        ...

    # The other actions, for disruptive checks only; what a check leaves undone is undone when it ends.
    def stop(self, *hosts: str) -> None:
        """Kill ``hosts`` (a power cut) and wait until they are down."""
        ...

    def start(self, *hosts: str) -> None:
        """Start hosts :meth:`stop` stopped, and wait until they run."""
        ...

    def pause(self, *hosts: str) -> None:
        """Freeze every process of ``hosts`` (a hung machine)."""
        ...

    def unpause(self, *hosts: str) -> None: ...

    def disconnect(self, host: str, network: str) -> None:
        """Cut ``host`` off one of the environment's networks (its env.yaml name)."""
        ...

    def connect(self, host: str, network: str) -> None:
        """Undo :meth:`disconnect` (the same address)."""
        ...

    def signal(self, host: str, pid: int, sig: str = "KILL") -> bool:
        """Send ``sig`` to process ``pid`` of ``host`` (as :meth:`listener` numbers it); False: it is gone."""
        ...


CheckFn = Callable[..., Verdict]
REGISTRY: dict[str, CheckFn] = {}
#: The attribute :func:`check` sets on a check that changes the environment (``disruptive=True``).
DISRUPTIVE = "ladderlab_disruptive"


@overload
def check(fn: CheckFn, /) -> CheckFn: ...


@overload
def check(*, disruptive: bool = False) -> Callable[[CheckFn], CheckFn]: ...


def check(fn: CheckFn | None = None, /, *, disruptive: bool = False) -> CheckFn | Callable[[CheckFn], CheckFn]:
    """Register ``fn`` as ``<module>.<function>`` (``firewall.loopback_allowed``).

    ``@check(disruptive=True)`` marks a check that acts on the environment (restarts hosts: see
    :meth:`Context.restart`). Such checks run alone, one after another, once every other check of the
    grading has observed the environment as the learner left it; only they may call the context's actions.
    In practice (``lab.check``) one runs only when the learner names it.
    """

    def register(f: CheckFn) -> CheckFn:
        domain = f.__module__.rsplit(".", 1)[-1]
        setattr(f, DISRUPTIVE, disruptive)
        REGISTRY[f"{domain}.{f.__name__}"] = f
        return f

    return register(fn) if fn is not None else register


def is_disruptive(fn: CheckFn) -> bool:
    """Whether ``fn`` was registered with ``@check(disruptive=True)``."""
    return bool(getattr(fn, DISRUPTIVE, False))


def load_graders(root: Path) -> dict[str, CheckFn]:
    """Import every module of ``<root>/graders`` (once) and return the registry."""
    package = root / "graders"
    init = package / "__init__.py"
    if not init.is_file():
        raise LadderlabError(f"{init} is missing: the course has no graders package")
    loaded = sys.modules.get("graders")
    if loaded is None or Path(getattr(loaded, "__file__", "") or "").resolve() != init.resolve():
        spec = importlib.util.spec_from_file_location("graders", init, submodule_search_locations=[str(package)])
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["graders"] = module
        spec.loader.exec_module(module)
    for info in pkgutil.iter_modules([str(package)]):
        if not info.name.startswith("_"):
            importlib.import_module(f"graders.{info.name}")
    return REGISTRY


def render_args(args: Mapping[str, Any], params: Mapping[str, str | int]) -> dict[str, Any]:
    """Fill ``"{param}"`` placeholders in check arguments from the learner's parameters.

    A string that is exactly one placeholder takes the parameter's value and type
    (``"{metrics_port}"`` -> 9137); other strings are formatted; lists recurse.
    """

    def one(value: Any) -> Any:
        if isinstance(value, str):
            if value.startswith("{") and value.endswith("}") and value[1:-1] in params:
                return params[value[1:-1]]
            return value.format_map(params)
        if isinstance(value, list):
            return [one(v) for v in value]
        if isinstance(value, dict):
            return {k: one(v) for k, v in value.items()}
        return value

    return {k: one(v) for k, v in args.items()}


def one_line(text: str) -> str:
    """Feedback as one printable line: control characters (newlines, NULs, escapes) become spaces."""
    printable = "".join(ch if ch.isprintable() else " " for ch in str(text))
    return " ".join(printable.split())[:FEEDBACK_LIMIT]


def evaluate(ctx: Context, fn: CheckFn, args: Mapping[str, Any]) -> Verdict:
    """Run one check. A verdict stands as returned; :class:`CannotJudge`, an engine error or any other
    exception (a defect of the check) is an ``error`` verdict; no verdict at all is an ``error`` too."""
    try:
        verdict = fn(ctx, **args)
    except CannotJudge as exc:
        return error(one_line(f"the grader could not judge: {exc}"))
    except LearnerState as exc:
        return fail(one_line(str(exc)))
    except Exception as exc:
        return error(one_line(f"the grader could not judge: {type(exc).__name__}: {exc}"))
    if not isinstance(verdict, Verdict):
        return error(f"the check {getattr(fn, '__name__', fn)!s} produced no verdict")
    line = one_line(verdict.feedback)
    if verdict.status == ERROR:
        return error(line)
    return Verdict(verdict.passed, line, verdict.fraction if verdict.passed or verdict.fraction < 1 else 0.0)
