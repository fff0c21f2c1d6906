"""One way to read a human-written YAML file into a typed model.

Whatever is wrong with the file (missing, not UTF-8, bad YAML, wrong shape,
wrong values) comes back as a single :class:`~ladderlab.errors.ConfigError`
naming the file, the path of each bad field and what was expected: never a
traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from ladderlab.errors import ConfigError

M = TypeVar("M", bound=BaseModel)

MAX_BYTES = 2 * 1024 * 1024
#: Separator between the "path: problem" lines of a cross-reference error.
CROSS_REF_SEP = "\n"


def field_path(loc: tuple[int | str, ...]) -> str:
    """Render a pydantic error location as ``labs[0].cells[1].level``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif out:
            out += f".{part}"
        else:
            out = str(part)
    return out


def _expected(err: Any) -> str:
    msg = str(err.get("msg", "invalid value"))
    kind = err.get("type", "")
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return "unknown field (check the spelling)"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if msg.startswith("Assertion failed, "):
        msg = msg[len("Assertion failed, ") :]
    return msg[:1].lower() + msg[1:] if msg else "invalid value"


def errors_from_validation(exc: ValidationError) -> list[tuple[str, str]]:
    """Turn a pydantic ValidationError into ``(field path, what was expected)`` pairs."""
    problems = []
    for err in exc.errors():
        loc = tuple(p for p in err.get("loc", ()) if not (isinstance(p, str) and p.startswith("function-")))
        what = _expected(err)
        if CROSS_REF_SEP in what:
            # A model validator reports several "path: problem" lines at once, each path relative to the
            # model it validates (``clauses[2]`` inside ``ladder.tracks[3]``).
            prefix = field_path(loc)
            for line in filter(None, what.split(CROSS_REF_SEP)):
                where, _, problem = line.partition(": ")
                joiner = "" if not prefix or where.startswith("[") else "."
                problems.append((prefix + joiner + where, problem))
            continue
        problems.append((field_path(loc), what))
    return problems


def read_yaml(path: Path, display: str | None = None) -> Any:
    """Parse ``path`` as YAML (safe loader); raise ConfigError on any problem."""
    name = display or str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(name, [("", "file not found")]) from None
    except OSError as exc:
        raise ConfigError(name, [("", f"cannot read file: {exc.strerror or exc}")]) from None
    if len(raw) > MAX_BYTES:
        raise ConfigError(name, [("", f"file is larger than {MAX_BYTES} bytes")])
    return parse_yaml_text(raw, name)


def parse_yaml_text(raw: bytes | str, name: str) -> Any:
    """Parse YAML text; errors name ``name`` and the line and column."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as exc:
        raise ConfigError(name, [("", f"not UTF-8 text (byte {exc.start})")]) from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(name, [(where, f"invalid YAML: {exc.problem or exc}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(name, [("", f"invalid YAML: {exc}")]) from None
    except RecursionError:
        raise ConfigError(name, [("", "invalid YAML: nested too deeply")]) from None


def validate(data: Any, model: type[M], name: str, context: dict[str, Any] | None = None) -> M:
    """Validate already-parsed data against ``model``; ConfigError on failure."""
    if data is None:
        raise ConfigError(name, [("", "file is empty; expected a mapping of fields")])
    if not isinstance(data, dict):
        raise ConfigError(name, [("", f"expected a mapping at the top level, got {type(data).__name__}")])
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        raise ConfigError(name, errors_from_validation(exc)) from None
    except RecursionError:
        raise ConfigError(name, [("", "structure is recursive or nested too deeply")]) from None


def load_model(path: Path, model: type[M], display: str | None = None, context: dict[str, Any] | None = None) -> M:
    """Read and validate ``path`` into ``model``."""
    name = display or str(path)
    return validate(read_yaml(path, name), model, name, context)
