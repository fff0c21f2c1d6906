"""The numbers behind every view, computed once from the record (the views only format them)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from ladderlab.course import Course
from ladderlab.ladder.evidence import LAB, Entry, Evidence
from ladderlab.ladder.rules import Progress, cell_labs, counted, ladder_for


def outcome_label(ev: Evidence) -> str:
    """``passed, 2 hints`` / ``passed, no hints`` / ``not passed, 1 hint``; the hints left out for an entry
    recorded before hints were."""
    verdict = "passed" if ev.passed else "not passed"
    total = ev.hints_total
    if total is None:
        return verdict
    return f"{verdict}, {'no' if total == 0 else total} hint{'' if total == 1 else 's'}"


@dataclass
class LabStats:
    lab: str
    title: str
    learners: int = 0
    passed: int = 0
    attempts: int = 0

    @property
    def pass_rate(self) -> float:
        return self.passed / self.learners if self.learners else 0.0


@dataclass
class ReportData:
    course: Course
    ladder: dict[str, Progress]
    cells: list[tuple[str, int]]  # cells that have labs, in ladder order
    labs: dict[str, LabStats]
    failed_checks: list[tuple[str, str, int]]  # (lab, check, learners who failed it in their latest attempt)
    entries: int = 0
    generated: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def build(course: Course, entries: list[Entry], learners: list[str] | None = None, generated: str = "",
          *, manual: Collection[str]) -> ReportData:
    """The report's numbers; ``manual``: the labs with a manually graded part (the ladder rules need them).
    Attempts and failed checks count automatic gradings (``lab`` entries) only."""
    ladder = ladder_for(course, entries, learners, manual=manual)
    mapping = cell_labs(course)
    cells = [cell for cell, labs in mapping.items() if labs]
    labs = {lab.id: LabStats(lab.id, lab.title) for lab in course.labs}
    failed: Counter[tuple[str, str]] = Counter()
    latest: dict[tuple[str, str], Entry] = {}
    for e in counted(entries):
        if e.evidence.kind == LAB:
            latest[(e.evidence.learner, e.evidence.lab)] = e
    attempts: defaultdict[str, int] = defaultdict(int)
    for e in entries:
        if e.evidence.kind == LAB:
            attempts[e.evidence.lab] += 1
    for progress in ladder.values():
        for lab_id, status in progress.labs.items():
            stats = labs.get(lab_id)
            if stats is None:
                continue
            stats.learners += 1
            stats.passed += status.passed
            last = latest.get((progress.learner, lab_id))
            if last is not None and not status.passed:
                for check in last.evidence.checks:
                    if not check.passed:
                        failed[(lab_id, check.id)] += 1
    for lab_id, n in attempts.items():
        if lab_id in labs:
            labs[lab_id].attempts = n
    top = [(lab, check, n) for (lab, check), n in failed.most_common(15)]
    return ReportData(course, ladder, cells, labs, top, len(entries), generated)
