"""Writing evidence: from a grading (automatically, under nbgrader), from an nbgrader gradebook, and a lab's
manual grades (its rubric cell, graded by a trainer in nbgrader's formgrader: ``rubric`` entries)."""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ladderlab import __version__
from ladderlab.config import Settings
from ladderlab.ladder.evidence import CheckResult, Evidence, RubricGrade
from ladderlab.ladder.store import Store


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def hints_for(settings: Settings, learner: str, lab: str, checks: Iterable[str]) -> dict[str, int]:
    """The hints ``learner`` has seen so far for the checks of ``lab`` (``lab.hint``: its log in the state dir)."""
    from ladderlab.lab import hints_used

    wanted = set(checks)
    return {k: v for k, v in hints_used(settings.state_dir, learner, lab).items() if k in wanted}


def evidence_from_report(course_id: str, report: Any, hints: dict[str, int] | None = None) -> Evidence:
    """The evidence of one grading (a :class:`~ladderlab.grading.pipeline.GradeReport`), with the hints
    the learner used (check id -> count)."""
    return Evidence(
        course=course_id, learner=report.student, lab=report.lab,
        checks=tuple(CheckResult(c.id, c.points, c.max_points, c.passed) for c in report.checks),
        score=report.score, max_score=report.max_score, passed=report.passed, threshold=report.threshold,
        seed=report.seed, submission_hash=report.submission_hash, image_digests=dict(report.image_digests),
        check_suite_hash=report.check_suite_hash, grader_version=__version__, recorded_at=now(), source="grading",
        hints=dict(hints or {}))


def record(settings: Settings, course_id: str, report: Any, url: str | None = None) -> int:
    """Append the evidence of one grading, with the hints the learner used so far; return its sequence number."""
    hints = hints_for(settings, report.student, report.lab, [c.id for c in report.checks])
    return Store.open(settings, url).append(evidence_from_report(course_id, report, hints)).seq


def rebuild_from_gradebook(settings: Settings, course: Any, course_root: Path, store: Store,
                           db_url: str | None = None) -> int:
    """Append evidence for every autograded lab submission in an nbgrader gradebook that the store does not
    hold yet (same learner, lab and submission digest). Returns how many entries were added.

    The submission's identity is the digest the grading pipeline records
    (:func:`ladderlab.grading.pipeline.submission_hash` over the submitted notebook), so rebuilding
    into the store that autograde wrote to adds nothing. Evidence is built from the automatic scores
    of the check cells only (``auto_score``): a manual override in the gradebook (``manual_score``,
    which a formgrader user can set) never becomes evidence: a lab's rubric cell is recorded, as a ``rubric``
    entry with its grader, only by :func:`record_rubric_grades`. The hints recorded are those the learner's
    hint log holds when the rebuild runs.
    """
    import nbformat
    from nbgrader.api import Gradebook, MissingEntry

    from ladderlab.course.labs import load_lab
    from ladderlab.course.seeds import course_secret, derive_seed
    from ladderlab.grading.checks import load_graders
    from ladderlab.grading.nbgrader_ext import gradebook_url
    from ladderlab.grading.pipeline import submission_hash

    known = {(e.evidence.learner, e.evidence.lab, e.evidence.submission_hash) for e in store.entries()
             if e.evidence.kind == "lab"}
    labs = {lab.id: lab for lab in course.labs if lab.status == "published"}
    registry = load_graders(settings.root)
    defs: dict[str, Any] = {}
    key = course_secret(settings)
    added = 0
    with Gradebook(db_url or gradebook_url(course_root)) as gb:
        for assignment in gb.assignments:
            lab = labs.get(assignment.name)
            if lab is None:
                continue
            if lab.id not in defs:
                defs[lab.id] = load_lab(settings, course, lab.id, registry=registry)
            lab_def = defs[lab.id]
            for student in gb.students:
                try:
                    submission = gb.find_submission(assignment.name, student.id)
                except MissingEntry:
                    continue
                notebook = course_root / "submitted" / student.id / lab.id / f"{lab.id}.ipynb"
                if not notebook.is_file():
                    continue  # nothing to tie evidence to
                try:
                    digest = submission_hash(lab_def, nbformat.read(str(notebook), as_version=4))
                except Exception:  # noqa: S112 - an unreadable submission was never graded either
                    continue
                if (student.id, lab.id, digest) in known:
                    continue
                grades = {g.name: g for nb in submission.notebooks for g in nb.grades}
                wanted = {c.id: c.grade_id for c in lab_def.checks}
                if any(gid not in grades or grades[gid].auto_score is None for gid in wanted.values()):
                    continue  # not (completely) autograded
                checks = tuple(
                    CheckResult(cid, float(grades[gid].auto_score), float(grades[gid].max_score),
                                float(grades[gid].auto_score) >= float(grades[gid].max_score))
                    for cid, gid in wanted.items())
                score = round(sum(c.points for c in checks), 3)
                max_score = float(lab_def.max_score)
                threshold = course.threshold(lab)
                store.append(Evidence(
                    course=course.id, learner=student.id, lab=lab.id, checks=checks, score=score,
                    max_score=max_score, passed=max_score > 0 and score >= threshold * max_score - 1e-9,
                    threshold=threshold, seed=derive_seed(course.id, student.id, lab.id, secret=key),
                    submission_hash=digest, image_digests={}, check_suite_hash=lab_def.suite_hash(),
                    grader_version=__version__, recorded_at=str(submission.timestamp or now()), source="gradebook",
                    hints=hints_for(settings, student.id, lab.id, wanted)))
                known.add((student.id, lab.id, digest))
                added += 1
    return added


# --- manual grades: a lab's rubric cell, graded in nbgrader's formgrader ----------------------------------

#: A criterion's points in the grader's formgrader comment on the rubric cell: ``blameless: 3`` (or ``3/3``).
CRITERION_LINE = (r"^\s*[-*]?\s*(?P<id>[a-z0-9]+(?:-[a-z0-9]+)*)\s*:\s*(?P<points>\d+(?:\.\d+)?)\s*"
                  r"(?:/\s*\d+(?:\.\d+)?)?\s*$")
RECORDED, ALREADY, NO_SUBMISSION, NO_RESPONSE, REFUSED = "recorded", "already", "no submission", "no response", \
    "refused"


@dataclass
class RubricRow:
    """What ``record-rubric`` does for one learner: ``recorded`` (``evidence`` appended), ``already`` (this
    submission has a grade under this rubric version), ``no submission``, ``no response`` (the cell was
    left as released: nbgrader scored it 0 by itself, no grader judged it) or ``refused`` (``note`` says
    why: not graded yet, graded notebook not in the record...)."""

    learner: str
    state: str
    note: str = ""
    evidence: Evidence | None = None
    seq: int | None = None

    def to_json(self) -> dict[str, Any]:
        ev = self.evidence
        return {"learner": self.learner, "state": self.state, "note": self.note, "entry": self.seq,
                "points": ev.score if ev else None, "max_points": ev.max_score if ev else None,
                "passed": ev.passed if ev else None,
                "submission_hash": ev.submission_hash if ev else None}


def criteria_from_comment(comment: str | None, rubric: Any) -> tuple[dict[str, float] | None, str]:
    """The criteria points a grader wrote in the formgrader comment (one ``<criterion id>: <points>`` line
    each), or None when the comment names none; the second item is why they cannot be used ("" when fine)."""
    import re

    known = {c.id: c.points for c in rubric.criteria}
    found: dict[str, float] = {}
    for line in (comment or "").splitlines():
        m = re.match(CRITERION_LINE, line)
        if m and m["id"] in known:
            if m["id"] in found:
                return None, f"the comment gives criterion {m['id']!r} twice"
            found[m["id"]] = float(m["points"])
    if not found:
        return None, ""
    missing = [c for c in known if c not in found]
    if missing:
        return None, f"the comment gives points for some criteria but not {', '.join(missing)}"
    over = [f"{c} {p:g} > {known[c]:g}" for c, p in found.items() if p > known[c] + 1e-9]
    if over:
        return None, f"criteria points above their maximum: {', '.join(over)}"
    return {c: found[c] for c in known}, ""


def rubric_hash(rubric: Any) -> str:
    """sha256 over the rubric as lab.yaml states it (version, cell, pass mark, criteria): what judged a grade."""
    import hashlib

    from ladderlab.ladder.evidence import canonical

    return hashlib.sha256(canonical(rubric.model_dump(mode="json")).encode()).hexdigest()


def plan_rubric_grades(settings: Settings, course: Any, lab_def: Any, course_root: Path, store: Store,
                       learners: Iterable[str], grader: str, db_url: str | None = None) -> list[RubricRow]:
    """What recording the manual grades of ``lab_def``'s rubric cell from nbgrader's gradebook would do, learner
    by learner (nothing is written). A grade is taken only when a grader set it in the formgrader
    (``manual_score``) and nbgrader does not flag the cell for (re)grading; it is tied to the notebook the
    formgrader showed (``autograded/<learner>/<lab>/``), whose submission digest must have an automatic entry
    in the record (the same submission); and it is recorded once per submission and rubric version."""
    import nbformat
    from nbgrader.api import Gradebook, MissingEntry

    from ladderlab.grading.nbgrader_ext import gradebook_url
    from ladderlab.grading.pipeline import submission_hash
    from ladderlab.ladder.evidence import LAB, RUBRIC

    rubric = lab_def.rubric
    lab = lab_def.id
    entries = [e for e in store.entries() if e.evidence.lab == lab]
    automatic = {(e.evidence.learner, e.evidence.submission_hash): e for e in entries if e.evidence.kind == LAB}
    manual = {(e.evidence.learner, e.evidence.submission_hash, e.evidence.rubric.version): e for e in entries
              if e.evidence.kind == RUBRIC and e.evidence.rubric is not None}
    rows: list[RubricRow] = []
    with Gradebook(db_url or gradebook_url(course_root)) as gb:
        for learner in learners:
            try:
                gb.find_submission(lab, learner)
            except MissingEntry:
                rows.append(RubricRow(learner, NO_SUBMISSION, "nothing of this lab in the gradebook"))
                continue
            try:
                grade = gb.find_grade(rubric.cell, lab, lab, learner)
            except MissingEntry:
                rows.append(RubricRow(learner, REFUSED, f"the gradebook has no cell {rubric.cell} for this "
                                                        f"submission: the lab was released before it had one"))
                continue
            max_points = float(grade.max_score)
            if abs(max_points - rubric.max_points) > 1e-9:
                rows.append(RubricRow(learner, REFUSED, f"the gradebook's cell {rubric.cell} is worth {max_points:g}, "
                                                        f"the rubric {rubric.max_points:g}: release the lab again"))
                continue
            if grade.manual_score is None:
                if grade.auto_score is not None:
                    rows.append(RubricRow(learner, NO_RESPONSE, "the cell was left as released (nbgrader scored "
                                                                "it 0); no grader judged it: nothing to record"))
                else:
                    rows.append(RubricRow(learner, REFUSED, f"cell {rubric.cell} has not been graded in the "
                                                            f"formgrader yet"))
                continue
            if grade.needs_manual_grade:
                rows.append(RubricRow(learner, REFUSED, f"cell {rubric.cell} needs grading again: the submission "
                                                        f"was autograded after its manual grade (formgrader)"))
                continue
            notebook = course_root / "autograded" / learner / lab / f"{lab}.ipynb"
            try:
                digest = submission_hash(lab_def, nbformat.read(str(notebook), as_version=4))
            except Exception as exc:  # missing or unreadable: nothing to tie the grade to
                rows.append(RubricRow(learner, REFUSED, f"the graded notebook {notebook} cannot be read "
                                                        f"({type(exc).__name__})"))
                continue
            auto = automatic.get((learner, digest))
            if auto is None:
                rows.append(RubricRow(learner, REFUSED, f"the notebook graded in the formgrader (submission "
                                                        f"{digest[:12]}) has no automatic entry in the record: "
                                                        f"grade it first (`cohort grade`, `ladder rebuild`)"))
                continue
            points = float(grade.manual_score)  # nbgrader's extra credit is not part of the rubric: left out
            earlier = manual.get((learner, digest, rubric.version))
            if earlier is not None:
                same = abs(earlier.evidence.score - points) <= 1e-9
                rows.append(RubricRow(learner, ALREADY, f"entry {earlier.seq}" + (
                    "" if same else f" keeps {earlier.evidence.score:g}; the gradebook now says {points:g} (a grade "
                                    f"is recorded once per submission and rubric version)"), earlier.evidence,
                    earlier.seq))
                continue
            if points < 0 or points > max_points + 1e-9:
                rows.append(RubricRow(learner, REFUSED, f"manual score {points:g} is outside 0-{max_points:g}"))
                continue
            comment = gb.find_comment(rubric.cell, lab, lab, learner).manual_comment
            criteria, why = criteria_from_comment(comment, rubric)
            if why:
                rows.append(RubricRow(learner, REFUSED, f"formgrader comment: {why}"))
                continue
            if criteria is not None and abs(sum(criteria.values()) - points) > 1e-9:
                rows.append(RubricRow(learner, REFUSED, f"formgrader comment: the criteria add up to "
                                                        f"{sum(criteria.values()):g}, the score is {points:g}"))
                continue
            rows.append(RubricRow(learner, RECORDED, "", Evidence(
                course=course.id, learner=learner, lab=lab, checks=(), score=points, max_score=max_points,
                passed=points >= rubric.pass_points - 1e-9, threshold=round(rubric.pass_points / max_points, 6),
                seed=auto.evidence.seed, submission_hash=digest, image_digests={},
                check_suite_hash=rubric_hash(rubric), grader_version=__version__, recorded_at=now(),
                source="gradebook", kind=RUBRIC,
                rubric=RubricGrade(rubric.version, grader, rubric.cell, float(rubric.pass_points), criteria))))
    return rows


def record_rubric_grades(settings: Settings, course: Any, lab_def: Any, course_root: Path, store: Store,
                         learners: Iterable[str], grader: str, db_url: str | None = None) -> list[RubricRow]:
    """Record the manual grades :func:`plan_rubric_grades` finds, all or none: when any learner's grade is
    refused (not graded yet, regraded, not tied to a recorded submission), nothing is appended and
    :class:`~ladderlab.errors.UsageError` lists every learner refused. Each grade is one ``rubric`` entry,
    appended by the store like every entry (hash chain, signed head)."""
    from ladderlab.course.seeds import LEARNER
    from ladderlab.errors import UsageError
    from ladderlab.grading.nbgrader_ext import gradebook_url

    if lab_def.rubric is None:
        raise UsageError(f"lab {lab_def.id} has no manually graded part (no rubric: in its lab.yaml)")
    if not LEARNER.fullmatch(grader):
        raise UsageError(f"grader {grader!r}: use 1-64 letters, digits and . _ @ - (starting with a letter or digit)")
    if db_url is None and gradebook_url(course_root).startswith("sqlite:") \
            and not (course_root / "gradebook.db").is_file():
        raise UsageError(f"no nbgrader gradebook at {course_root / 'gradebook.db'}: nothing has been graded yet")
    rows = plan_rubric_grades(settings, course, lab_def, course_root, store, learners, grader, db_url)
    refused = [r for r in rows if r.state == REFUSED]
    if refused:
        raise UsageError(f"{lab_def.id}: nothing recorded; {len(refused)} manual grade(s) cannot be taken yet:\n"
                         + "\n".join(f"  {r.learner}: {r.note}" for r in refused))
    for row in rows:
        if row.state == RECORDED and row.evidence is not None:
            row.seq = store.append(row.evidence).seq
    return rows
