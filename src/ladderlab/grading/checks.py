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
named-checkzone), and files read through the Docker API (``read_file``,
``read_dir``). It never runs a binary inside a learner's host and never
reads what the learner's code printed. Whatever goes wrong inside a check
(an exception, no verdict at all) is a failed verdict, never a pass.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import pkgutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from ladderlab.environments.transports.base import CommandResult
from ladderlab.errors import LadderlabError

T = TypeVar("T")

#: Longest feedback line kept (one actionable line per check).
FEEDBACK_LIMIT = 300


@dataclass(frozen=True)
class Verdict:
    """The outcome of one check: passed or not, the fraction of its points earned, one line of feedback."""

    passed: bool
    feedback: str
    fraction: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction <= 1.0 or math.isnan(self.fraction):
            raise ValueError(f"fraction must be within [0, 1], got {self.fraction}")


def ok(feedback: str) -> Verdict:
    return Verdict(True, feedback, 1.0)


def fail(feedback: str) -> Verdict:
    return Verdict(False, feedback, 0.0)


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

    def read_file(self, host: str, path: str) -> bytes | None: ...

    def read_dir(self, host: str, path: str) -> dict[str, bytes]: ...

    def stat(self, host: str, path: str) -> FileStat | None: ...

    def processes(self, host: str) -> list[Process]: ...

    def cached(self, key: str, compute: Callable[[], T]) -> T:
        """``compute()`` once per context (checks of one grading share observations, e.g. a ruleset)."""
        ...


CheckFn = Callable[..., Verdict]
REGISTRY: dict[str, CheckFn] = {}


def check(fn: CheckFn) -> CheckFn:
    """Register ``fn`` as ``<module>.<function>`` (``firewall.loopback_allowed``)."""
    domain = fn.__module__.rsplit(".", 1)[-1]
    REGISTRY[f"{domain}.{fn.__name__}"] = fn
    return fn


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


def signature_problems(fn: CheckFn, args: Mapping[str, Any]) -> str | None:
    """Why ``args`` cannot call ``fn`` (missing or unknown keyword), or None."""
    try:
        inspect.signature(fn).bind(None, **args)
    except TypeError as exc:
        return str(exc)
    return None


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


def evaluate(ctx: Context, fn: CheckFn, args: Mapping[str, Any]) -> Verdict:
    """Run one check; anything but a verdict (an exception, None) is a failed verdict."""
    try:
        verdict = fn(ctx, **args)
    except Exception as exc:
        return fail(f"the check could not observe the environment: {type(exc).__name__}: {exc}"[:FEEDBACK_LIMIT])
    if not isinstance(verdict, Verdict):
        return fail("the check produced no verdict")
    line = " ".join(verdict.feedback.split())[:FEEDBACK_LIMIT]
    return Verdict(verdict.passed, line, verdict.fraction if verdict.passed or verdict.fraction < 1 else 0.0)
