"""Lab self-test: a lab's checks must discriminate.

For every lab, each on a fresh environment:

* the source notebook (the instructor's solutions) scores full marks;
* the released notebook, untouched, scores 0 on every check;
* every decoy (``labs/<id>/decoys/*.yaml``: the source notebook with some
  solution cells replaced) scores below the pass threshold and fails
  exactly the checks it declares in ``must_fail``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import docker
from nbformat import NotebookNode

from ladderlab.config import Settings
from ladderlab.course.labs import Decoy, LabDef, nbg
from ladderlab.grading.pipeline import GradeReport, grade

Say = Callable[[str], None]


def released(lab: LabDef) -> NotebookNode:
    """The student version, made with nbgrader's own preprocessors (solutions and hidden tests removed)."""
    from nbgrader.preprocessors import ClearHiddenTests, ClearSolutions

    nb: NotebookNode = copy.deepcopy(lab.source)
    resources: dict[str, Any] = {}
    nb, resources = ClearSolutions().preprocess(nb, resources)
    nb, resources = ClearHiddenTests().preprocess(nb, resources)
    return nb


def with_decoy(lab: LabDef, decoy: Decoy) -> NotebookNode:
    nb = copy.deepcopy(lab.source)
    for cell in nb.cells:
        gid = nbg(cell).get("grade_id")
        if gid in decoy.spec.cells:
            cell.source = decoy.spec.cells[gid]
    return nb


@dataclass
class Run:
    kind: str  # solution | untouched | decoy
    name: str
    report: GradeReport | None = None
    error: str = ""
    must_fail: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[str]:
        return sorted(self.report.failed()) if self.report else []

    def verdict(self, lab: LabDef) -> bool:
        r = self.report
        if r is None:
            return False
        if self.kind == "solution":
            return r.score == r.max_score and not r.failed()
        if self.kind == "untouched":
            return r.score == 0 and all(c.points == 0 for c in r.checks)
        below = r.score < lab.threshold * r.max_score
        return below and set(r.failed()) == set(self.must_fail)


@dataclass
class LabResult:
    lab: LabDef
    runs: list[Run]

    @property
    def passed(self) -> bool:
        return all(run.verdict(self.lab) for run in self.runs)

    def to_json(self) -> dict[str, Any]:
        def summary(run: Run) -> dict[str, Any]:
            r = run.report
            return {"ok": run.verdict(self.lab), "score": r.score if r else None,
                    "max_score": self.lab.max_score, "failed_checks": run.failed,
                    **({"error": run.error} if run.error else {})}

        runs = {r.kind: r for r in self.runs if r.kind != "decoy"}
        return {
            "id": self.lab.id,
            "passed": self.passed,
            "solution": summary(runs["solution"]),
            "untouched": summary(runs["untouched"]),
            "decoys": [{"name": r.name, "rejected": r.verdict(self.lab), "failed_checks": r.failed,
                        "must_fail": sorted(r.must_fail), "score": r.report.score if r.report else None,
                        **({"error": r.error} if r.error else {})}
                       for r in self.runs if r.kind == "decoy"],
        }


def selftest(settings: Settings, client: docker.DockerClient, labs: list[LabDef], *, jobs: int = 3,
             student: str = "selftest", say: Say = print) -> list[LabResult]:
    """Grade every lab's solution, untouched release and decoys (``jobs`` at a time)."""
    work: list[tuple[LabDef, Run, NotebookNode]] = []
    for lab in labs:
        work.append((lab, Run("solution", "solution"), copy.deepcopy(lab.source)))
        work.append((lab, Run("untouched", "untouched"), released(lab)))
        for d in lab.decoys:
            work.append((lab, Run("decoy", d.name, must_fail=list(d.spec.must_fail)), with_decoy(lab, d)))

    def one(item: tuple[LabDef, Run, NotebookNode]) -> Run:
        lab, run, nb = item
        try:
            run.report, _ = grade(settings, client, lab, nb, student)
        except Exception as exc:
            run.error = f"{type(exc).__name__}: {exc}"
        mark = "ok" if run.verdict(lab) else "FAILED"
        score = f"{run.report.score:g}/{run.report.max_score:g}" if run.report else run.error
        say(f"{lab.id}: {run.kind} {run.name if run.kind == 'decoy' else ''} {score} "
            f"failed={','.join(run.failed) or '-'} -> {mark}")
        return run

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        done = list(pool.map(one, work))
    out = []
    for lab in labs:
        out.append(LabResult(lab, [run for (lb, run, _), _r in zip(work, done, strict=True) if lb is lab]))
    return out
