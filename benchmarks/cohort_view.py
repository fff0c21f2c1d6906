"""The trainers' cohort view (hub mode): one snapshot of a synthetic cohort, against ``cohort status`` in one run.

A cohort of --learners learners over the course's published labs, in a private cache: each learner has graded
hand-ins of about half the labs (5 checks each, some failed) in the ledger, and practice records of a third.
Measures, medians of --rounds:

- ``view``: ``CohortView.snapshot`` (what the service sends to the trainers' page, at most once a second):
  states, pass rates, practice progress, most failed checks, and the JSON text the page gets;
- baseline: ``cohorts.StatusReader`` alone (what ``ladderlab cohort status --json`` reads), in the same run.

No Docker: the environments up are given as a mapping.

    python benchmarks/cohort_view.py [--learners 300] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--learners", type=int, default=300)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="ll-cohortview-") as tmp:
        os.environ["LADDERLAB_CACHE_DIR"] = str(Path(tmp) / "cache")  # before anything reads the settings
        from ladderlab.config import Settings
        from ladderlab.course import load_course
        from ladderlab.hub.cohortview import CohortView, record_practice
        from ladderlab.service import cohorts
        from ladderlab.service.handin import ensure_released
        from ladderlab.service.ledger import GRADED, Ledger
        from ladderlab.service.paths import ServicePaths

        settings = Settings.from_env()
        paths = ServicePaths.of(settings)
        course = load_course(settings.course_file, "course.yaml")
        labs = [lab.id for lab in course.labs if lab.status == "published"]
        learners = [f"learner{n:04d}" for n in range(args.learners)]
        started = time.perf_counter()
        ensure_released(settings, paths, lambda line: None, skip_broken=True)  # nbgrader's course root, as cohort add
        cohorts.create(paths, "bench")
        cohorts.add(paths, "bench", [cohorts.Member(x, x, "", "") for x in learners])
        rng = random.Random(7)
        ledger = Ledger(paths.ledger_db)
        for learner in learners:
            for lab in labs:
                if rng.random() < 0.5:
                    key = f"{learner}+{lab}+2026-11-24 10:00:00.000000 UTC"
                    ledger.add(key)
                    checks = [{"id": f"check-{k}", "title": f"Check {k}", "status": "passed" if rng.random() < 0.7
                               else "failed", "points": 2.0, "max_points": 2.0, "hidden": False, "feedback": ""}
                              for k in range(5)]
                    score = sum(c["points"] for c in checks if c["status"] == "passed")
                    ledger.finish(key, GRADED, score=score, max_score=10.0, passed=score >= 8, checks=checks)
                if rng.random() < 0.33:
                    record_practice(settings, learner, lab, [(rng.random() < 0.5, f"check-{k}") for k in range(3)])
        prepared = time.perf_counter() - started
        envs_up = {learner: [labs[0]] for learner in learners[::4]}
        view = CohortView(settings, "bench")
        status = cohorts.StatusReader(settings, paths, course, "bench", labs)
        views, bases, sizes = [], [], []
        for _ in range(args.rounds):
            started = time.perf_counter()
            text = json.dumps(view.snapshot(envs_up), sort_keys=True)
            views.append(time.perf_counter() - started)
            sizes.append(len(text))
            started = time.perf_counter()
            status()
            bases.append(time.perf_counter() - started)
    v, b = statistics.median(views), statistics.median(bases)
    print(f"synthetic cohort: {args.learners} learners x {len(labs)} labs (prepared in {prepared:.1f} s); "
          f"{args.rounds} rounds, medians")
    print(f"  cohort view snapshot (states, practice, most failed, JSON {sizes[-1] / 1024:.0f} KiB): {v:.3f} s")
    print(f"  baseline: cohort status's read of the same cohort:                 {b:.3f} s  (view/baseline "
          f"{v / b:.2f}x)")
    print(json.dumps({"learners": args.learners, "labs": len(labs), "view_s": round(v, 4), "baseline_s": round(b, 4),
                      "json_bytes": sizes[-1]}))


if __name__ == "__main__":
    main()
