"""Writing evidence: from a grading (automatically, under nbgrader) and from an nbgrader gradebook."""

from __future__ import annotations

import datetime
import hashlib
from pathlib import Path
from typing import Any

from ladderlab import __version__
from ladderlab.config import Settings
from ladderlab.ladder.evidence import CheckResult, Evidence
from ladderlab.ladder.store import Store


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def evidence_from_report(course_id: str, report: Any) -> Evidence:
    """The evidence of one grading (a :class:`~ladderlab.grading.pipeline.GradeReport`)."""
    return Evidence(
        course=course_id, learner=report.student, lab=report.lab,
        checks=tuple(CheckResult(c.id, c.points, c.max_points, c.passed) for c in report.checks),
        score=report.score, max_score=report.max_score, passed=report.passed, threshold=report.threshold,
        seed=report.seed, submission_hash=report.submission_hash, image_digests=dict(report.image_digests),
        check_suite_hash=report.check_suite_hash, grader_version=__version__, recorded_at=now(), source="grading")


def record(settings: Settings, course_id: str, report: Any, url: str | None = None) -> int:
    """Append the evidence of one grading; return its sequence number."""
    return Store.open(settings, url).append(evidence_from_report(course_id, report)).seq


def rebuild_from_gradebook(settings: Settings, course: Any, course_root: Path, store: Store,
                           db_url: str | None = None) -> int:
    """Append evidence for every graded lab submission in an nbgrader gradebook that the store does not
    hold yet (same learner, lab and submission). Returns how many entries were added."""
    from nbgrader.api import Gradebook, MissingEntry

    from ladderlab.seeds import derive_seed

    known = {(e.evidence.learner, e.evidence.lab, e.evidence.submission_hash) for e in store.entries()}
    labs = {lab.id: lab for lab in course.labs}
    added = 0
    with Gradebook(db_url or f"sqlite:///{course_root / 'gradebook.db'}") as gb:
        for assignment in gb.assignments:
            lab = labs.get(assignment.name)
            if lab is None:
                continue
            for student in gb.students:
                try:
                    submission = gb.find_submission(assignment.name, student.id)
                except MissingEntry:
                    continue
                notebook = course_root / "submitted" / student.id / lab.id / f"{lab.id}.ipynb"
                digest = hashlib.sha256(notebook.read_bytes()).hexdigest() if notebook.is_file() \
                    else f"gradebook:{submission.id}"
                if (student.id, lab.id, digest) in known:
                    continue
                checks = tuple(
                    CheckResult(g.name.removeprefix("check-"), float(g.score), float(g.max_score),
                                float(g.score) >= float(g.max_score))
                    for nb in submission.notebooks for g in nb.grades if g.name.startswith("check-"))
                score, max_score = float(submission.score), float(submission.max_score)
                threshold = course.threshold(lab)
                store.append(Evidence(
                    course=course.id, learner=student.id, lab=lab.id, checks=checks, score=score,
                    max_score=max_score, passed=max_score > 0 and score >= threshold * max_score - 1e-9,
                    threshold=threshold, seed=derive_seed(course.id, student.id, lab.id), submission_hash=digest,
                    image_digests={}, check_suite_hash="", grader_version=__version__,
                    recorded_at=str(submission.timestamp or now()), source="gradebook"))
                added += 1
    return added
