"""Grading environments brought up ahead of the hand-in, so that an engineer's submission is graded
without waiting for its hosts to start (issue 11: hand-in to feedback).

The grading service of ``ladderlab lab`` keeps at most :data:`MOST` of them: one for each lab a learner
is practising (a practice environment of theirs runs) and one again after each grading of that lab. A
prepared environment is exactly what grading would start at hand-in: the learner's seed, a fresh
environment (``reuse=False``), its probes locked out, bound to the service's process (its guardian
removes it the moment the process is gone), never handed to anyone; the only difference is when its
hosts started. It is used by one grading and torn down with it, and it is dropped instead of used when
the course changed since it started (another image, other parameters), when a host is not running, or
when it is older than :data:`MAX_AGE`.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from ladderlab.config import Settings
from ladderlab.course.labs import LabDef
from ladderlab.environments import runtime
from ladderlab.grading.checks import one_line

Say = Callable[[str], None]

#: Prepared environments at most (each is a whole lab environment: a few containers).
MOST = 2
#: A prepared environment older than this is dropped rather than used.
MAX_AGE = 30 * 60.0
#: How long a hand-in waits for a preparation still under way (it would take as long to start anew).
WAIT = 300.0


@dataclass
class _Prepared:
    learner: str
    lab: LabDef
    since: float
    future: Future[runtime.Environment]


class WarmPool:
    """Environments prepared ahead, per (learner, lab)."""

    def __init__(self, settings: Settings, client: Callable[[], Any], say: Say) -> None:
        self.settings = settings
        self.client = client
        self.say = say
        self._items: dict[tuple[str, str], _Prepared] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ladderlab-warm")

    def want(self, learner: str, lab: LabDef) -> bool:
        """Start preparing an environment for ``learner``'s ``lab`` unless one is there or the pool is full."""
        key = (learner, lab.id)
        with self._lock:
            if self._closed or key in self._items or len(self._items) >= MOST:
                return False
            self._items[key] = _Prepared(learner, lab, time.time(), self._pool.submit(self._up, learner, lab))
        return True

    def _up(self, learner: str, lab: LabDef) -> runtime.Environment:
        from ladderlab.grading.sandbox import PROBE_ROLES

        env = runtime.up(self.settings, lab.environment, client=self.client(), learner=learner, lab=lab.id,
                         course_id=lab.course.id, reuse=False, lockout_roles=PROBE_ROLES, bound=True)
        self.say(f"grading service: prepared {env.id} for {learner}'s next hand-in of {lab.id}")
        return env

    def take(self, learner: str, lab_id: str) -> runtime.Environment | None:
        """The environment prepared for this hand-in, if there is a current one (else None: grade as usual)."""
        with self._lock:
            item = self._items.pop((learner, lab_id), None)
        if item is None:
            return None
        try:
            env = item.future.result(timeout=WAIT)
        except (Exception, FutureTimeout) as exc:  # its failure is not the hand-in's: grading starts its own
            self.say(f"grading service: the environment prepared for {learner}'s {lab_id} is not usable: "
                     f"{one_line(str(exc))}")
            return None
        why = self.stale(item, env)
        if why:
            self.say(f"grading service: dropped {env.id} ({why}); starting a new environment")
            _down(env)
            return None
        return env

    def stale(self, item: _Prepared, env: runtime.Environment) -> str:
        """Why ``env`` is no longer what grading would start now ('' when it is)."""
        from ladderlab.course.seeds import course_secret, derive_seed, render_params

        if time.time() - item.since > MAX_AGE:
            return f"older than {MAX_AGE / 60:g} minutes"
        spec = runtime.load_spec(self.settings, item.lab.environment)
        key = course_secret(self.settings)
        seed = derive_seed(item.lab.course.id, item.learner, item.lab.id, secret=key)
        if env.record.seed != seed or env.record.params != render_params(spec.params, seed, secret=key):
            return "the environment's parameters changed"
        client = self.client()
        images = runtime.check_images(self.settings, client, spec)
        for name, info in env.record.hosts.items():
            if name not in spec.hosts or images.get(spec.hosts[name].image) != info.image:
                return f"host {name}'s image changed"
            state = client.api.inspect_container(info.container)["State"]
            if not state.get("Running") or state.get("Paused"):
                return f"host {name} is not running"
        if set(spec.hosts) != set(env.record.hosts):
            return "the environment's hosts changed"
        return ""

    def keys(self) -> set[tuple[str, str]]:
        with self._lock:
            return set(self._items)

    def close(self) -> None:
        """Tear every prepared environment down (the guardian would, once this process is gone)."""
        with self._lock:
            self._closed = True
            items = list(self._items.values())
            self._items.clear()
        for item in items:
            item.future.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)
        for item in items:
            if item.future.done() and not item.future.cancelled() and item.future.exception() is None:
                _down(item.future.result())


def _down(env: runtime.Environment) -> None:
    with contextlib.suppress(Exception):  # best effort: the guardian and the reaper remove what is left
        env.down()
