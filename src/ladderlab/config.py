"""Settings: one typed object, read from ``LADDERLAB_*`` environment variables.

========================  ===============================================  ==========================
variable                  meaning                                          default
========================  ===============================================  ==========================
LADDERLAB_ROOT            the course root (holds course.yaml, environments/) found from cwd / package
LADDERLAB_CACHE_DIR       dockerd log, env state, keys, bootstrap rootfs   ``<root>/.cache``
LADDERLAB_BASE_IMAGE      the standard Debian base every image builds on   ``debian:bookworm``
LADDERLAB_APT_MIRROR      mirror for bootstrapping that base               the host's apt setting
LADDERLAB_CA_BUNDLE       CA bundle passed into builds (``none`` to skip)  the host's bundle if any
LADDERLAB_TTL_MINUTES     lifetime of an environment before reaping        ``240``
LADDERLAB_READY_TIMEOUT   seconds a host may take to become ready          ``60``
========================  ===============================================  ==========================
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ladderlab.errors import UsageError

HOST_CA_BUNDLES = (
    Path("/etc/ssl/certs/ca-certificates.crt"),  # Debian, Ubuntu, Alpine
    Path("/etc/pki/tls/certs/ca-bundle.crt"),  # Fedora, RHEL
    Path("/etc/ssl/cert.pem"),  # macOS, BSD
)


def find_root(start: Path | None = None) -> Path:
    """The course root: the nearest directory upwards holding ``course.yaml``."""
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "course.yaml").is_file() and (candidate / "environments").is_dir():
            return candidate
    packaged = Path(__file__).resolve().parents[2]
    if (packaged / "course.yaml").is_file():
        return packaged
    raise UsageError(
        "no course found: run ladderlab inside a course checkout (a directory with course.yaml "
        "and environments/) or set LADDERLAB_ROOT"
    )


def _count(name: str) -> int | None:
    """A positive whole number from environment variable ``name``; None when it is unset or empty."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise UsageError(f"environment variable {name}: expected a whole number of environments (1 or more), "
                         f"got {raw!r}")
    return int(raw)


def env_float(name: str, default: float) -> float:
    """A positive number from environment variable ``name``; ``default`` when it is unset or empty."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"environment variable {name}: expected a number, got {raw!r}") from None
    if value <= 0:
        raise UsageError(f"environment variable {name}: expected a positive number, got {raw!r}")
    return value


def _seconds(name: str) -> float | None:
    """A number of seconds, at least 1, from environment variable ``name``; None when it is unset or empty."""
    if not os.environ.get(name, "").strip():
        return None
    value = env_float(name, 1.0)
    if value < 1:  # the runner's cell limit is whole seconds, and 0 would mean none at all
        raise UsageError(f"environment variable {name}: expected at least 1 second, got {os.environ[name]!r}")
    return value


@dataclass(frozen=True)
class Settings:
    root: Path
    cache_dir: Path
    base_image: str = "debian:bookworm"
    apt_mirror: str | None = None
    ca_bundle: Path | None = None
    ttl_minutes: float = 240.0
    ready_timeout: float = 60.0
    #: Quotas on practice environments (grading ones are bounded by the queue's workers): per learner and on
    #: the whole engine (or cluster). None: no limit. See :mod:`ladderlab.environments.quota`.
    max_envs_per_learner: int | None = None
    max_envs: int | None = None
    #: The most any one cell of a graded notebook may run (seconds): lowers a lab's ``sandbox.cell_timeout``,
    #: never raises it. None: each lab's own limit. See :class:`ladderlab.grading.sandbox.Sandbox`.
    max_cell_timeout: float | None = None

    @property
    def environments_dir(self) -> Path:
        return self.root / "environments"

    @property
    def course_file(self) -> Path:
        return self.root / "course.yaml"

    @property
    def state_dir(self) -> Path:
        return self.cache_dir / "state"

    @classmethod
    def from_env(cls, root: Path | None = None) -> Settings:
        env_root = os.environ.get("LADDERLAB_ROOT")
        resolved = root or (Path(env_root).resolve() if env_root else find_root())
        cache = Path(os.environ.get("LADDERLAB_CACHE_DIR") or resolved / ".cache").resolve()
        ca_raw = os.environ.get("LADDERLAB_CA_BUNDLE", "")
        ca: Path | None
        if ca_raw.lower() == "none":
            ca = None
        elif ca_raw:
            ca = Path(ca_raw)
            if not ca.is_file():
                raise UsageError(f"environment variable LADDERLAB_CA_BUNDLE: no such file {ca_raw!r}")
        else:
            ca = next((p for p in HOST_CA_BUNDLES if p.is_file()), None)
        return cls(
            root=resolved,
            cache_dir=cache,
            base_image=os.environ.get("LADDERLAB_BASE_IMAGE") or "debian:bookworm",
            apt_mirror=os.environ.get("LADDERLAB_APT_MIRROR") or None,
            ca_bundle=ca,
            ttl_minutes=env_float("LADDERLAB_TTL_MINUTES", 240.0),
            ready_timeout=env_float("LADDERLAB_READY_TIMEOUT", 60.0),
            max_envs_per_learner=_count("LADDERLAB_MAX_ENVS_PER_LEARNER"),
            max_envs=_count("LADDERLAB_MAX_ENVS"),
            max_cell_timeout=_seconds("LADDERLAB_MAX_CELL_TIMEOUT"),
        )
