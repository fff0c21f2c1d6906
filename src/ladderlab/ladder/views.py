"""What the ladder commands show: a selection of the record (everyone, one cohort, one learner), the
documented ``ladder --json`` form, the table rows, the record's verification and a credential's check.

The command line only parses, calls these and prints; the report and the learner's own view read the
same selection.

>>> view = select(settings, cohort="2024-spring")                      # doctest: +SKIP
>>> ladder_json(view)["learners"][0]["levels"]                         # doctest: +SKIP
{'security': 1, ...}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ladderlab.config import Settings
from ladderlab.course import Course, load_course
from ladderlab.errors import UsageError
from ladderlab.ladder import xapi
from ladderlab.ladder.evidence import Entry
from ladderlab.ladder.rules import LabStatus, Progress, ladder_for
from ladderlab.ladder.store import Store, Verification


@dataclass
class Selection:
    """The part of the record a command works on."""

    course: Course
    members: list[str] | None  # None: every learner in the record
    entries: list[Entry]
    ladder: dict[str, Progress]
    #: the labs with a manually graded part (lab.yaml ``rubric:``): lab id -> rubric version
    manual: dict[str, str] = field(default_factory=dict)

    @property
    def tracks(self) -> list[str]:
        return [t.id for t in self.course.ladder.tracks]


def members(course: Course, learner: str | None = None, cohort: str | None = None,
            trainer_cohorts: Mapping[str, list[str]] | None = None) -> list[str] | None:
    """Who ``--learner``/``--cohort`` name: None for everyone; a learner outside the cohort gives nobody.
    A cohort is one of ``course.yaml``'s or one a trainer made with ``ladderlab cohort create``."""
    chosen: list[str] | None = None
    if cohort:
        known = {**(trainer_cohorts or {}), **course.cohorts}
        if cohort not in known:
            raise UsageError(f"no cohort {cohort!r} in course.yaml or `ladderlab cohort` "
                             f"(cohorts: {', '.join(sorted(known)) or 'none'})")
        chosen = list(known[cohort])
    if learner:
        chosen = [learner] if chosen is None or learner in chosen else []
    return chosen


def _trainer_cohorts(settings: Settings) -> dict[str, list[str]]:
    from ladderlab.service.cohorts import names
    from ladderlab.service.paths import ServicePaths

    return names(ServicePaths.of(settings))


def select(settings: Settings, learner: str | None = None, cohort: str | None = None,
           course: Course | None = None, store: Store | None = None) -> Selection:
    """The course, the evidence entries and the ladder of the learners chosen (the ladder rules told which
    labs have a manually graded part)."""
    from ladderlab.course.labs import lab_rubrics

    course = course or load_course(settings.course_file, "course.yaml")
    manual = {lab: rubric.version for lab, rubric in lab_rubrics(settings, course).items()}
    store = store or Store.open(settings)
    who = members(course, learner, cohort, _trainer_cohorts(settings) if cohort else None)
    entries = store.entries(learners=who) if who is not None else store.entries()
    return Selection(course, who, entries, ladder_for(course, entries, who, manual=manual), manual)


def ladder_json(view: Selection) -> dict[str, Any]:
    """The documented ``ladderlab ladder --json`` form (README)."""
    return {"course": view.course.id, "learners": [_progress_json(p, view.tracks) for p in view.ladder.values()]}


def _progress_json(p: Progress, tracks: Sequence[str]) -> dict[str, Any]:
    return {
        "learner": p.learner,
        "levels": p.levels,
        "tracks": {t: {"level": p.levels[t],
                       "labs": sorted({lab for (tr, lvl), c in p.cells.items()
                                       if tr == t and lvl <= p.levels[t] for lab in c.labs}),
                       # what each demonstrated cell up to the level shown claims (rules.py): its clauses
                       "clauses": {str(lvl): {"evidenced": c.evidenced, "not_evidenced": c.not_evidenced}
                                   for (tr, lvl), c in sorted(p.cells.items())
                                   if tr == t and lvl <= p.levels[t] and c.demonstrated},
                       # the kinds of evidence behind each of those cells: ["lab"] or ["lab", "rubric"]
                       "kinds": {str(lvl): c.kinds for (tr, lvl), c in sorted(p.cells.items())
                                 if tr == t and lvl <= p.levels[t] and c.demonstrated}}
                   for t in tracks},
        "labs": {lab: _lab_json(s) for lab, s in p.labs.items()},
    }


def _lab_json(s: LabStatus) -> dict[str, Any]:
    """One lab in ``ladder --json``: passed, the automatic entry, and the manual grade behind it if any."""
    out: dict[str, Any] = {"passed": s.passed, "score": s.best.evidence.score if s.best else None,
                           "entry": s.best.seq if s.best else None, "kinds": s.kinds, "basis": s.basis}
    if s.manual:
        grade = s.rubric.evidence if s.rubric is not None else None
        out["rubric"] = None if grade is None or grade.rubric is None else {
            "entry": s.rubric.seq if s.rubric else None, "points": grade.score, "max_points": grade.max_score,
            "passed": grade.passed, "grader": grade.rubric.grader, "version": grade.rubric.version,
            "criteria": grade.rubric.criteria}
        out["awaiting_rubric"] = s.awaiting_rubric
    return out


def ladder_rows(view: Selection) -> tuple[list[str], list[list[str]]]:
    """The ``ladderlab ladder`` table: a header (tracks by their short codes) and one row per learner
    (level per track, ``(in part)`` when that level's cell is demonstrated in part; labs passed, a lab passed
    with a manual grade as ``<lab> (+rubric: <grader>)``)."""

    def level(p: Progress, track: str) -> str:
        cell = p.cells.get((track, p.levels[track]))
        return f"{p.levels[track]} (in part)" if cell is not None and cell.partial else str(p.levels[track])

    def lab(lab_id: str, s: LabStatus) -> str:
        return f"{lab_id} (+rubric: {s.rubric.evidence.rubric.grader})" \
            if s.rubric is not None and s.rubric.evidence.rubric is not None else lab_id

    header = ["learner", *[view.course.track(t).code for t in view.tracks], "labs passed"]
    rows = [[p.learner, *[level(p, t) for t in view.tracks],
             ", ".join(lab(lab_id, s) for lab_id, s in sorted(p.labs.items()) if s.passed) or "-"]
            for p in view.ladder.values()]
    return header, rows


def verification_json(result: Verification) -> dict[str, Any]:
    """The documented ``ladder verify --json`` form."""
    return {"ok": result.ok, "entries": result.entries, "first_broken": result.first_broken, "reason": result.reason}


def verification_line(result: Verification) -> str:
    if result.ok:
        return f"ladder record ok: {result.entries} entries, chain and signed head verified"
    return f"ladder record BROKEN at entry {result.first_broken}: {result.reason}"


def export_xapi(view: Selection, path: Path) -> int:
    """Write the selection's entries as xAPI statements (JSON lines), atomically; return how many."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(xapi.lines(view.course, view.entries))
    tmp.replace(path)
    return len(view.entries)


def check_credential(settings: Settings, file: Path, issuer_key: Path | None = None) -> dict[str, Any]:
    """The credential in ``file`` if it verifies against the pinned issuer key (``issuer_key``, a PEM
    public key; default: this course's own key). UsageError for files that cannot be read,
    :class:`~ladderlab.ladder.badges.BadgeError` for a credential that does not verify."""
    from ladderlab.ladder.badges import verify
    from ladderlab.ladder.keys import load_or_create, load_public

    if issuer_key is not None:
        try:
            key = load_public(issuer_key.read_bytes())
        except (OSError, ValueError) as exc:
            raise UsageError(f"--issuer-key {issuer_key}: {exc}") from None
    else:
        key = load_or_create(settings).public_key()
    try:
        token = file.read_text().strip()
    except OSError as exc:
        raise UsageError(f"{file}: {exc.strerror or exc}") from None
    return verify(token, key)


def credential_line(file: Path, credential: dict[str, Any]) -> str:
    """What ``badges verify`` says about a valid credential."""
    return (f"{file}: {credential['name']} for {credential['credentialSubject']['id']} "
            f"(issued by {credential['issuer']['name']}, valid until {credential['validUntil']})")
