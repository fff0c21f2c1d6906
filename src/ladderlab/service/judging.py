"""Gradings judged on other machines (docs/hub-design.md, 2.9): the judging table and the graders that take from it.

The grading service on the hub machine keeps everything a learner's record depends on: the exchange, the ledger,
nbgrader's gradebook, the evidence record and the feedback. What it hands to other machines is only the judging of
one hand-in: the notebook goes into the ``judging`` table of a database both reach (the hub's PostgreSQL, see
:mod:`ladderlab.hub.database`); a grader (``ladderlab service grader``, :class:`Judge`) claims it, grades it against a
fresh environment on its own Docker engine exactly as the hub would (:func:`ladderlab.grading.pipeline.grade`), and
writes the report and the graded notebook back. The hub's service takes them and records them as it records its
own gradings (nbgrader's autograde with the pregraded result, :func:`ladderlab.grading.nbgrader_ext.pregraded`).

So a grader needs the course checkout, the course secret (the seeds) and the database's ``grader`` role, which may
read and update this one table and nothing else: no gradebook, no evidence key, no learner's home.

Who judges one version: one claim, an ``UPDATE ... WHERE status = 'queued' RETURNING`` (``FOR UPDATE SKIP LOCKED``
on PostgreSQL), so two graders never claim one version at once; each claim has a name of its own (the grader's and
a token), and only that claim's beats, judgement or fault count. A grader beats on its claim every :data:`BEAT`
seconds; a claim whose beat has not changed for :data:`STALE` seconds, as the waiting hub sees it, is put back in
the queue (the grader died; its machine removes what it left at its next start): a grader that was only slow then
finds its judgement refused, and only the later claim's is recorded. A grader that cannot judge (its engine, our
own code) writes a fault, which the hub turns into its usual "could not be judged; trying again", never a verdict.
The hub records a judgement only when it was made for that very hand-in, with the course's seed for the learner
and the course's checks (:meth:`ladderlab.service.queue.GradingService._trust`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ladderlab.config import Settings
from ladderlab.errors import LadderlabError, UsageError
from ladderlab.grading.checks import one_line

Say = Callable[[str], None]

TABLE = "judging"
QUEUED, JUDGING, JUDGED, FAULT = "queued", "judging", "judged", "fault"

#: Seconds between a grader's beats on the version it judges, and the age of a beat after which the hub takes
#: the version back (the grader is gone).
BEAT = 5.0
STALE = 60.0
#: Seconds an idle grader waits between looks at the table.
POLL = 1.0
#: The environment variables: the judging database for this machine's grading service (the hub's service sets it
#: from ``hub start --graders-listen``), and how many judges the service runs itself besides (0: only other
#: machines grade).
URL_ENV = "LADDERLAB_JUDGING_URL"
LOCAL_ENV = "LADDERLAB_LOCAL_JUDGES"


def _quiet(_: str) -> None:
    return None


@dataclass
class Job:
    key: str
    lab: str
    student: str
    notebook: str
    attempts: int
    claimant: str  # this claim's own name (the grader's, and a token): a later claim of the same version differs


def _table(metadata: Any) -> Any:
    from sqlalchemy import Column, Float, Integer, String, Table, Text

    return Table(TABLE, metadata,
                 Column("key", String(255), primary_key=True),
                 Column("lab", String(255), nullable=False),
                 Column("student", String(255), nullable=False),
                 Column("notebook", Text, nullable=False),
                 Column("status", String(16), nullable=False, index=True),
                 Column("posted", Float, nullable=False),
                 Column("grader", String(255), nullable=False, default=""),
                 Column("beat", Float, nullable=False, default=0.0),
                 Column("attempts", Integer, nullable=False, default=0),
                 Column("report", Text, nullable=False, default=""),
                 Column("graded", Text, nullable=False, default=""),
                 Column("error", Text, nullable=False, default=""))


class JudgingTable:
    """The ``judging`` table of the database at ``url`` (an SQLAlchemy URL: PostgreSQL between machines, SQLite
    for a test of the logic). The hub's side posts, waits and takes; a grader's side claims, beats and finishes."""

    def __init__(self, url: str) -> None:
        from sqlalchemy import MetaData, create_engine
        from sqlalchemy.exc import ArgumentError

        try:
            self.engine = create_engine(url, pool_pre_ping=True)
        except (ArgumentError, ImportError) as exc:
            raise UsageError(f"the judging database {redacted(url)!r}: {exc}") from None
        self.metadata = MetaData()
        self.table = _table(self.metadata)

    def create(self) -> None:
        """Create the table (the hub's side: the graders' role may not)."""
        self.metadata.create_all(self.engine)

    def ping(self) -> None:
        """Reach the database and read the table (a grader's first check: a wrong URL, password or network)."""
        with self.engine.begin() as conn:
            conn.execute(self.table.select().limit(0))

    def close(self) -> None:
        self.engine.dispose()

    # --- the hub's side -------------------------------------------------------------------------
    def post(self, key: str, lab: str, student: str, notebook: str) -> None:
        """Queue this version for judging (again, when it was judged or faulted before)."""
        t = self.table
        with self.engine.begin() as conn:
            conn.execute(t.delete().where(t.c.key == key))
            conn.execute(t.insert().values(key=key, lab=lab, student=student, notebook=notebook, status=QUEUED,
                                           posted=time.time(), grader="", beat=0.0, attempts=0, report="",
                                           graded="", error=""))

    def state(self, key: str, whole: bool = False) -> dict[str, Any] | None:
        """The version's row: its status columns (``whole``: the judgement too)."""
        from sqlalchemy import select

        t = self.table
        columns = [t] if whole else [t.c.key, t.c.status, t.c.grader, t.c.beat, t.c.attempts, t.c.error]
        with self.engine.begin() as conn:
            row = conn.execute(select(*columns).where(t.c.key == key)).mappings().first()
        return dict(row) if row is not None else None

    def take_back(self, key: str, grader: str, beat: float) -> bool:
        """Put a claim whose grader stopped beating (still at ``beat``) back in the queue; whether it was."""
        t = self.table
        with self.engine.begin() as conn:
            done = conn.execute(t.update().where(self._mine(key, grader) & (t.c.beat == beat))
                                .values(status=QUEUED, grader="", beat=0.0))
        return bool(done.rowcount)

    def drop(self, key: str) -> None:
        t = self.table
        with self.engine.begin() as conn:
            conn.execute(t.delete().where(t.c.key == key))

    def judge(self, key: str, lab: str, student: str, notebook: str, *, timeout: float, note: Say = _quiet,
              stop: threading.Event | None = None, poll: float = 0.5, stale: float = STALE) -> tuple[Any, Any]:
        """Post this version and wait for a grader's judgement: (report, graded notebook). :class:`JudgingFault`
        when a grader could not judge it, when none finished it in ``timeout`` seconds, or when ``stop`` is set."""
        import nbformat

        stop = stop if stop is not None else threading.Event()
        self.post(key, lab, student, notebook)
        note("queued for a grader (the judging table)")
        deadline = time.monotonic() + timeout
        seen, last_beat, beat_seen = "", 0.0, time.monotonic()  # beats as this machine sees them change: no
        try:                                                      # two machines' clocks are compared
            while True:
                row = self.state(key)
                if row is None:
                    raise JudgingFault("the version left the judging table before it was judged")
                if row["status"] == JUDGED:
                    note(f"judged by {row['grader']}")
                    row = self.state(key, whole=True) or {}
                    try:
                        return (report_from_json(json.loads(row["report"])),
                                nbformat.reads(row["graded"], as_version=4))
                    except (KeyError, TypeError, ValueError) as exc:
                        raise JudgingFault(f"grader {row.get('grader')}: a judgement this service cannot read "
                                           f"({type(exc).__name__}: {one_line(str(exc))})") from None
                if row["status"] == FAULT:
                    raise JudgingFault(f"grader {row['grader']}: {row['error']}")
                if row["status"] == JUDGING:
                    if row["grader"] != seen or row["beat"] != last_beat:
                        if row["grader"] != seen:
                            note(f"grader {row['grader']} is judging it (attempt {row['attempts']})")
                        seen, last_beat, beat_seen = row["grader"], row["beat"], time.monotonic()
                    elif time.monotonic() - beat_seen > stale and self.take_back(key, row["grader"], row["beat"]):
                        note(f"grader {row['grader']} stopped answering (no beat for {stale:g} s): queued again")
                        seen = ""
                if time.monotonic() > deadline:
                    raise JudgingFault(f"no grader judged it within {timeout:g} s (is `ladderlab service grader` "
                                       f"running on a grading machine?)")
                if stop.wait(poll):
                    raise JudgingFault("the grading service stopped while a grader judged it")
        finally:
            with contextlib.suppress(Exception):
                self.drop(key)

    # --- a grader's side --------------------------------------------------------------------------
    def claim(self, grader: str) -> Job | None:
        """The oldest queued version, now this grader's (as :attr:`Job.claimant`); None when there is none."""
        from sqlalchemy import select

        claimant = f"{grader}#{secrets.token_hex(4)}"

        t = self.table
        pick = select(t.c.key).where(t.c.status == QUEUED).order_by(t.c.posted).limit(1)
        if self.engine.dialect.name == "postgresql":  # two graders at once: each takes a different row
            pick = pick.with_for_update(skip_locked=True)
        claim = (t.update().where((t.c.status == QUEUED) & (t.c.key == pick.scalar_subquery()))
                 .values(status=JUDGING, grader=claimant, beat=time.time(), attempts=t.c.attempts + 1)
                 .returning(t.c.key, t.c.lab, t.c.student, t.c.notebook, t.c.attempts))
        with self.engine.begin() as conn:
            row = conn.execute(claim).first()
        return Job(row[0], row[1], row[2], row[3], row[4], claimant) if row is not None else None

    def _mine(self, key: str, grader: str) -> Any:
        t = self.table
        return (t.c.key == key) & (t.c.status == JUDGING) & (t.c.grader == grader)

    def beat(self, key: str, grader: str) -> bool:
        """Still judging ``key``; False when the claim is no longer this grader's (taken back, dropped)."""
        with self.engine.begin() as conn:
            done = conn.execute(self.table.update().where(self._mine(key, grader)).values(beat=time.time()))
        return bool(done.rowcount)

    def finish(self, key: str, grader: str, report: dict[str, Any], graded: str) -> bool:
        with self.engine.begin() as conn:
            done = conn.execute(self.table.update().where(self._mine(key, grader))
                                .values(status=JUDGED, report=json.dumps(report), graded=graded))
        return bool(done.rowcount)

    def fault(self, key: str, grader: str, error: str) -> bool:
        with self.engine.begin() as conn:
            done = conn.execute(self.table.update().where(self._mine(key, grader))
                                .values(status=FAULT, error=error[:2000]))
        return bool(done.rowcount)


class JudgingFault(LadderlabError):
    """The judging table gave no judgement for a version (never a verdict: the hub tries again)."""


def report_to_json(report: Any) -> dict[str, Any]:
    """A grading report, whole (what the hub needs to record it), as JSON."""
    return dataclasses.asdict(report)


def report_from_json(data: dict[str, Any]) -> Any:
    from ladderlab.grading.pipeline import CheckOutcome, GradeReport

    fields = {f.name for f in dataclasses.fields(GradeReport)}
    values = {k: v for k, v in data.items() if k in fields}
    values["checks"] = [CheckOutcome(**c) for c in data.get("checks", [])]
    return GradeReport(**values)


def redacted(url: str) -> str:
    """A database URL without its password, for messages."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unparsable URL)"


class Judge:
    """Graders in this process: ``workers`` threads, each claiming a version from the table, grading it on this
    machine's engine and writing the judgement back."""

    def __init__(self, settings: Settings, table: JudgingTable, *, workers: int = 1, say: Say = _quiet,
                 name: str | None = None, poll: float = POLL) -> None:
        from ladderlab.course import load_course

        self.settings = settings
        self.table = table
        self.workers = workers
        self.say = say
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.poll = poll
        self.course = load_course(settings.course_file, "course.yaml")
        self._labs: dict[str, Any] = {}
        self._labs_lock = threading.Lock()
        self._client: Any = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._judging: dict[str, Job] = {}  # claimant -> the version being judged
        self._judging_lock = threading.Lock()
        self.judged = 0

    def start(self, reap_first: bool = True) -> Judge:
        """Start the workers, after removing what a grader of this machine left behind when it died (its claim
        went back); ``reap_first=False`` when the caller already did (the grading service's own judges)."""
        from ladderlab.environments.reaper import reap

        if self.workers and reap_first:
            with contextlib.suppress(Exception):
                for env_id, why in sorted(reap(self.settings, self.client(), graders_gone_only=True).removed.items()):
                    self.say(f"grader: removed environment {env_id} ({why})")
        for i in range(self.workers):
            t = threading.Thread(target=self._loop, name=f"ladderlab-judge-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop claiming; a version still being judged when ``timeout`` is up gets a fault, so that the hub tries
        it again at once instead of waiting for the claim to go stale."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        with self._judging_lock:
            left = list(self._judging.values())
        for job in left:
            self._fault(job, "the grader was stopped while judging it")

    def client(self) -> Any:
        from ladderlab.environments.engine import connect

        if self._client is None:
            self._client = connect()
        return self._client

    def lab(self, lab_id: str) -> Any:
        from ladderlab.course.labs import load_lab
        from ladderlab.grading.checks import load_graders

        with self._labs_lock:
            if lab_id not in self._labs:
                if lab_id not in {lab.id for lab in self.course.labs if lab.status == "published"}:
                    raise UsageError(f"no published lab {lab_id!r} in this grader's course ({self.settings.root})")
                self._labs[lab_id] = load_lab(self.settings, self.course, lab_id,
                                              registry=load_graders(self.settings.root))
            return self._labs[lab_id]

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                job = self.table.claim(self.name)
            except Exception as exc:  # the database is away for a while: wait and look again
                self.say(f"grader: cannot reach the judging table: {type(exc).__name__}: {one_line(str(exc))}")
                self._stop.wait(max(self.poll, 5.0))
                continue
            if job is None:
                self._stop.wait(self.poll)
                continue
            self.run(job)

    def run(self, job: Job) -> None:
        """Judge one claimed version and write the judgement (or the fault) back."""
        import nbformat

        from ladderlab.grading.pipeline import grade

        self.say(f"grader: judging {job.key} (attempt {job.attempts})")
        done = threading.Event()

        def beat() -> None:
            while not done.wait(BEAT):
                with contextlib.suppress(Exception):
                    if not self.table.beat(job.key, job.claimant):
                        return

        beating = threading.Thread(target=beat, name=f"ladderlab-beat-{job.key[:40]}", daemon=True)
        beating.start()
        with self._judging_lock:
            self._judging[job.claimant] = job
        try:
            try:
                lab = self.lab(job.lab)
                nb = nbformat.reads(job.notebook, as_version=4)
                report, graded = grade(self.settings, self.client(), lab, nb, job.student, detach_teardown=True)
            except LadderlabError as exc:
                self._fault(job, one_line(str(exc)))
                return
            except Exception as exc:  # our own code failed: it could not judge, which is never a verdict
                self.say(traceback.format_exc())
                self._fault(job, f"the grader failed: {type(exc).__name__}: {one_line(str(exc))}")
                return
            if not report.complete:
                self._fault(job, report.error)
                return
            if self.table.finish(job.key, job.claimant, report_to_json(report), nbformat.writes(graded)):
                self.judged += 1
                self.say(f"grader: {job.key}: {report.score:g}/{report.max_score:g}")
            else:
                self.say(f"grader: {job.key}: judged, but the hub had taken it back")
        finally:
            done.set()
            with self._judging_lock:
                self._judging.pop(job.claimant, None)

    def _fault(self, job: Job, why: str) -> None:
        self.say(f"grader: {job.key}: could not be judged: {why}")
        with contextlib.suppress(Exception):
            self.table.fault(job.key, job.claimant, why)
