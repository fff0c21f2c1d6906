"""The ladderlab service on a hub (docs/hub-design.md, 2.3): a JupyterHub-managed service, started by the hub
(``python -m ladderlab.hub.service``), serving ``/services/ladderlab/``.

Every request is authenticated by the hub: a browser by the service's OAuth cookie, a learner's kernel by
``Authorization: token $JUPYTERHUB_API_TOKEN``. The learner is always who the hub says the caller is: no
request names a learner, and one that tries (``?learner=`` / ``?user=``) is refused (400). The API answers
an unauthenticated request with 401 JSON, never a redirect to a login page.

Learners: ``GET api/whoami``; ``api/labs/<lab>/env`` (POST start or reattach, GET, DELETE); ``answers``, ``check``
and ``hints`` of a lab; hand-in (``api/labs/<lab>/submissions``) and the caller's own submissions; the caller's
own ladder, ``api/ladder`` (what ``ladderlab.my_ladder()`` shows in a learner's notebook) and ``ladder`` (a page).
Trainers (the ``custom:ladderlab:trainer`` scope; 403 for anyone else): ``cohort``, the live cohort view (a page
that follows ``api/cohort/events``, server-sent events), and ``api/cohort``, the same snapshot once
(:mod:`ladderlab.hub.cohortview`).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from typing import Any
from urllib.parse import urlencode, urlparse

from jupyterhub.services.auth import HubOAuth, HubOAuthCallbackHandler, HubOAuthenticated
from tornado import ioloop, web
from tornado.iostream import StreamClosedError

from ladderlab.hub.cohortview import CohortView, record_practice

TRAINER_SCOPE = "custom:ladderlab:trainer"
SERVICE = "ladderlab"


def refuse_a_named_learner(handler: web.RequestHandler) -> None:
    """400 for a request that names a learner (``?learner=``, ``?user=``, ``?student=``): the caller is the hub's."""
    named = [k for k in ("learner", "user", "student") if k in handler.request.arguments]
    if named:
        raise web.HTTPError(400, f"a request never names a learner ({', '.join(named)}=): you are the "
                                 f"learner you logged in as")


class ApiHandler(HubOAuthenticated, web.RequestHandler):  # type: ignore[misc]
    """JSON in, JSON out; the caller is the hub's user behind the token or cookie."""

    def get_login_url(self) -> str:
        raise web.HTTPError(401, "log in to the hub (or send the server's JUPYTERHUB_API_TOKEN)")

    def prepare(self) -> None:
        refuse_a_named_learner(self)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = exc.log_message if isinstance(exc, web.HTTPError) and exc.log_message else self._reason
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": status_code, "message": message}))

    @property
    def learner(self) -> str:
        user = self.current_user
        assert user is not None  # @web.authenticated ran first
        return str(user["name"])

    @property
    def is_trainer(self) -> bool:
        user = self.current_user or {}
        return TRAINER_SCOPE in set(user.get("scopes") or [])


class WhoAmI(ApiHandler):
    @web.authenticated
    def get(self) -> None:
        self.finish({"learner": self.learner, "trainer": self.is_trainer})


class Environments:
    """The learners' practice environments, one per (learner, lab), started and stopped for the hub's user only.

    The blocking work (Docker) runs in a thread pool; one learner's calls are serialised by a lock of theirs, so
    a double click never starts two environments. Quotas (``LADDERLAB_MAX_ENVS_PER_LEARNER``, default 2 here, and
    ``LADDERLAB_MAX_ENVS``) refuse a start with 429."""

    def __init__(self, workers: int = 4, guard: bool = True) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ll-env")
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.guarded = guard
        self._allowed: dict[int, set[str]] = {}  # learner uid -> their running environments' host addresses
        self._firewall = threading.Lock()

    def firewall(self, learner: str, subnets: set[str] | None) -> None:
        """Let ``learner``'s processes reach ``subnets`` (their environment's networks) and nothing else off this
        machine; None: nothing at all (their environments are gone). The chain is rewritten whole."""
        if not self.guarded:
            return
        from ladderlab.environments import learnerguard
        from ladderlab.hub import accounts

        account = accounts.lookup(learner)
        if account is None:
            return
        with self._firewall:
            if subnets:
                self._allowed[account.uid] = set(subnets)
            else:
                self._allowed.pop(account.uid, None)
            learnerguard.apply(accounts.ensure_group(), {uid: sorted(n) for uid, n in self._allowed.items()})

    def reconcile(self) -> None:
        """At start: the chain from the environments running now (a service restart keeps learners' access)."""
        if not self.guarded:
            return
        from ladderlab.environments import engine, learnerguard
        from ladderlab.hub import accounts

        allowed: dict[int, set[str]] = {}
        for learner, reachable in _reachable_by_learner(_settings(), engine.connect(timeout=10)).items():
            try:
                account = accounts.lookup(learner)
            except Exception:
                account = None
            if account is not None:
                allowed.setdefault(account.uid, set()).update(reachable)
        with self._firewall:
            self._allowed = allowed
            learnerguard.apply(accounts.ensure_group(), {uid: sorted(n) for uid, n in allowed.items()})

    def lock(self, learner: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(learner, threading.Lock())

    def start(self, learner: str, lab_id: str, fresh: bool) -> dict[str, Any]:
        from ladderlab.course import load_course
        from ladderlab.environments import engine, runtime
        from ladderlab.lab import live_connection

        settings = _settings()
        course = load_course(settings.course_file, "course.yaml")
        entry = _lab_entry(course, lab_id)
        with self.lock(learner):
            client = engine.connect(timeout=10)
            env = runtime.up(settings, entry.environment, client=client, learner=learner, lab=lab_id,
                             course_id=course.id, reuse=not fresh)
            self.firewall(learner, _reachable_of(settings, client, learner) | _reachable(env.record))
            conn = live_connection(settings, env, lab_id)
        conn.answers_path = ""  # the answers stay with the service
        data: dict[str, Any] = json.loads(conn.to_json())
        return data

    def find(self, learner: str, lab_id: str) -> list[Any]:
        from ladderlab.environments import engine, runtime

        return [e for e in runtime.list_envs(_settings(), engine.connect(timeout=10))
                if e.learner == learner and e.lab == lab_id and not e.bound]

    def up(self) -> dict[str, list[str]]:
        """Learner -> the labs whose practice environment runs now (gradings' environments are not practice)."""
        from ladderlab.environments import engine, runtime

        out: dict[str, list[str]] = {}
        for e in runtime.list_envs(_settings(), engine.connect(timeout=10)):
            if e.learner and e.lab and not e.bound:
                out.setdefault(e.learner, []).append(e.lab)
        return out

    def stop(self, learner: str, lab_id: str) -> list[str]:
        from ladderlab.environments import engine, runtime

        settings = _settings()
        with self.lock(learner):
            client = engine.connect(timeout=10)
            gone = [e.id for e in self.find(learner, lab_id)]
            for env_id in gone:
                runtime.down(settings, env_id, client)
            if gone:
                self.firewall(learner, _reachable_of(settings, client, learner) or None)
        return gone


def _reachable_by_learner(settings: Any, client: Any, only: str | None = None) -> dict[str, set[str]]:
    """Learner (``only`` that one) -> what they may reach of all their practice environments running now."""
    from ladderlab.environments import runtime

    out: dict[str, set[str]] = {}
    for e in runtime.list_envs(settings, client):
        if e.learner and not e.bound and only in (None, e.learner):
            out.setdefault(e.learner, set()).update(_reachable(runtime.attach(settings, e.id, client).record))
    return out


def _reachable_of(settings: Any, client: Any, learner: str) -> set[str]:
    return _reachable_by_learner(settings, client, learner).get(learner, set())


def _reachable(record: Any) -> set[str]:
    """What a learner may reach of one environment: its hosts' addresses (the ones their connection names), each
    alone (/32): not the rest of the network's range, where another environment's hosts may be later."""
    return {f"{h.address}/32" for h in record.hosts.values() if getattr(h, "address", None)}


def _settings() -> Any:
    from ladderlab.config import Settings

    return Settings.from_env()


def _answers_path(learner: str, lab_id: str) -> Any:
    return _settings().state_dir / "answers" / learner / f"{lab_id}.json"


class Practice:
    """Answers, checks and hints for the caller's practice of a lab: what ``lab.answer``, ``lab.check`` and
    ``lab.hint`` do locally, kept where the learner cannot edit them (the service's state)."""

    def __init__(self, envs: Environments) -> None:
        self.envs = envs

    def answer(self, learner: str, lab_id: str, name: str, value: Any) -> None:
        from ladderlab.lab import write_answer

        if not isinstance(name, str) or not name or isinstance(value, bool) or not isinstance(value, str | int):
            raise web.HTTPError(400, "an answer is {\"name\": a string, \"value\": a string or an integer}")
        if isinstance(value, str) and len(value) > 10_000:
            raise web.HTTPError(400, "an answer is at most 10,000 characters")
        path = _answers_path(learner, lab_id)
        with self.envs.lock(learner):
            write_answer(path, name, value)

    def check(self, learner: str, lab_id: str, only: list[str]) -> list[Any]:
        from ladderlab.environments import engine, runtime
        from ladderlab.grading.feedback import live_feedback
        from ladderlab.lab import _read_answers

        if not isinstance(only, list) or not all(isinstance(c, str) for c in only):
            raise web.HTTPError(400, "checks: a list of check ids")
        running = self.envs.find(learner, lab_id)
        if not running:
            raise web.HTTPError(409, f"no environment of yours runs for {lab_id}: ladderlab.start({lab_id!r})")
        settings = _settings()
        env = runtime.attach(settings, running[0].id, engine.connect(timeout=10))
        try:
            lines = live_feedback(settings, env, lab_id, only, _read_answers(_answers_path(learner, lab_id)))
        except ValueError as exc:
            raise web.HTTPError(400, str(exc)) from None
        with self.envs.lock(learner):
            record_practice(settings, learner, lab_id, [(passed, check) for passed, check, _ in lines])
        return [list(line) for line in lines]

    def hint(self, learner: str, lab_id: str, check_id: str) -> dict[str, Any]:
        from ladderlab.lab import LabError, _lab_hints, hint_log_path, use_hint

        settings = _settings()
        try:
            hints = _lab_hints(settings, lab_id)
        except LabError as exc:
            raise web.HTTPError(404, str(exc)) from None
        if check_id not in hints:
            raise web.HTTPError(404, f"this lab has no check {check_id!r} (checks: {', '.join(hints)})")
        texts = hints[check_id]
        path = hint_log_path(settings.state_dir, learner, lab_id)
        if path is None:
            raise web.HTTPError(400, f"learner id {learner!r} cannot keep a hint log")
        with self.envs.lock(learner):
            index = use_hint(path, check_id, len(texts)) if texts else None
        return {"texts": texts, "index": index}

    def hints_used(self, learner: str, lab_id: str) -> dict[str, int]:
        from ladderlab.lab import hints_used

        return hints_used(_settings().state_dir, learner, lab_id)


def _lab_entry(course: Any, lab_id: str) -> Any:
    try:
        return course.lab(lab_id)
    except Exception:
        raise web.HTTPError(404, f"no lab {lab_id!r} in this course") from None


class EnvHandler(ApiHandler):
    """``api/labs/<lab>/env``: POST starts (or reattaches to) the caller's environment for the lab and answers its
    connection (hosts, parameters, expiry, its SSH key); GET says whether one runs; DELETE stops it."""

    @property
    def envs(self) -> Environments:
        envs: Environments = self.settings["environments"]
        return envs

    async def _call(self, fn: Any, *args: Any) -> Any:
        from ladderlab.environments.quota import QuotaExceeded
        from ladderlab.errors import LadderlabError

        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.envs.pool, fn, *args)
        except QuotaExceeded as exc:
            raise web.HTTPError(429, str(exc)) from None
        except web.HTTPError:
            raise
        except LadderlabError as exc:
            raise web.HTTPError(503, f"the environment could not be started: {exc}") from None

    @web.authenticated
    async def post(self, lab_id: str) -> None:
        fresh = self.get_query_argument("fresh", "0") in ("1", "true")
        self.finish(await self._call(self.envs.start, self.learner, lab_id, fresh))

    @web.authenticated
    async def get(self, lab_id: str) -> None:
        found = await self._call(self.envs.find, self.learner, lab_id)
        self.finish({"running": [e.id for e in found]})

    @web.authenticated
    async def delete(self, lab_id: str) -> None:
        self.finish({"stopped": await self._call(self.envs.stop, self.learner, lab_id)})


MAX_NOTEBOOK = 20 * 1024 * 1024


class Submissions:
    """Hand-in through the service: the notebook is handed in to nbgrader's exchange as the caller (never as a
    name the request gives) and graded by the grading service this process runs; a caller sees only their own."""

    def hand_in(self, learner: str, lab_id: str, body: bytes) -> str:
        import tempfile
        from pathlib import Path

        from ladderlab.errors import LadderlabError
        from ladderlab.service.handin import hand_in_lab
        from ladderlab.service.paths import ServicePaths

        if len(body) > MAX_NOTEBOOK:
            raise web.HTTPError(413, f"a notebook is at most {MAX_NOTEBOOK >> 20} MiB")
        try:
            nb = json.loads(body)
        except ValueError:
            raise web.HTTPError(400, "the body is not a notebook (JSON)") from None
        if not isinstance(nb, dict) or "cells" not in nb:
            raise web.HTTPError(400, "the body is not a notebook")
        settings = _settings()
        paths = ServicePaths.of(settings)
        with tempfile.TemporaryDirectory(prefix="ll-handin-") as tmp:
            path = Path(tmp) / f"{lab_id}.ipynb"
            path.write_bytes(body)
            try:
                return hand_in_lab(settings, paths, lab_id, path, learner)
            except LadderlabError as exc:
                raise web.HTTPError(400, str(exc)) from None

    def status(self, learner: str, key: str) -> dict[str, Any]:
        from ladderlab.service.handin import describe
        from ladderlab.service.ledger import Ledger
        from ladderlab.service.paths import ServicePaths

        sub = Ledger(ServicePaths.of(_settings()).ledger_db).get(key)
        if sub is None and key.split("+", 1)[0] == learner:  # handed in; the scanner has not taken it up yet
            return {"key": key, "student": learner, "status": "handed in", "stage": "", "lines": []}
        if sub is None or sub.student != learner:
            raise web.HTTPError(404, "no such submission of yours")
        out = sub.to_json()
        out.pop("log", None)
        out["lines"] = describe(sub) if sub.done else []
        return out


class SubmissionHandler(EnvHandler):
    """POST ``api/labs/<lab>/submissions`` (the notebook as the body): its key; GET ``api/submissions/<key>``."""

    @property
    def submissions(self) -> Submissions:
        subs: Submissions = self.settings["submissions"]
        return subs

    @web.authenticated
    async def post(self, lab_id: str) -> None:
        self.finish({"key": await self._call(self.submissions.hand_in, self.learner, lab_id, self.request.body)})

    @web.authenticated
    async def get(self, key: str) -> None:
        self.finish(await self._call(self.submissions.status, self.learner, key))


class PracticeHandler(EnvHandler):
    """``api/labs/<lab>/answers`` (POST {"name", "value"}), ``/check`` (POST {"checks": [...]}), ``/hints/<check>``
    (POST: the next hint), ``/hints`` (GET: how many were used per check). Always the caller's own."""

    def body(self) -> dict[str, Any]:
        try:
            data = json.loads(self.request.body or b"{}")
        except ValueError:
            raise web.HTTPError(400, "the body is not JSON") from None
        if not isinstance(data, dict):
            raise web.HTTPError(400, "the body is a JSON object")
        return data

    @property
    def practice(self) -> Practice:
        practice: Practice = self.settings["practice"]
        return practice

    @web.authenticated
    async def post(self, lab_id: str, what: str, check_id: str | None = None) -> None:
        data = self.body()
        if what == "answers":
            await self._call(self.practice.answer, self.learner, lab_id, data.get("name"), data.get("value"))
            self.finish({"recorded": data.get("name")})
        elif what == "check":
            self.finish({"lines": await self._call(self.practice.check, self.learner, lab_id, data.get("checks", []))})
        elif what == "hints" and check_id:
            self.finish(await self._call(self.practice.hint, self.learner, lab_id, check_id))
        else:
            raise web.HTTPError(404)

    @web.authenticated
    async def get(self, lab_id: str, what: str, check_id: str | None = None) -> None:
        if what != "hints" or check_id:
            raise web.HTTPError(404)
        self.finish({"used": await self._call(self.practice.hints_used, self.learner, lab_id)})


def _ladder_of(learner: str) -> dict[str, Any]:
    """The learner's own ladder as shown (:meth:`LadderView.data`), from the record only the service reads."""
    from ladderlab.lab.ladder_view import learner_ladder

    return learner_ladder(learner).data()


class LadderApi(ApiHandler):
    """``api/ladder``: the caller's own ladder; nobody else's, whoever asks (a request never names a learner)."""

    @web.authenticated
    async def get(self) -> None:
        data = await asyncio.get_running_loop().run_in_executor(None, _ladder_of, self.learner)
        self.finish(data)


class LadderPage(HubOAuthenticated, web.RequestHandler):  # type: ignore[misc]
    """``ladder``: the caller's own ladder in the browser (the hub's OAuth; a page, so a login when needed), its
    labs linked to the caller's own server. No script, rendered from a template with autoescaping."""

    @web.authenticated
    async def get(self) -> None:
        from urllib.parse import quote

        from ladderlab.lab.ladder_view import Ladder
        from ladderlab.templating import render

        refuse_a_named_learner(self)
        user = self.current_user
        assert user is not None
        learner = str(user["name"])
        data = await asyncio.get_running_loop().run_in_executor(None, _ladder_of, learner)
        base = os.environ.get("JUPYTERHUB_BASE_URL", "/").rstrip("/")
        ladder = Ladder(data, link=lambda lab: f"{base}/user/{quote(learner)}/lab/tree/{quote(lab)}/{quote(lab)}.ipynb")
        self.set_header("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
        self.finish(render("hub/ladder.html.j2", **ladder.values()))


class CohortFeed:
    """The cohort's snapshot, computed at most once a second however many trainers watch (``cohort``: the hub's
    cohort, ``LADDERLAB_HUB_COHORT``; None: this hub runs none)."""

    def __init__(self, envs: Environments, cohort: str | None) -> None:
        self.envs, self.cohort = envs, cohort
        self._view: CohortView | None = None
        self._lock = threading.Lock()
        self._at = 0.0
        self._text = ""

    def current(self) -> str:
        """The snapshot as JSON text (keys sorted: equal text, equal snapshot)."""
        if self.cohort is None:
            raise web.HTTPError(404, "this hub runs no cohort")
        with self._lock:
            if time.monotonic() - self._at >= 1.0:
                if self._view is None:
                    self._view = CohortView(_settings(), self.cohort)
                self._text = json.dumps(self._view.snapshot(self.envs.up()), sort_keys=True)
                self._at = time.monotonic()
            return self._text


class TrainerHandler(HubOAuthenticated, web.RequestHandler):  # type: ignore[misc]
    """A trainer's page or API: the hub's OAuth (a browser is sent to log in), and 403 without the trainer
    scope: a learner sees only their own work, never the cohort's."""

    def check_trainer(self) -> None:
        user = self.current_user or {}
        if TRAINER_SCOPE not in set(user.get("scopes") or []):
            raise web.HTTPError(403, "the cohort view is for trainers")

    async def snapshot(self) -> str:
        feed: CohortFeed = self.settings["cohort_feed"]
        text: str = await asyncio.get_running_loop().run_in_executor(None, feed.current)
        return text


class CohortPage(TrainerHandler):
    @web.authenticated
    async def get(self) -> None:
        from ladderlab.templating import render

        self.check_trainer()
        snap = json.loads(await self.snapshot())
        self.set_header("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; "
                                                   "connect-src 'self'")
        # The page's EventSource is a cookie-authenticated fetch that is not a navigation: the hub's auth wants the
        # XSRF token with it (as the query's _xsrf), else it ignores the cookie and the events answer 401.
        xsrf = self.xsrf_token
        events = "api/cohort/events?" + urlencode({"_xsrf": xsrf.decode() if isinstance(xsrf, bytes) else xsrf})
        self.finish(render("hub/cohort.html.j2", snap=snap, events=events, script="static/cohort.js"))


class CohortScript(web.RequestHandler):
    """The page's script, as shipped (no learner data in it)."""

    def get(self) -> None:
        from ladderlab.templating import resource

        self.set_header("Content-Type", "text/javascript; charset=utf-8")
        self.finish(resource("hub/cohort.js"))


class CohortApi(TrainerHandler, ApiHandler):
    @web.authenticated
    async def get(self) -> None:
        self.check_trainer()
        self.set_header("Content-Type", "application/json")
        self.finish(await self.snapshot())


class CohortEvents(TrainerHandler, ApiHandler):
    """Server-sent events: the snapshot at once, then again each time it changed (looked at every second), and a
    comment every 15 s of quiet so that proxies keep the stream open. The browser's EventSource reconnects by
    itself."""

    @web.authenticated
    async def get(self) -> None:
        self.check_trainer()
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        last, quiet = "", 0
        while True:
            text = await self.snapshot()
            try:
                if text != last:
                    self.write(f"data: {text}\n\n")
                    last, quiet = text, 0
                elif quiet >= 15:
                    self.write(": still here\n\n")
                    quiet = 0
                await self.flush()
            except StreamClosedError:
                return
            await asyncio.sleep(1)
            quiet += 1


def make_app() -> web.Application:
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", f"/services/{SERVICE}/")
    # The one HubOAuth of this process: every HubOAuthenticated handler finds it (HubOAuth.instance()) by itself.
    auth = HubOAuth.instance(cache_max_age=30)  # a revoked token stops working within 30 s, not 300
    os.environ.setdefault("LADDERLAB_MAX_ENVS_PER_LEARNER", "2")
    envs = Environments()
    return web.Application([
        (prefix + "api/whoami", WhoAmI),
        (prefix + r"api/labs/([a-z0-9][a-z0-9-]*)/env", EnvHandler),
        (prefix + r"api/labs/([a-z0-9][a-z0-9-]*)/(answers|check|hints)(?:/([a-z0-9][a-z0-9-]*))?", PracticeHandler),
        (prefix + r"api/labs/([a-z0-9][a-z0-9-]*)/submissions", SubmissionHandler),
        (prefix + r"api/submissions/([^/]+)", SubmissionHandler),  # a key, percent-encoded (nbgrader's has spaces)
        (prefix + "api/ladder", LadderApi),
        (prefix + "ladder", LadderPage),
        (prefix + "cohort", CohortPage),
        (prefix + "static/cohort.js", CohortScript),
        (prefix + "api/cohort", CohortApi),
        (prefix + "api/cohort/events", CohortEvents),
        (prefix + "oauth_callback", HubOAuthCallbackHandler),
    ], cookie_secret=os.urandom(32), hub_auth=auth, xsrf_cookies=False, environments=envs, practice=Practice(envs),
        submissions=Submissions(), max_body_size=MAX_NOTEBOOK + 1024,
        cohort_feed=CohortFeed(envs, os.environ.get("LADDERLAB_HUB_COHORT") or None))


def main() -> None:
    url = urlparse(os.environ["JUPYTERHUB_SERVICE_URL"])
    app = make_app()
    app.settings["environments"].reconcile()  # the learners' firewall before the first request
    grading = _grading_service()
    app.listen(url.port or 80, address=url.hostname or "127.0.0.1")
    loop = ioloop.IOLoop.current()
    for sig in (signal.SIGTERM, signal.SIGINT):  # the hub stops its services with SIGTERM (pitfall 5: never ignore)
        signal.signal(sig, lambda *_: loop.add_callback_from_signal(loop.stop))
    try:
        loop.start()
    finally:
        if grading is not None:
            grading[0].stop()
            grading[1].release()


def _grading_service() -> Any:
    """The grading service's workers in this process (hand-ins are graded here), unless another process of this
    cache already runs them (its lock is held): then that one grades."""
    from ladderlab.service.judging import URL_ENV
    from ladderlab.service.paths import ServicePaths
    from ladderlab.service.queue import GradingService, ServiceLock

    settings = _settings()
    paths = ServicePaths.of(settings)
    lock = ServiceLock(paths.lock)
    if not lock.acquire():
        print("ladderlab service: another grading service runs for this cache; it grades the hand-ins", flush=True)
        return None
    # Judged on other machines (LADDERLAB_JUDGING_URL): a worker here mostly waits for a grader, so more of them;
    # the gradings this machine runs itself stay as many as without graders elsewhere.
    graders = int(os.environ.get("LADDERLAB_HUB_GRADING_WORKERS") or 1)
    workers = max(graders, 8) if os.environ.get(URL_ENV) else graders
    return GradingService(settings, paths, workers=workers, local_judges=graders).start(), lock


if __name__ == "__main__":
    main()
