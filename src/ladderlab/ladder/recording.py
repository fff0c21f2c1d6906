"""Writing evidence: from a grading (automatically, under nbgrader) and from an nbgrader gradebook."""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ladderlab import __version__
from ladderlab.config import Settings
from ladderlab.ladder.evidence import CheckResult, Evidence
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
    which a formgrader user can set) never becomes evidence. The hints recorded are those the learner's
    hint log holds when the rebuild runs.
    """
    import nbformat
    from nbgrader.api import Gradebook, MissingEntry

    from ladderlab.course.labs import load_lab
    from ladderlab.course.seeds import course_secret, derive_seed
    from ladderlab.grading.checks import load_graders
    from ladderlab.grading.pipeline import submission_hash

    known = {(e.evidence.learner, e.evidence.lab, e.evidence.submission_hash) for e in store.entries()}
    labs = {lab.id: lab for lab in course.labs if lab.status == "published"}
    registry = load_graders(settings.root)
    defs: dict[str, Any] = {}
    key = course_secret(settings)
    added = 0
    with Gradebook(db_url or f"sqlite:///{course_root / 'gradebook.db'}") as gb:
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
