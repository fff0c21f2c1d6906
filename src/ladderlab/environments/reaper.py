"""The reaper: removes what ladderlab left behind.

An environment is reaped when it is **expired** (its expiry is past: the expiry label, or the later expiry
that ``lab.extend`` wrote into its state record, within the course's limit; see
:func:`ladderlab.environments.labels.effective_expiry`), or
**orphaned**: it has no record in the state dir (its ``up`` never finished, or
a ``down`` was cut short) and the process that was bringing it up is gone
(checked by PID and process start time, so a reused PID does not fool it). An
environment owned by a process on another machine is orphaned only once it is
older than ``grace`` seconds. A *bound* (grading) environment is reaped
as soon as its owner process is gone, record or not. State records whose environment no longer exists
on the engine are dropped too. Not-found is success; transient daemon errors
are retried.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field

import docker

from ladderlab.config import Settings
from ladderlab.environments import labels as L
from ladderlab.environments.runtime import env_dir, list_envs, teardown_everywhere

DEFAULT_GRACE = 15 * 60
STALE_RECORD_AGE = 120


@dataclass
class ReapReport:
    removed: dict[str, str] = field(default_factory=dict)  # env id -> why
    kept: list[str] = field(default_factory=list)
    stale_records: list[str] = field(default_factory=list)


def _why(summary_status: str, owner: str, created: float, grace: float, now: float,
         bound: bool = False) -> str | None:
    if summary_status == "expired":
        return "expired"
    if summary_status == "lost":
        return "its node is lost"
    if bound and L.owner_alive(owner) is False:
        return "its grader is gone"
    if summary_status == "orphaned":
        if L.owner_alive(owner) is None and now - created < grace:
            return None  # owned by another machine and still young: it may be starting there
        return "orphaned"
    return None


def reap(settings: Settings, client: docker.DockerClient, *, dry_run: bool = False,
         grace: float = DEFAULT_GRACE, graders_gone_only: bool = False) -> ReapReport:
    """Remove what is expired or orphaned; ``graders_gone_only``: only grading environments whose grader
    process is gone (what a grading service may remove whatever cache it uses: nothing else needs them)."""
    report = ReapReport()
    now = time.time()
    live = set()
    for s in list_envs(settings, client):
        live.add(s.id)
        if graders_gone_only:
            why = "its grader is gone" if s.bound and L.owner_alive(s.owner) is False else None
        else:
            why = _why(s.status, s.owner, s.created, grace, now, s.bound)
        if why is None:
            report.kept.append(s.id)
            continue
        report.removed[s.id] = why
        if not dry_run:
            teardown_everywhere(client, s.id)
            shutil.rmtree(env_dir(settings, s.id), ignore_errors=True)
    records = settings.state_dir / "envs"
    if records.is_dir() and not graders_gone_only:
        for d in sorted(records.iterdir()):
            # Young records may belong to an ``up`` that has not created containers yet.
            if d.name not in live and now - d.stat().st_mtime > STALE_RECORD_AGE:
                report.stale_records.append(d.name)
                if not dry_run:
                    shutil.rmtree(d, ignore_errors=True)
    return report
