"""The labels ladderlab puts on every container and network it makes.

Only this module builds them, from typed arguments; nothing a user writes
(env.yaml labels, learner ids) can set or override a key under ``io.ladderlab.``.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

PREFIX = "io.ladderlab."
MANAGED = PREFIX + "managed"
ENV_ID = PREFIX + "env-id"
ENV = PREFIX + "env"
LAB = PREFIX + "lab"
LEARNER = PREFIX + "learner"
EXPIRES = PREFIX + "expires"
CREATED = PREFIX + "created"
OWNER = PREFIX + "owner"
HOST = PREFIX + "host"
ROLE = PREFIX + "role"
KIND = PREFIX + "kind"
BOUND = PREFIX + "bound"  # "1": reaped as soon as its owner process is gone (grading environments)


def _start_ticks(pid: int) -> str:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "?"
    return stat.rsplit(")", 1)[1].split()[19]


def owner_token(pid: int | None = None) -> str:
    """``hostname:pid:start`` of a process: unique even when PIDs are reused."""
    pid = pid or os.getpid()
    return f"{socket.gethostname()}:{pid}:{_start_ticks(pid)}"


def owner_alive(token: str) -> bool | None:
    """True/False for an owner on this machine; None when it lives on another machine."""
    host, _, rest = token.partition(":")
    pid_s, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid_s.isdigit():
        return None
    return _start_ticks(int(pid_s)) == start


#: No extension keeps an environment alive longer than this after it was made (the course policy's own bound).
MAX_LIFETIME = 7 * 24 * 3600


def effective_expiry(label_expires: float, created: float, extended: float | None = None) -> float:
    """When an environment expires. The expiry label is fixed when a container is made (labels cannot
    change); ``lab.extend`` writes a later expiry into the environment's state record (``env.json``), and the
    later of the two counts, never more than :data:`MAX_LIFETIME` after ``created``."""
    if extended is None or extended <= label_expires or not created:
        return label_expires
    return max(label_expires, min(extended, created + MAX_LIFETIME))


@dataclass(frozen=True)
class Stamp:
    env_id: str
    env: str
    lab: str
    learner: str
    expires: float
    created: float
    owner: str
    bound: bool = False

    def labels(self, *, host: str | None = None, role: str | None = None,
               user: dict[str, str] | None = None) -> dict[str, str]:
        out = {k: v for k, v in (user or {}).items() if not k.lower().startswith(PREFIX)}
        out.update({
            MANAGED: "1",
            ENV_ID: self.env_id,
            ENV: self.env,
            LAB: self.lab,
            LEARNER: self.learner,
            EXPIRES: str(int(self.expires)),
            CREATED: str(int(self.created)),
            OWNER: self.owner,
            KIND: "host" if host else "network",
        })
        if self.bound:
            out[BOUND] = "1"
        if host:
            out[HOST] = host
            out[ROLE] = role or ""
        return out

    @classmethod
    def new(cls, env_id: str, env: str, lab: str, learner: str, ttl_minutes: float, bound: bool = False) -> Stamp:
        now = time.time()
        return cls(env_id, env, lab, learner, now + ttl_minutes * 60, now, owner_token(), bound)
