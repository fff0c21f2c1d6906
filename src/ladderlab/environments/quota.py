"""Quotas on practice environments: how many one learner may have, and how many the engine (or, in cluster
mode, the fleet) runs for everyone.

``LADDERLAB_MAX_ENVS_PER_LEARNER`` and ``LADDERLAB_MAX_ENVS`` set them (unset: no limit). A start that
would make a new environment (``ladderlab env up``, ``lab.start()``; reattaching to one that exists costs
nothing) first takes a slot: under one lock (``<state>/quota.lock``) it counts the practice environments
that exist, from their labels (the source of truth, as ``env ls`` shows them; expired and orphaned ones
count until the reaper removes them, since they still hold the engine's memory), plus the slots of starts
still under way, and either writes its own slot or refuses with :class:`QuotaExceeded`, naming what
counts and what to do. Twenty learners starting at once therefore cannot overshoot. The slot is released
when the start ends, well or not: from then on the environment's own labels count it.

Grading environments (``bound``) are neither counted nor refused: the grading queue's workers bound them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker

from ladderlab.config import Settings
from ladderlab.errors import EnvError

#: A slot older than this belongs to a start that died without releasing it (a start waits at most
#: ``ready_timeout`` per host, far less than this).
SLOT_TTL = 30 * 60


class QuotaExceeded(EnvError):
    """A new environment would pass a quota; nothing was started. Exit code 5."""

    exit_code = 5


@dataclass(frozen=True)
class Holding:
    """One environment that counts: running (by its labels) or being started (a slot)."""

    id: str
    learner: str
    lab: str
    env: str
    starting: bool


def _slots_dir(settings: Settings) -> Path:
    return settings.state_dir / "quota"


def _slots(settings: Settings, now: float) -> list[Holding]:
    """The starts under way; stale slots (see :data:`SLOT_TTL`) are removed."""
    out = []
    folder = _slots_dir(settings)
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            data = json.loads(path.read_text())
            if now - float(data["at"]) > SLOT_TTL:
                path.unlink(missing_ok=True)
                continue
            out.append(Holding(str(data["id"]), str(data["learner"]), str(data.get("lab", "")),
                               str(data.get("env", "")), True))
        except (OSError, ValueError, KeyError, TypeError):  # half-written or foreign: not a slot
            path.unlink(missing_ok=True)
    return out


def holdings(settings: Settings, client: docker.DockerClient) -> list[Holding]:
    """Every practice environment that counts against the quotas now."""
    from ladderlab.environments.runtime import list_envs

    now = time.time()
    running = [Holding(e.id, e.learner, e.lab, e.env, False)
               for e in list_envs(settings, client) if not e.bound and not e.lost]
    seen = {h.id for h in running}
    return running + [s for s in _slots(settings, now) if s.id not in seen]


def _names(found: list[Holding]) -> str:
    return ", ".join(f"{h.id} ({h.lab or h.env}{', starting' if h.starting else ''})" for h in found)


def refusal(settings: Settings, found: list[Holding], learner: str) -> str | None:
    """Why one more environment for ``learner`` passes a quota (None: it does not)."""
    mine = [h for h in found if h.learner == learner]
    per = settings.max_envs_per_learner
    if per is not None and len(mine) >= per:
        return (f"quota: {learner} already has {len(mine)} environment{'s' if len(mine) != 1 else ''} "
                f"({_names(mine)}), the most one learner may have (LADDERLAB_MAX_ENVS_PER_LEARNER={per}). "
                f"Stop one first: lab.stop() in its notebook, or `ladderlab env down ENV_ID`")
    total = settings.max_envs
    if total is not None and len(found) >= total:
        return (f"quota: {len(found)} environments are running or starting for all learners, the most this "
                f"deployment runs (LADDERLAB_MAX_ENVS={total}). Try again in a few minutes, when one has "
                f"stopped or expired, or ask your trainer")
    return None


@contextlib.contextmanager
def _locked(settings: Settings) -> Iterator[None]:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(settings.state_dir / "quota.lock", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # counting and taking a slot is one step for every process
        yield
    finally:
        os.close(fd)  # closing releases the lock


@contextlib.contextmanager
def slot(settings: Settings, client: docker.DockerClient, *, env_id: str, learner: str, lab: str,
         env: str) -> Iterator[None]:
    """Hold a slot for starting ``env_id`` while the block runs; :class:`QuotaExceeded` (before the block)
    when the quotas leave none. Without quotas it costs nothing."""
    if settings.max_envs_per_learner is None and settings.max_envs is None:
        yield
        return
    path = _slots_dir(settings) / f"{env_id}.json"
    with _locked(settings):
        why = refusal(settings, holdings(settings, client), learner)
        if why is not None:
            raise QuotaExceeded(why)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"id": env_id, "learner": learner, "lab": lab, "env": env, "at": time.time()}))
        tmp.replace(path)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
