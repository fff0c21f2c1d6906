"""What the ``env`` commands show: the documented JSON forms of an environment, of the list of
environments and of a reaper run, and the rows of their tables.

>>> env_json(up(settings, "firewall", client=client))["hosts"]["target"]["role"]     # doctest: +SKIP
'target'
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from ladderlab.environments.reaper import ReapReport
from ladderlab.environments.runtime import Environment, EnvSummary


def env_json(env: Environment) -> dict[str, Any]:
    """``ladderlab env up --json``."""
    r = env.record
    return {"id": r.id, "env": r.env, "lab": r.lab, "learner": r.learner, "seed": r.seed, "params": r.params,
            "expires": int(r.expires), "networks": r.networks,
            "hosts": {n: {"role": h.role, "container": h.container, "addresses": h.addresses,
                          "image": h.image} for n, h in r.hosts.items()}}


def host_rows(env: Environment) -> list[list[str]]:
    """(host, role, addresses, container) for each host of ``env``."""
    return [[name, h.role, ", ".join(h.addresses.values()), h.container] for name, h in env.record.hosts.items()]


def envs_json(envs: Iterable[EnvSummary]) -> list[dict[str, Any]]:
    """``ladderlab env ls --json``."""
    return [{"id": e.id, "env": e.env, "lab": e.lab, "learner": e.learner, "status": e.status,
             "hosts": sorted(e.hosts), "expires": int(e.expires), **({"node": e.node} if e.node else {})}
            for e in envs]


def env_rows(envs: Iterable[EnvSummary], now: float | None = None) -> list[list[str]]:
    """(id, env, lab, learner, status, hosts, minutes until expiry) for the ``env ls`` table."""
    moment = time.time() if now is None else now
    return [[e.id, e.env, e.lab or "-", e.learner, e.status + (f" ({e.node})" if e.node else ""),
             ",".join(sorted(e.hosts)),
             f"{max(0.0, e.expires - moment) / 60:.0f} min"] for e in envs]


def reap_json(report: ReapReport, dry_run: bool) -> dict[str, Any]:
    """``ladderlab env reap --json``."""
    return {"removed": report.removed, "kept": report.kept, "stale_records": report.stale_records,
            "dry_run": dry_run}
