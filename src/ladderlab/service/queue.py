"""The grading service: submissions from nbgrader's exchange, graded on a persistent queue.

The queue is `Huey <https://huey.readthedocs.io>`_: a maintained task queue whose default storage is
one SQLite file (``service/queue.db``: nothing to install or run on a laptop) and which has storages a server
keeps, for workers on several hosts: SQL (``SqlHuey`` on the hub's PostgreSQL, ``LADDERLAB_QUEUE_URL=postgresql://``)
and Redis (``RedisHuey``, ``redis://``); the same tasks. Huey gives
the persistent queue, worker threads, retries with a delay and a scheduler for them; the ledger
(:mod:`.ledger`) gives what a queue alone does not: each submission version graded at most once, and
work a crash left half-done picked up again (a row still ``grading`` when the service starts).

Grading one submission (:meth:`GradingService.grade_one`):

1. the heavy part, in the worker, in parallel with other workers: the one pipeline
   (:func:`ladderlab.grading.pipeline.grade`: fresh environment, sandbox, trusted checks); the
   environment is torn down off the critical path;
2. a grading error (the grader could not judge) is retried after a delay, up to a limit; after
   that the learner is told "could not be graded, try again" and nothing is recorded;
3. under the one writer lock: the submission is put in nbgrader's ``submitted/`` tree, nbgrader's
   ``autograde`` records it in the gradebook (taking the grading just made, see
   :func:`~ladderlab.grading.nbgrader_ext.pregraded`) and ladderlab's ``RecordEvidence`` appends
   the evidence; ``generate_feedback`` and ``release_feedback`` put the feedback in the exchange.

With ``LADDERLAB_JUDGING_URL`` (a hub whose graders run on other machines, docs/hub-design.md 2.9), step 1 is
done by whichever grader claims the version from that database (:mod:`.judging`); steps 2 and 3 stay here.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import sqlite3
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ladderlab.config import Settings, env_float
from ladderlab.course import load_course
from ladderlab.course.labs import LabDef, load_lab
from ladderlab.errors import LadderlabError, UsageError
from ladderlab.grading.checks import one_line
from ladderlab.service.judging import LOCAL_ENV as LOCAL_JUDGES_ENV
from ladderlab.service.judging import URL_ENV as JUDGING_URL_ENV
from ladderlab.service.judging import Judge, JudgingTable
from ladderlab.service.ledger import ERROR, GRADED, GRADING, QUEUED, Ledger, Submission, parse_key
from ladderlab.service.paths import ServicePaths
from ladderlab.service.warm import WarmPool

Say = Callable[[str], None]

#: Attempts for a submission whose grading could not judge (infrastructure), and the delay before the first
#: retry; each later retry waits twice as long as the one before, never more than RETRY_DELAY_MAX.
RETRIES = 2
RETRY_DELAY = 5.0
RETRY_DELAY_MAX = 120.0


def backoff(attempt: int, first: float = RETRY_DELAY, most: float = RETRY_DELAY_MAX) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based): ``first``, then doubling, capped."""
    return float(min(most, first * 2 ** max(0, attempt - 1)))


#: What one grading holds at its peak: the lab's hosts, the sandbox (its limit is 1 GiB) and the observers.
MEMORY_PER_GRADING = 1.5 * (1 << 30)


#: Gradings at once per core by default. A grading keeps about half a core busy on its own (it mostly waits: on
#: the engine, on probes' timeouts, on the sandbox's kernel). Measured with benchmarks/cohort.py on 2 cores
#: (sec-1, 12 submissions, the same 1-worker baseline of 132-141 s in each run): 4 workers 1.49x, 6 workers
#: 1.85x, 8 workers 2.06x. Timing checks that meet a machine too busy to judge say so, and the queue tries
#: again (never a failed verdict).
PER_CORE = 4


def _count_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise UsageError(f"environment variable {name}: expected a whole number, got {raw!r}") from None
    if value < 0:
        raise UsageError(f"environment variable {name}: expected 0 or more, got {raw!r}")
    return value


def default_workers() -> tuple[int, str]:
    """Gradings at once this machine allows, and why: ``PER_CORE`` per core, no more than the available memory
    holds."""
    cores = os.cpu_count() or 1
    try:
        with open("/proc/meminfo") as fh:
            info = dict(line.split(":", 1) for line in fh)
        available = int(info["MemAvailable"].strip().split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        available = 0
    by_memory = max(1, int(available // MEMORY_PER_GRADING)) if available else PER_CORE * cores
    n = max(1, min(PER_CORE * cores, by_memory))
    return n, (f"{n} workers: {cores} cores x {PER_CORE}, memory for {by_memory} "
               f"({available / (1 << 30):.1f} GiB available, {MEMORY_PER_GRADING / (1 << 30):g} GiB per grading)")


class Retry(Exception):
    """This attempt could not judge; the queue tries again after a delay."""


#: How often the engineer's grading service looks for practice environments to prepare for (seconds).
PRACTICE_LOOK = 5.0


def _quiet(_: str) -> None:
    return None


class ServiceLock:
    """The lock held by the one process that runs grading workers for this cache (flock: dies with it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @staticmethod
    def held(path: Path) -> bool:
        """Whether some process runs the grading service now."""
        if not path.exists():
            return False
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False


def _huey(paths: ServicePaths) -> Any:
    from huey import SqliteHuey

    url = os.environ.get("LADDERLAB_QUEUE_URL", "")
    if url.startswith("redis://"):
        from huey import RedisHuey

        return RedisHuey("ladderlab-grading", url=url, results=False)
    if url.startswith("postgresql://"):  # a hub's PostgreSQL (hub/database.py): Huey's SQL storage, peewee's
        try:
            from huey.contrib.sql_huey import SqlHuey
        except ImportError as exc:
            raise LadderlabError(f"the grading queue on PostgreSQL (LADDERLAB_QUEUE_URL) needs peewee and psycopg2: "
                                 f"pip install -e '.[hub]' ({exc})") from None
        return SqlHuey("ladderlab-grading", database=url, results=False)
    if url:
        raise UsageError(f"environment variable LADDERLAB_QUEUE_URL: expected redis://... or postgresql://..., got "
                         f"{url!r} (leave it unset for the SQLite queue in {paths.queue_db})")
    paths.base.mkdir(parents=True, exist_ok=True)
    return SqliteHuey("ladderlab-grading", filename=str(paths.queue_db), results=False)


class GradingService:
    """Picks submissions up from the exchange, grades them on the queue, records them, releases feedback."""

    def __init__(self, settings: Settings, paths: ServicePaths, *, workers: int = 1, say: Say = _quiet,
                 retries: int = RETRIES, retry_delay: float | None = None, scan_interval: float | None = 0.5,
                 release_feedback: bool = True, prepare: bool = False, local_judges: int | None = None) -> None:
        self.settings = settings
        self.paths = paths
        self.workers = workers
        self.say = say
        self.scan_interval = scan_interval  # None: take only what is enqueued (cohort grading), never scan
        self.release_feedback = release_feedback  # False: the trainer releases feedback (cohort feedback)
        self.course = load_course(settings.course_file, "course.yaml")
        self.ledger = Ledger(paths.ledger_db)
        self.writer = threading.Lock()  # nbgrader's gradebook, the evidence record, the feedback: one writer
        self.huey = _huey(paths)
        self.retries = retries
        self.retry_delay = env_float("LADDERLAB_RETRY_DELAY", RETRY_DELAY) if retry_delay is None else retry_delay
        self.grade_task = self.huey.task(name="ladderlab.grade")(self._task)
        self._labs: dict[str, LabDef] = {}
        #: Gradings whose recording failed, kept so that a retry records them without grading again.
        self._graded: dict[str, tuple[Any, Any]] = {}
        self._labs_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._consumer: Any = None
        self._client: Any = None
        #: ``prepare`` (the engineer's loop, ``ladderlab lab``): grading environments brought up ahead for the
        #: labs being practised, so that a hand-in does not wait for its hosts (service/warm.py).
        self.warm: WarmPool | None = WarmPool(settings, self.client, say) if prepare else None
        self._practice_seen = 0.0
        #: Graders on other machines (service/judging.py): with ``LADDERLAB_JUDGING_URL`` set, a grading is judged
        #: by whichever grader claims it from that database, this process's own judges among them
        #: (``LADDERLAB_LOCAL_JUDGES``, default the workers; 0: only other machines judge); it is recorded here.
        self.judging: JudgingTable | None = None
        self.judge: Judge | None = None
        self.local_judges = 0
        url = os.environ.get(JUDGING_URL_ENV, "")
        if url:
            self.judging = JudgingTable(url)
            self.local_judges = _count_env(LOCAL_JUDGES_ENV, workers if local_judges is None else local_judges)
            self.judging_timeout = env_float("LADDERLAB_JUDGING_TIMEOUT", 3600.0)

    # --- life cycle -----------------------------------------------------------------------------
    def start(self) -> GradingService:
        """Recover what a crash left, start the workers and the exchange scanner (threads of this process)."""
        from huey.consumer import Consumer

        class _Consumer(Consumer):  # type: ignore[misc]
            def _set_signal_handlers(self) -> None:  # this process's signals stay its own (JupyterLab's parent)
                return None

        if self.judging is not None:
            self.judging.create()
            if self.local_judges:
                self.judge = Judge(self.settings, self.judging, workers=self.local_judges, say=self.say,
                                   name=f"{socket.gethostname()}:{os.getpid()}:service")
        self.recover()  # reaps what gradings of this machine left, the judges' among them
        if self.judge is not None:
            self.judge.start(reap_first=False)
        self._consumer = _Consumer(self.huey, workers=self.workers, worker_type="thread", periodic=False,
                                   initial_delay=0.1, max_delay=0.5, backoff=1.1, check_worker_health=False)
        self._consumer.start()
        if self.scan_interval is not None:
            scanner = threading.Thread(target=self._scan_loop, name="ladderlab-scan", daemon=True)
            scanner.start()
            self._threads.append(scanner)
        return self

    def enqueue(self, keys: list[str]) -> None:
        """Queue these versions (already in the ledger as queued), e.g. a cohort's collected submissions."""
        for key in keys:
            self.grade_task(key)

    def stop(self, graceful: bool = True) -> None:
        self._stop.set()
        if self._consumer is not None:
            self._consumer.stop(graceful=graceful)
        for t in self._threads:
            t.join(timeout=5)
        if self.judge is not None:
            self.judge.stop()
        if self.judging is not None:
            self.judging.close()
        if self.warm is not None:
            self.warm.close()

    def recover(self) -> list[str]:
        """Queue again every version the ledger has not finished (the queue itself is rebuilt from it), after
        removing the grading environments whose grader is gone (a killed run leaves its hosts behind)."""
        self.huey.flush()
        self._reap()
        keys = []
        for sub in self.ledger.unfinished():
            if sub.status == GRADING:
                self.ledger.requeue(sub.key, "the grading service stopped while grading it")
            self.grade_task(sub.key)
            keys.append(sub.key)
        if keys:
            self.say(f"grading service: {len(keys)} submission(s) picked up again: {', '.join(keys)}")
        return keys

    def _reap(self) -> None:
        from ladderlab.environments.reaper import reap

        try:
            report = reap(self.settings, self.client(), graders_gone_only=True)
        except Exception as exc:  # an engine that does not answer yet: the workers' gradings will say so
            self.say(f"grading service: could not look for environments left behind: {one_line(str(exc))}")
            return
        for env_id, why in sorted(report.removed.items()):
            self.say(f"grading service: removed environment {env_id} ({why})")

    # --- intake -----------------------------------------------------------------------------------
    def inbound(self) -> Path:
        return self.paths.exchange / self.course.id / "inbound"

    def scan(self) -> list[str]:
        """Queue every submission version in the exchange the ledger has not seen; the new keys."""
        new: list[str] = []
        try:
            names = sorted(os.listdir(self.inbound()))
        except FileNotFoundError:
            return new
        for name in names:
            try:
                parse_key(name)
            except ValueError:
                continue
            if not _complete(self.inbound() / name):
                continue
            if self.ledger.add(name):
                self.say(f"grading service: queued {name}")
                self.grade_task(name)
                new.append(name)
        return new

    def _scan_loop(self) -> None:
        while not self._stop.wait(self.scan_interval or 0.5):
            try:
                self.scan()
            except Exception as exc:  # the scanner must outlive one bad directory entry
                self.say(f"grading service: scan failed: {one_line(str(exc))}")
            if self.warm is not None and time.monotonic() - self._practice_seen > PRACTICE_LOOK:
                self._practice_seen = time.monotonic()
                try:
                    self.prepare_for_practice()
                except Exception as exc:  # preparing ahead is an optimisation: never a reason to stop
                    self.say(f"grading service: could not prepare ahead: {one_line(str(exc))}")

    def prepare_for_practice(self) -> list[tuple[str, str]]:
        """Prepare a grading environment for each lab a learner is practising (a practice environment of
        theirs runs); the (learner, lab) pairs started now."""
        from ladderlab.environments.runtime import list_envs

        if self.warm is None:
            return []
        published = {lab.id for lab in self.course.labs if lab.status == "published"}
        started = []
        for found in list_envs(self.settings, self.client()):
            if found.bound or found.lab not in published or found.status != "ready":
                continue
            if self.warm.want(found.learner, self.lab(found.lab)):
                started.append((found.learner, found.lab))
        return started

    # --- grading -------------------------------------------------------------------------------------
    def lab(self, lab_id: str) -> LabDef:
        from ladderlab.grading.checks import load_graders

        with self._labs_lock:
            if lab_id not in self._labs:
                published = {lab.id for lab in self.course.labs if lab.status == "published"}
                if lab_id not in published:
                    raise UsageError(f"no published lab {lab_id!r} in this course")
                self._labs[lab_id] = load_lab(self.settings, self.course, lab_id,
                                              registry=load_graders(self.settings.root))
            return self._labs[lab_id]

    def client(self) -> Any:
        from ladderlab.environments.engine import connect

        if self._client is None:
            self._client = connect()
        return self._client

    def _task(self, key: str) -> None:
        from huey.exceptions import RetryTask

        try:
            self.grade_one(key)
        except Retry as exc:
            self.ledger.requeue(key, str(exc))
            sub = self.ledger.get(key)
            delay = backoff(sub.attempts if sub is not None else 1, self.retry_delay)
            self.say(f"grading service: {key}: could not be judged ({exc}); trying again in {delay:g} s")
            raise RetryTask(delay=delay) from exc

    def grade_one(self, key: str) -> Submission | None:
        """Grade one submission version; Retry when it could not be judged and attempts remain
        (the ledger counts attempts, so a crash in the middle of one counts too)."""
        sub = self.ledger.claim(key)
        if sub is None:
            return self.ledger.get(key)
        final_attempt = sub.attempts > self.retries
        self.paths.logs.mkdir(parents=True, exist_ok=True)
        log_path = self.paths.logs / f"{key}.log"
        with log_path.open("a") as log:

            def note(message: str) -> None:
                log.write(f"{time.strftime('%H:%M:%S')} {message}\n")
                log.flush()
                # the stage is a progress hint: a busy ledger must not end the grading
                with contextlib.suppress(sqlite3.Error):
                    self.ledger.stage(key, one_line(message)[:200])

            note(f"attempt {sub.attempts}: grading {key}")
            try:
                try:
                    outcome = self._grade(sub, note)
                except (Retry, UsageError):
                    raise
                except Exception as exc:  # our own code failed: it could not judge, which is never a verdict
                    log.write(traceback.format_exc())
                    raise Retry(f"the grader failed: {type(exc).__name__}: {one_line(str(exc))}") from exc
            except Retry as exc:
                note(f"could not be judged: {exc}")
                if not final_attempt:
                    raise
                self.ledger.finish(key, ERROR, error=str(exc), log=str(log_path))
                self._release_error_feedback(sub, str(exc))
                self.say(f"grading service: {key}: could not be graded: {exc}")
                return self.ledger.get(key)
            except UsageError as exc:  # nothing to grade (no such lab, no notebook): the learner's to fix
                note(str(exc))
                self.ledger.finish(key, ERROR, error=str(exc), log=str(log_path))
                self._release_error_feedback(sub, str(exc))
                return self.ledger.get(key)
            self.ledger.finish(key, GRADED, log=str(log_path), **outcome)
            self.say(f"grading service: {key}: {outcome['score']:g}/{outcome['max_score']:g}"
                     f"{' passed' if outcome['passed'] else ''}")
        if self.warm is not None:  # the same learner is likely to hand this lab in again
            with contextlib.suppress(Exception):
                self.warm.want(sub.student, self.lab(sub.lab))
        return self.ledger.get(key)

    def _grade(self, sub: Submission, note: Say) -> dict[str, Any]:
        import nbformat

        from ladderlab.course.labs import read_notebook
        from ladderlab.errors import ConfigError
        from ladderlab.grading.nbgrader_ext import pregraded
        from ladderlab.grading.pipeline import grade

        lab = self.lab(sub.lab)
        handed = self.inbound() / sub.key
        try:
            nb = read_notebook(handed / f"{lab.id}.ipynb", f"{sub.key}/{lab.id}.ipynb")
        except ConfigError as exc:
            raise UsageError(f"your hand-in has no readable {lab.id}.ipynb ({exc}); submit the lab's notebook") \
                from None
        if sub.key in self._graded:
            report, graded = self._graded[sub.key]
            note("recording again (the grading itself was done)")
        elif self.judging is not None:  # judged by a grader that claims it, maybe on another machine
            try:
                report, graded = self.judging.judge(sub.key, lab.id, sub.student, nbformat.writes(nb),
                                                    timeout=self.judging_timeout, note=note, stop=self._stop)
            except LadderlabError as exc:
                raise Retry(one_line(str(exc))) from exc
            self._trust(report, sub, lab, nb)
            self._graded[sub.key] = (report, graded)
        else:
            prepared = self.warm.take(sub.student, lab.id) if self.warm is not None else None
            try:
                report, graded = grade(self.settings, self.client(), lab, nb, sub.student, say=note,
                                       detach_teardown=True, prepared=prepared)
            except LadderlabError as exc:
                raise Retry(one_line(str(exc))) from exc
            for problem in report.problems:
                note(f"note: {problem}")
            if not report.complete:
                raise Retry(report.error)
            self._graded[sub.key] = (report, graded)
        note("recording: nbgrader gradebook, evidence, feedback")
        with self.writer:
            self._collect(sub, lab)
            api = self._api()
            with pregraded(report, graded):
                self._ok(api.autograde(lab.id, sub.student, force=True, create=True), "autograde")
            if self.release_feedback:
                self.feedback(lab.id, sub.student)
        self._graded.pop(sub.key, None)
        hidden = {c.id for c in lab.checks if c.hidden}
        titles = {c.id: c.spec.title for c in lab.checks}
        checks = [{"id": c.id, "title": titles.get(c.id, c.id), "status": c.status, "points": c.points,
                   "max_points": c.max_points, "hidden": c.id in hidden,
                   "feedback": "" if c.id in hidden else c.feedback} for c in report.checks]
        note(f"graded: {report.score:g}/{report.max_score:g}")
        return {"score": report.score, "max_score": report.max_score, "passed": report.passed, "checks": checks}

    def _trust(self, report: Any, sub: Submission, lab: LabDef, nb: Any) -> None:
        """A judgement from the judging table is recorded only when it was made as this machine would make it:
        complete, for this very hand-in (learner, lab, the cells they wrote), with this course's seed for the
        learner and this course's checks. A grading machine with another seed secret or an older checkout could
        not judge it, which is never a verdict: Retry, saying what differs."""
        from ladderlab.course.seeds import course_secret, derive_seed
        from ladderlab.grading.pipeline import submission_hash

        if not report.complete:
            raise Retry(report.error or "the grader's judgement is incomplete")
        if (report.lab, report.student) != (lab.id, sub.student):
            raise Retry(f"the judgement names {report.student}/{report.lab}, not {sub.student}/{lab.id}")
        if report.submission_hash != submission_hash(lab, nb):
            raise Retry("the judgement is of another notebook than this hand-in")
        if report.check_suite_hash != lab.suite_hash():
            raise Retry(f"the grader judged {lab.id} with other checks than this course's (its course checkout "
                        f"differs from the hub's): not recorded")
        if report.seed != derive_seed(self.course.id, sub.student, lab.id, secret=course_secret(self.settings)):
            raise Retry("the grader judged with another seed than this course's (its keys/course-seed.key is not "
                        "the hub's): not recorded")

    def feedback(self, lab_id: str, student: str) -> None:
        """nbgrader's generate_feedback and release_feedback for one learner (hidden checks redacted)."""
        api = self._api()
        self._ok(api.generate_feedback(lab_id, student, force=True), "generate_feedback")
        self._ok(api.release_feedback(lab_id, student), "release_feedback")

    def _api(self) -> Any:
        from ladderlab.service.workspace import nbgrader_api

        return nbgrader_api(self.paths)

    @staticmethod
    def _ok(result: dict[str, Any], what: str) -> None:
        if not result.get("success"):
            detail = (result.get("error") or result.get("log") or "").strip().splitlines()
            raise Retry(f"nbgrader {what}: {one_line(detail[-1]) if detail else 'failed'}")

    def _collect(self, sub: Submission, lab: LabDef) -> None:
        """nbgrader's ``submitted/<student>/<lab>/``: exactly this version's notebook and its timestamp."""
        dest = self.paths.course_root / "submitted" / sub.student / lab.id
        tmp = dest.with_name(dest.name + ".incoming")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        handed = self.inbound() / sub.key
        for name in (f"{lab.id}.ipynb", "timestamp.txt", "submission_secret.txt"):
            if (handed / name).is_file() and not (handed / name).is_symlink():
                shutil.copyfile(handed / name, tmp / name)
        shutil.rmtree(dest, ignore_errors=True)
        tmp.replace(dest)

    def _release_error_feedback(self, sub: Submission, why: str) -> None:
        """Feedback in the exchange that says the submission could not be graded (never a failure)."""
        from nbgrader.utils import notebook_hash

        from ladderlab.templating import render

        secret_file = self.inbound() / sub.key / "submission_secret.txt"
        try:
            secret = secret_file.read_text().strip()
        except OSError:
            return
        target = self.paths.exchange / self.course.id / "feedback" / \
            f"{notebook_hash(secret=secret, notebook_id=sub.lab)}.html"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(render("service/not_graded.html.j2", lab=sub.lab, why=why))
        target.chmod(0o644)

    def wait(self, key: str, timeout: float, on_change: Callable[[Submission], None] | None = None) -> Submission:
        return wait_for(self.ledger, key, timeout, on_change)


def _complete(handed: Path) -> bool:
    """nbgrader's submit has finished writing ``handed``: its secret (written after the notebooks) is there
    and nothing in it changed for a moment."""
    secret = handed / "submission_secret.txt"
    try:
        if not handed.is_dir() or handed.is_symlink() or secret.stat().st_size == 0:
            return False
        newest = max(p.stat().st_mtime for p in handed.iterdir())
    except (OSError, ValueError):
        return False
    return time.time() - newest > 0.3


def wait_for(ledger: Ledger, key: str, timeout: float,
             on_change: Callable[[Submission], None] | None = None) -> Submission:
    """Poll the ledger until ``key`` is graded or in error; TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    seen: tuple[str, str] | None = None
    while True:
        sub = ledger.get(key)
        if sub is not None:
            now = (sub.status, sub.stage)
            if now != seen and on_change is not None:
                on_change(sub)
            seen = now
            if sub.done:
                return sub
        if time.monotonic() > deadline:
            state = f"{sub.status} ({sub.stage})" if sub else "not picked up"
            raise TimeoutError(f"{key}: still {state} after {timeout:.0f} s")
        time.sleep(0.3)


__all__ = ["ERROR", "GRADED", "QUEUED", "GradingService", "Retry", "ServiceLock", "wait_for"]
