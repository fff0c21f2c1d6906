"""Per-learner variants: a seed from (course, learner, lab), parameters from the seed.

The same inputs always give the same seed and the same parameters, so grading
reproduces the learner's variant; each parameter is drawn from its own stream,
so adding a parameter never changes the others.

Seeds are *keyed*: ``derive_seed`` is HMAC-SHA256 under the course secret, a
random key that :func:`course_secret` creates on first use beside the course
signing key (``<cache>/keys/course-seed.key``, 0600 in a 0700 directory, on the
grading host only: never in a container, the sandbox or a learner's workspace).
This module ships into the sandbox with the rest of the package, but without
the key it computes nothing useful.

Parameters an env.yaml marks ``secret: true`` (which fault was injected) are
drawn from ``HMAC(course secret, seed, name)``, not from the seed alone: the seed
is no secret (it is in the evidence, and ``--seed`` takes one on the command
line), so a learner who knows it still cannot compute their secret parameters.
Public parameters (a port, a zone name) are drawn from ``sha256(seed, name)``;
the learner sees them anyway.

>>> key = bytes(32)
>>> derive_seed("ladderlab-sre", "ada", "sec-1-iptables-hardening", secret=key)[:12]
'b3532485df67'
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import random
import re
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from ladderlab.environments.spec import ChoiceParam, HexParam, IntParam, Param
from ladderlab.errors import LadderlabError, UsageError

if TYPE_CHECKING:
    from ladderlab.config import Settings

#: Bytes of a course secret.
SECRET_BYTES = 32

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


def secret_file(settings: Settings) -> Path:
    """Where the course secret lives: beside the course signing key (``ladder/keys.py``)."""
    return settings.cache_dir / "keys" / "course-seed.key"


def course_secret(settings: Settings) -> bytes:
    """The course secret that keys seeds and secret parameters; created (random, owner-only) on first use.

    Refused when others may read it, or when it is not the size it was written with.
    """
    path = secret_file(settings)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path.parent, 0o700)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(secrets.token_bytes(SECRET_BYTES).hex().encode() + b"\n")
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)  # atomic: two first users agree on one key
        finally:
            tmp.unlink(missing_ok=True)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise LadderlabError(f"{path} is readable by others (mode {mode:04o}): chmod 600 it")
    try:
        key = bytes.fromhex(path.read_text().strip())
    except ValueError:
        key = b""
    if len(key) != SECRET_BYTES:
        raise LadderlabError(f"{path} is not a course secret ({2 * SECRET_BYTES} hex digits)")
    return key


def _check_secret(secret: bytes) -> bytes:
    if not isinstance(secret, bytes) or len(secret) < 16:
        raise LadderlabError("a course secret (at least 16 bytes) is needed: see seeds.course_secret")
    return secret


def derive_seed(course_id: str, learner: str, lab: str, *, secret: bytes) -> str:
    """The learner's seed for a lab in a course (64 hex digits), keyed with the course ``secret``."""
    material = "\0".join(("ladderlab-seed-v2", course_id, check_learner(learner), lab)).encode()
    return hmac.new(_check_secret(secret), material, hashlib.sha256).hexdigest()


def _stream(seed: str, name: str, secret: bytes | None) -> random.Random:
    if secret is None:
        digest = hashlib.sha256(f"{seed}\0{name}".encode()).digest()
    else:
        material = f"ladderlab-secret-param-v1\0{seed}\0{name}".encode()
        digest = hmac.new(_check_secret(secret), material, hashlib.sha256).digest()
    return random.Random(int.from_bytes(digest, "big"))  # noqa: S311 - variety; the key gives the secrecy


def draw(name: str, param: Param, seed: str, secret: bytes) -> str | int:
    """One parameter's value; a secret parameter's stream is keyed with the course ``secret``."""
    rng = _stream(seed, name, secret if param.secret else None)
    if isinstance(param, IntParam):
        return rng.randint(param.min, param.max)
    if isinstance(param, ChoiceParam):
        return rng.choice(param.values)
    if isinstance(param, HexParam):
        return f"{param.prefix}{rng.getrandbits(4 * param.length):0{param.length}x}{param.suffix}"
    raise TypeError(f"unknown parameter type {type(param).__name__}")


def render_params(params: dict[str, Param], seed: str, *, secret: bytes) -> dict[str, str | int]:
    """All parameters of an environment for ``seed``, in declaration order (secret ones keyed with ``secret``)."""
    _check_secret(secret)
    return {name: draw(name, spec, check_seed(seed), secret) for name, spec in params.items()}


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
