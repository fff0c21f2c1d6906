"""Per-learner variants: a seed from (course, learner, lab), parameters from the seed.

The same inputs always give the same seed and the same parameters, so grading
reproduces the learner's variant; each parameter is drawn from its own stream
(``sha256(seed, name)``), so adding a parameter never changes the others.

>>> derive_seed("ladderlab-sre", "ada", "sec-1-iptables-hardening")[:12]
'1ac77bb1bfea'
"""

from __future__ import annotations

import hashlib
import random
import re

from ladderlab.environments.spec import ChoiceParam, HexParam, IntParam, Param
from ladderlab.errors import UsageError

LEARNER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
SEED = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


def check_learner(learner: str) -> str:
    """Return ``learner`` if it is a valid learner id, else raise UsageError."""
    if not LEARNER.fullmatch(learner):
        raise UsageError(
            f"learner id {learner!r} is invalid: "
            "use 1-64 letters, digits and . _ @ - (starting with a letter or digit)")
    return learner


def check_seed(seed: str) -> str:
    if not SEED.fullmatch(seed):
        raise UsageError(f"seed {seed!r} is invalid: use 1-128 letters, digits and . _ -")
    return seed


def derive_seed(course_id: str, learner: str, lab: str) -> str:
    """The learner's seed for a lab in a course (64 hex digits)."""
    material = "\0".join(("ladderlab-seed-v1", course_id, check_learner(learner), lab)).encode()
    return hashlib.sha256(material).hexdigest()


def _stream(seed: str, name: str) -> random.Random:
    digest = hashlib.sha256(f"{seed}\0{name}".encode()).digest()
    return random.Random(int.from_bytes(digest, "big"))  # noqa: S311 - variety, not secrecy


def draw(name: str, param: Param, seed: str) -> str | int:
    rng = _stream(seed, name)
    if isinstance(param, IntParam):
        return rng.randint(param.min, param.max)
    if isinstance(param, ChoiceParam):
        return rng.choice(param.values)
    if isinstance(param, HexParam):
        return f"{param.prefix}{rng.getrandbits(4 * param.length):0{param.length}x}{param.suffix}"
    raise TypeError(f"unknown parameter type {type(param).__name__}")


def render_params(params: dict[str, Param], seed: str) -> dict[str, str | int]:
    """All parameters of an environment for ``seed``, in declaration order."""
    return {name: draw(name, spec, check_seed(seed)) for name, spec in params.items()}


def apply_overrides(params: dict[str, Param], values: dict[str, str | int],
                    overrides: dict[str, str]) -> dict[str, str | int]:
    """Replace seeded values with explicit ones, each checked against its parameter's spec."""
    out = dict(values)
    for name, raw in overrides.items():
        spec = params.get(name)
        if spec is None:
            raise UsageError(f"--param {name}: no such parameter (declared: {', '.join(params) or 'none'})")
        if isinstance(spec, IntParam):
            if not raw.isdigit() or not spec.min <= int(raw) <= spec.max:
                raise UsageError(f"--param {name}: expected an integer {spec.min}-{spec.max}, got {raw!r}")
            out[name] = int(raw)
        elif isinstance(spec, ChoiceParam):
            if raw not in spec.values:
                raise UsageError(f"--param {name}: expected one of {', '.join(spec.values)}, got {raw!r}")
            out[name] = raw
        else:
            if not re.fullmatch(rf"{re.escape(spec.prefix)}[0-9a-f]{{{spec.length}}}{re.escape(spec.suffix)}", raw):
                raise UsageError(f"--param {name}: expected {spec.prefix}<{spec.length} hex digits>{spec.suffix}")
            out[name] = raw
    return out
