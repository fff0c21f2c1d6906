"""Building the report site for a synthetic record of 1,000 learners x 30 labs.

Measures, in one run (medians of --rounds):

- ``build``: ladder rules for every learner + the cohort page + 1,000 engineer pages + CSV/JSON, written;
- ``read``: loading the 30,000+ entries back from a SQLite store (with chain hashes);
- baseline: ``json.dumps`` of the same entries to one file (the least any export must do).

Target (issue 5): build <= 2 s.

    python benchmarks/report.py [--learners 1000] [--labs 30] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

from ladderlab.config import Settings
from ladderlab.course import Course, load_course
from ladderlab.ladder.evidence import CheckResult, Entry, Evidence
from ladderlab.ladder.store import Store
from ladderlab.reports.data import build
from ladderlab.reports.site import write_site


def synthetic_course(base: Course, n_labs: int) -> Course:
    data = base.model_dump()
    cells = [(t, lvl) for lvl in range(1, 7) for t in base.ladder.tracks if t.levels[lvl].strip()]
    labs = []
    for i in range(n_labs):
        track, level = cells[i % len(cells)]
        labs.append({"id": f"{track.code}-{level}-bench{i}", "title": f"Bench lab {i}", "environment": "firewall",
                     "status": "published",
                     "cells": [{"track": track.id, "level": level, "clauses": track.clause_ids(level)}],
                     "competencies": [],
                     "points": 10})
    data["labs"] = labs
    return Course.model_validate(data)


def synthetic_entries(course: Course, learners: int, seed: int = 7) -> list[Entry]:
    rng = random.Random(seed)
    entries, seq = [], 0
    for n in range(learners):
        skill = rng.random()
        for lab in course.labs:
            for attempt in range(1 + (rng.random() < 0.2)):
                passed = rng.random() < 0.35 + 0.6 * skill
                checks = tuple(CheckResult(f"check-{k}", 2.0 if passed or rng.random() < 0.6 else 0.0, 2.0,
                                           passed or rng.random() < 0.6) for k in range(5))
                seq += 1
                ev = Evidence(course=course.id, learner=f"learner{n:04d}", lab=lab.id, checks=checks,
                              score=sum(c.points for c in checks), max_score=10.0, passed=passed, threshold=1.0,
                              seed="s", submission_hash=f"{n}-{lab.id}-{attempt}", recorded_at="2026-11-01T10:00:00")
                entries.append(Entry(seq, ev, "", f"{seq:064x}"))
    return entries


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--learners", type=int, default=1000)
    p.add_argument("--labs", type=int, default=30)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    settings = Settings.from_env()
    course = synthetic_course(load_course(settings.course_file), args.labs)
    entries = synthetic_entries(course, args.learners)
    builds, reads, baselines = [], [], []
    with tempfile.TemporaryDirectory(prefix="ll-report-") as tmp:
        root = Path(tmp)
        store = Store.open(Settings(root=root, cache_dir=root / "cache"), f"sqlite:///{root / 'l.sqlite'}",
                           anchored=False)
        with store.engine.begin() as conn:  # bulk-load the synthetic chain (hashes are not the point here)
            from ladderlab.ladder.store import EVIDENCE

            conn.execute(EVIDENCE.insert(), [{"seq": e.seq, "learner": e.evidence.learner, "lab": e.evidence.lab,
                                              "recorded_at": e.evidence.recorded_at, "payload": e.evidence.payload(),
                                              "prev_hash": "", "hash": e.hash} for e in entries])
        for i in range(args.rounds):
            started = time.perf_counter()
            loaded = store.entries()
            reads.append(time.perf_counter() - started)
            started = time.perf_counter()
            data = build(course, loaded, None, "benchmark", manual=())  # the synthetic labs have no rubric
            pages = write_site(data, root / f"site{i}")
            builds.append(time.perf_counter() - started)
            started = time.perf_counter()
            (root / f"dump{i}.json").write_text(json.dumps([e.evidence.to_json() for e in loaded]))
            baselines.append(time.perf_counter() - started)
    b, r, base = (statistics.median(x) for x in (builds, reads, baselines))
    print(f"synthetic record: {args.learners} learners x {args.labs} labs = {len(entries)} entries; "
          f"{len(pages)} pages per build; {args.rounds} rounds, medians")
    print(f"  build report (rules + {len(pages)} pages + CSV/JSON): {b:.2f} s (target <= 2 s)")
    print(f"  read the record from SQLite:                        {r:.2f} s")
    print(f"  baseline json.dumps of the same entries:             {base:.2f} s  (build/baseline {b / base:.1f}x)")
    print(json.dumps({"entries": len(entries), "build_s": round(b, 3), "read_s": round(r, 3),
                      "baseline_s": round(base, 3)}))


if __name__ == "__main__":
    main()
