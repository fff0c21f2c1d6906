"""Cohorts: a trainer's roster of learners, over nbgrader (its gradebook and exchange), not beside it.

A cohort lives in ``service/cohorts/<name>.json`` (the trainer's machine; ``--cohort NAME`` of the ladder
and report commands reads it as well as ``course.yaml``'s ``cohorts``). Adding a roster is all or
nothing: every bad row is reported with its line number and nothing is imported unless all are good;
learners are added to nbgrader's gradebook (id, names, email) as they are to the cohort.

The states ``ladderlab cohort status`` shows per learner and lab come from the exchange (handed in)
and the ledger (collected, grading, graded, error): :func:`states`; for a lab with a manually graded part,
the evidence record says whether a graded hand-in still awaits its manual grade (:func:`with_manual_grades`).
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ladderlab.course.seeds import LEARNER
from ladderlab.errors import ConfigError, UsageError
from ladderlab.service.ledger import ERROR, GRADED, GRADING, QUEUED, SUPERSEDED, Ledger, Submission, parse_key
from ladderlab.service.paths import ServicePaths

COLUMNS = ("id", "name", "email", "team")
NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
EMAIL = re.compile(r"^[^@\s,;<>]+@[^@\s,;<>]+\.[^@\s,;<>]+$")
NOT_SUBMITTED, SUBMITTED = "not submitted", "submitted"
#: A lab with a manually graded part whose automatic part passed: the trainer's grade in the formgrader is
#: still to be recorded (``ladderlab cohort record-rubric``); the ladder counts the lab only after it.
AWAITING_RUBRIC = "awaiting rubric"


@dataclass(frozen=True)
class Member:
    id: str
    name: str
    email: str
    team: str


def _file(paths: ServicePaths, name: str) -> Path:
    if not NAME.fullmatch(name):
        raise UsageError(f"cohort name {name!r}: use 1-63 lowercase letters, digits and '-'")
    return paths.base / "cohorts" / f"{name}.json"


def create(paths: ServicePaths, name: str) -> Path:
    path = _file(paths, name)
    if path.exists():
        raise UsageError(f"cohort {name!r} exists ({path})")
    path.parent.mkdir(parents=True, exist_ok=True)
    _write(path, {"name": name, "created": time.time(), "members": []})
    return path


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def _read(paths: ServicePaths, name: str) -> dict[str, Any]:
    path = _file(paths, name)
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        known = sorted(p.stem for p in path.parent.glob("*.json")) if path.parent.is_dir() else []
        raise UsageError(f"no cohort {name!r} (cohorts: {', '.join(known) or 'none'}; "
                         f"create one with `ladderlab cohort create {name}`)") from None
    return data


def members(paths: ServicePaths, name: str) -> list[Member]:
    return [Member(**m) for m in _read(paths, name)["members"]]


def names(paths: ServicePaths) -> dict[str, list[str]]:
    """Every cohort on this machine: name -> learner ids."""
    folder = paths.base / "cohorts"
    out: dict[str, list[str]] = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            out[path.stem] = [m["id"] for m in json.loads(path.read_text())["members"]]
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


def parse_roster(text: str, display: str) -> list[Member]:
    """The roster's rows; ConfigError listing every bad row by line number (nothing half-read)."""
    problems: list[tuple[str, str]] = []
    reader = csv.reader(io.StringIO(text))
    rows = list(reader)
    if not rows:
        raise ConfigError(display, [("line 1", f"empty roster: expected the header {','.join(COLUMNS)}")])
    header = [h.strip().lower() for h in rows[0]]
    if tuple(header) != COLUMNS:
        raise ConfigError(display, [("line 1", f"header must be {','.join(COLUMNS)}, got {','.join(rows[0])}")])
    out: list[Member] = []
    seen: dict[str, int] = {}
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        where = f"line {number}"
        if len(row) != len(COLUMNS):
            problems.append((where, f"expected {len(COLUMNS)} columns ({','.join(COLUMNS)}), got {len(row)}"))
            continue
        learner, name, email, team = (cell.strip() for cell in row)
        if not LEARNER.fullmatch(learner):
            problems.append((f"{where}.id", f"{learner!r} is not a learner id (1-64 letters, digits and . _ @ -, "
                                            f"starting with a letter or digit)"))
        elif learner in seen:
            problems.append((f"{where}.id", f"{learner!r} repeats line {seen[learner]}"))
        else:
            seen[learner] = number
        if not name or len(name) > 200:
            problems.append((f"{where}.name", "a name of 1-200 characters is required"))
        if email and not EMAIL.fullmatch(email):
            problems.append((f"{where}.email", f"{email!r} is not an email address"))
        if len(team) > 100:
            problems.append((f"{where}.team", "at most 100 characters"))
        out.append(Member(learner, name, email, team))
    if problems:
        raise ConfigError(display, problems)
    return out


def read_roster(roster: Path) -> list[Member]:
    """The roster file's rows (:func:`parse_roster`); ConfigError when it cannot be read."""
    try:
        text = roster.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(roster), [("", f"cannot read the roster: {exc}")]) from None
    return parse_roster(text, str(roster))


def add(paths: ServicePaths, name: str, rows: Sequence[Member]) -> tuple[int, int]:
    """Add roster rows to cohort ``name`` and to nbgrader's gradebook; (added, updated)."""
    data = _read(paths, name)
    existing = {m["id"]: m for m in data["members"]}
    added = sum(1 for m in rows if m.id not in existing)
    gradebook_add(paths, rows)
    for m in rows:
        existing[m.id] = asdict(m)
    data["members"] = sorted(existing.values(), key=lambda m: m["id"])
    _write(_file(paths, name), data)
    return added, len(rows) - added


def gradebook_add(paths: ServicePaths, rows: Sequence[Member]) -> None:
    """The learners in nbgrader's gradebook (names, email), added or updated."""
    from nbgrader.api import Gradebook

    from ladderlab.grading.nbgrader_ext import gradebook_url
    from ladderlab.service.workspace import nbgrader_api

    nbgrader_api(paths)  # puts nbgrader's alembic on PATH for a new gradebook
    with Gradebook(gradebook_url(paths.course_root)) as gb:
        for m in rows:
            first, _, last = m.name.partition(" ")
            gb.update_or_create_student(m.id, first_name=first, last_name=last, email=m.email or None)


# --- where each learner stands -------------------------------------------------------------------------


def handed_in(paths: ServicePaths, course_id: str) -> dict[tuple[str, str], list[str]]:
    """(learner, lab) -> the exchange's complete submission versions, oldest first."""
    from ladderlab.service.queue import _complete

    inbound = paths.exchange / course_id / "inbound"
    out: dict[tuple[str, str], list[str]] = {}
    for entry in sorted(inbound.iterdir()) if inbound.is_dir() else []:
        try:
            learner, lab, _ = parse_key(entry.name)
        except ValueError:
            continue
        if _complete(entry):
            out.setdefault((learner, lab), []).append(entry.name)
    for keys in out.values():
        keys.sort(key=lambda k: parse_key(k)[2])
    return out


def collect(paths: ServicePaths, course_id: str, learners: Sequence[str], lab: str) -> list[tuple[str, str, str]]:
    """Take each learner's newest hand-in of ``lab`` into the ledger (queued for grading); older versions not yet
    graded are superseded. (learner, key, what) for every learner: new, already, none."""
    ledger = Ledger(paths.ledger_db)
    found = handed_in(paths, course_id)
    out = []
    for learner in learners:
        keys = found.get((learner, lab), [])
        if not keys:
            out.append((learner, "", "none"))
            continue
        newest = keys[-1]
        for older in keys[:-1]:
            ledger.add(older)
            ledger.supersede(older, newest)
        out.append((learner, newest, "new" if ledger.add(newest) else "already"))
    return out


@dataclass
class State:
    learner: str
    lab: str
    state: str  # not submitted | submitted | queued | grading | graded | awaiting rubric | error
    score: float | None = None
    max_score: float | None = None
    passed: bool | None = None
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def states(paths: ServicePaths, course_id: str, learners: Sequence[str], labs: Sequence[str]) -> list[State]:
    found = handed_in(paths, course_id)
    ledger = Ledger(paths.ledger_db) if paths.ledger_db.exists() else None
    latest = ledger.latest_of(list(learners), list(labs)) if ledger else {}
    out = []
    for learner in learners:
        for lab in labs:
            sub: Submission | None = latest.get((learner, lab))
            versions = found.get((learner, lab)) or []
            newest = versions[-1] if versions else None
            if sub is None or (newest is not None and sub.key != newest and sub.status != GRADING):
                out.append(State(learner, lab, SUBMITTED if newest else NOT_SUBMITTED))
            elif sub.status == GRADED:
                out.append(State(learner, lab, GRADED, sub.score, sub.max_score, sub.passed))
            elif sub.status == ERROR:
                out.append(State(learner, lab, ERROR, note=sub.error))
            elif sub.status in (QUEUED, GRADING):
                out.append(State(learner, lab, sub.status, note=sub.stage))
            elif sub.status == SUPERSEDED:
                out.append(State(learner, lab, SUBMITTED))
    return out


def with_manual_grades(rows: Sequence[State], entries: Sequence[Any], manual: Collection[str],
                       command: str = "ladderlab cohort record-rubric") -> list[State]:
    """The rows of labs with a manually graded part, read against the evidence record (``entries``, the
    cohort's): a graded hand-in whose automatic part passed is ``awaiting rubric`` (``passed`` unknown) until
    the trainer's grade is recorded; after that ``passed`` is the ladder's verdict on both parts
    (:func:`ladderlab.ladder.rules.lab_statuses`, the one rules module) and the note names the grade.
    Other rows are returned as they are."""
    from dataclasses import replace

    from ladderlab.ladder.rules import lab_statuses

    if not manual:
        return list(rows)
    by_learner: dict[str, list[Any]] = {}
    for e in entries:
        by_learner.setdefault(e.evidence.learner, []).append(e)
    statuses = {learner: lab_statuses(mine, manual=manual) for learner, mine in by_learner.items()}
    out = []
    for row in rows:
        status = statuses.get(row.learner, {}).get(row.lab)
        if row.lab not in manual or row.state != GRADED or not row.passed or status is None:
            out.append(row)
        elif status.awaiting_rubric:
            out.append(replace(row, state=AWAITING_RUBRIC, passed=None,
                               note=f"automatic part passed; grade the write-up in the formgrader, then "
                                    f"{command} {row.lab}"))
        else:
            out.append(replace(row, passed=status.passed, note=status.basis))
    return out


def pass_rates(rows: Sequence[State]) -> dict[str, dict[str, Any]]:
    """Per lab: learners, graded, awaiting their manual grade, passed, and the pass rate over the cohort (None
    when nobody is graded)."""
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        lab = out.setdefault(row.lab, {"learners": 0, "graded": 0, "awaiting_rubric": 0, "passed": 0,
                                       "pass_rate": None})
        lab["learners"] += 1
        if row.state == GRADED:
            lab["graded"] += 1
            lab["passed"] += int(bool(row.passed))
        elif row.state == AWAITING_RUBRIC:
            lab["awaiting_rubric"] += 1
    for lab in out.values():
        lab["pass_rate"] = round(lab["passed"] / lab["learners"], 3) if lab["learners"] else None
    return out


class StatusReader:
    """A cohort's states and pass rates, read afresh at each call: ``ladderlab cohort status`` (``--watch`` every
    2 s) and the hub's cohort view (every second) read the same way. The evidence record is opened once, and only
    when one of ``labs`` has a manually graded part."""

    def __init__(self, settings: Any, paths: ServicePaths, course: Any, name: str, labs: Sequence[str],
                 command: str | None = None) -> None:
        from ladderlab.course.labs import lab_rubrics
        from ladderlab.ladder.store import Store

        self.paths, self.course_id, self.labs = paths, course.id, list(labs)
        self.learners = [m.id for m in members(paths, name)]
        self.manual = set(lab_rubrics(settings, course)) & set(labs)
        self.store = Store.open(settings) if self.manual else None
        self.command = command or f"ladderlab cohort record-rubric {name}"

    def __call__(self) -> tuple[list[State], dict[str, dict[str, Any]]]:
        rows = states(self.paths, self.course_id, self.learners, self.labs)
        if self.store is not None:  # graded hand-ins of a lab with a manual part: awaiting the trainer's grade
            rows = with_manual_grades(rows, self.store.entries(learners=self.learners), self.manual, self.command)
        return rows, pass_rates(rows)


# --- grading a cohort -----------------------------------------------------------------------------------


@dataclass
class Tally:
    total: int
    graded: int = 0
    passed: int = 0
    errors: int = 0
    started: float = 0.0

    @property
    def done(self) -> int:
        return self.graded + self.errors

    @property
    def remaining(self) -> int:
        return self.total - self.done

    def eta(self, now: float) -> float | None:
        """Seconds left at the pace so far (None before the first submission is done)."""
        if not self.done:
            return None
        return (now - self.started) / self.done * self.remaining


def grade(settings: Any, paths: ServicePaths, name: str, lab_id: str, *, workers: int,
          say: Any, progress: Any = None, regrade: bool = False, timeout: float = 6 * 3600) -> list[Submission]:
    """Collect the cohort's newest hand-ins of ``lab_id`` and grade them on the queue with ``workers`` at once.

    Resumable: what is graded stays graded (``regrade`` puts it back), what a killed run left half-done is
    picked up again. Feedback is not released here (``ladderlab cohort feedback``).
    """
    from ladderlab.service.handin import ensure_released
    from ladderlab.service.queue import GradingService, ServiceLock

    course = ensure_released(settings, paths, say, only=[lab_id])
    learners = [m.id for m in members(paths, name)]
    if not learners:
        raise UsageError(f"cohort {name!r} has no learners (add a roster: ladderlab cohort add {name} --roster F)")
    keys = [key for _, key, _ in collect(paths, course.id, learners, lab_id) if key]
    ledger = Ledger(paths.ledger_db)
    if regrade:
        ledger.regrade(keys)
    lock = ServiceLock(paths.lock)
    if not lock.acquire():
        raise UsageError(f"a grading service already runs for {paths.settings.cache_dir} (`ladderlab lab` or "
                         f"`ladderlab service run`): stop it, then grade the cohort")
    tally = Tally(total=len(keys), started=time.monotonic())
    service = GradingService(settings, paths, workers=workers, say=say, scan_interval=None,
                             release_feedback=False)
    try:
        service.start()  # recovers: every unfinished version in the ledger is queued again, ours included
        deadline = time.monotonic() + timeout
        while True:
            subs = ledger.many(keys).values()
            tally.graded = sum(1 for s in subs if s.status == GRADED)
            tally.passed = sum(1 for s in subs if s.status == GRADED and s.passed)
            tally.errors = sum(1 for s in subs if s.status == ERROR)
            if progress is not None:
                progress(tally)
            if tally.remaining == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        service.stop(graceful=False)
        lock.release()
    found = ledger.many(keys)
    return [found[k] for k in keys if k in found]


def release_feedback(settings: Any, paths: ServicePaths, name: str, lab_id: str) -> list[str]:
    """nbgrader feedback (hidden checks redacted) released for every cohort learner whose newest version is graded."""
    from ladderlab.service.queue import GradingService

    ledger = Ledger(paths.ledger_db)
    service = GradingService(settings, paths, scan_interval=None)
    done = []
    for learner in (m.id for m in members(paths, name)):
        sub = ledger.latest(learner, lab_id)
        if sub is not None and sub.status == GRADED:
            with service.writer:
                service.feedback(lab_id, learner)
            done.append(learner)
    return done


# --- manual grades ---------------------------------------------------------------------------------------


def record_rubric(settings: Any, paths: ServicePaths, name: str, lab_id: str, grader: str) -> list[Any]:
    """Record the manual grades of ``lab_id``'s rubric cell that the cohort's learners were given in nbgrader's
    formgrader, as ``rubric`` evidence entries (:func:`ladderlab.ladder.recording.record_rubric_grades`: all or
    nothing, once per submission and rubric version, tied to the submission the formgrader showed)."""
    from ladderlab.course import load_course
    from ladderlab.course.labs import chosen_labs, load_lab
    from ladderlab.grading.checks import load_graders
    from ladderlab.ladder.recording import record_rubric_grades
    from ladderlab.ladder.store import Store

    course = load_course(settings.course_file, "course.yaml")
    chosen_labs(course, [lab_id])
    learners = [m.id for m in members(paths, name)]
    if not learners:
        raise UsageError(f"cohort {name!r} has no learners (add a roster: ladderlab cohort add {name} --roster F)")
    lab = load_lab(settings, course, lab_id, registry=load_graders(settings.root))
    return record_rubric_grades(settings, course, lab, paths.course_root, Store.open(settings), learners, grader)
