"""The trainers' live cohort view (docs/hub-design.md, 2.7): what the service knows of a cohort, as one snapshot.

Per learner: the labs whose practice environment is up now, and per lab the hand-in's state (the same states as
``ladderlab cohort status``: not submitted, submitted, queued, grading, graded with score and passed, awaiting
rubric, error) and the practice progress (how many of the lab's visible checks passed the last time the learner
ran them through the service). Per lab: the pass rate. Over the cohort: the checks that most learners' graded
hand-ins failed. The service sends a new snapshot to the trainer's page whenever it changed
(:mod:`ladderlab.hub.service`); only holders of the trainer scope get it.

The practice record (``state/practice/<learner>/<lab>.json``: check id -> passed) is written by the service when
a learner runs checks, never by the learner.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ladderlab.config import Settings

#: How many checks the "most failed" list shows.
MOST_FAILED = 8


def practice_path(settings: Settings, learner: str, lab_id: str) -> Path:
    return settings.state_dir / "practice" / learner / f"{lab_id}.json"


def read_practice(settings: Settings, learner: str, lab_id: str) -> dict[str, bool]:
    try:
        data = json.loads(practice_path(settings, learner, lab_id).read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): bool(v) for k, v in data.items()} if isinstance(data, dict) else {}


def record_practice(settings: Settings, learner: str, lab_id: str, results: Sequence[tuple[bool | None, str]]) -> None:
    """Keep the learner's latest result of each check they ran (a check not run now keeps its previous result;
    one that was not run at all, ``None``, changes nothing)."""
    path = practice_path(settings, learner, lab_id)
    known = read_practice(settings, learner, lab_id)
    known.update({check: bool(passed) for passed, check in results if passed is not None})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(known, sort_keys=True))
    tmp.replace(path)


class CohortView:
    """The snapshot of one cohort over the course's published labs; :meth:`snapshot` reads everything afresh."""

    def __init__(self, settings: Settings, cohort: str) -> None:
        from ladderlab.course import load_course
        from ladderlab.course.labs import load_lab
        from ladderlab.grading.checks import load_graders
        from ladderlab.service import cohorts
        from ladderlab.service.paths import ServicePaths

        self.settings, self.cohort = settings, cohort
        course = load_course(settings.course_file, "course.yaml")
        self.labs = [lab.id for lab in course.labs if lab.status == "published"]
        registry = load_graders(settings.root)
        self.visible = {lab_id: [c.id for c in load_lab(settings, course, lab_id, registry=registry).checks
                                 if not c.hidden] for lab_id in self.labs}
        self.titles = {lab.id: lab.title for lab in course.labs if lab.id in self.labs}
        self.paths = ServicePaths.of(settings)
        self.status = cohorts.StatusReader(settings, self.paths, course, cohort, self.labs,
                                           "ladderlab cohort record-rubric " + cohort)

    def snapshot(self, envs_up: Mapping[str, Sequence[str]]) -> dict[str, Any]:
        """``envs_up``: learner -> the labs whose practice environment runs now."""
        from ladderlab.service.ledger import GRADED, Ledger

        rows, rates = self.status()
        ledger = Ledger(self.paths.ledger_db, readonly=True) if self.paths.ledger_db.exists() else None
        latest = ledger.latest_of(self.status.learners, self.labs) if ledger else {}
        learners: dict[str, dict[str, Any]] = {
            learner: {"id": learner, "envs": sorted(envs_up.get(learner, ())), "labs": {}}
            for learner in self.status.learners}
        failed: Counter[tuple[str, str, str]] = Counter()
        for row in rows:
            practice = read_practice(self.settings, row.learner, row.lab)
            visible = self.visible.get(row.lab, [])
            learners[row.learner]["labs"][row.lab] = {
                "state": row.state, "score": row.score, "max_score": row.max_score, "passed": row.passed,
                "note": row.note,
                "practice": {"passed": sum(1 for c in visible if practice.get(c)), "of": len(visible),
                             "run": sum(1 for c in visible if c in practice)}}
            if row.state == GRADED:
                sub = latest.get((row.learner, row.lab))
                for check in (sub.checks if sub else []):
                    if check.get("status") == "failed":
                        failed[(row.lab, str(check.get("id")), str(check.get("title")))] += 1
        most = [{"lab": lab, "check": check, "title": title, "learners": n}
                for (lab, check, title), n in sorted(failed.items(), key=lambda kv: (-kv[1], kv[0]))[:MOST_FAILED]]
        return {"cohort": self.cohort, "labs": [{"id": lab, "title": self.titles[lab]} for lab in self.labs],
                "learners": list(learners.values()), "pass_rates": rates, "most_failed": most}
