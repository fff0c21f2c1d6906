"""Cohort grading throughput: the same 30 hand-ins graded with 1 worker and with the default workers, in one run.

Each hand-in is the lab's solution from its own learner, through nbgrader's exchange; ``cohort grade``'s
engine (:func:`ladderlab.service.cohorts.grade`) grades the collected versions on the queue, the gradebook
and the evidence written by the one writer. Each measurement starts from an empty cache (queue, ledger,
gradebook, evidence), so both runs do the same work.

Prints both wall times and the throughput ratio (issue 12's target on a 2-core machine: >= 2.0x).

    python benchmarks/cohort.py [--submissions 30] [--lab sec-1-iptables-hardening] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from ladderlab.config import Settings
from ladderlab.course import load_course
from ladderlab.course.labs import load_lab
from ladderlab.grading.checks import load_graders
from ladderlab.service import cohorts, handin
from ladderlab.service.paths import ServicePaths
from ladderlab.service.queue import default_workers
from ladderlab.testing import private_cache


def busy_jiffies() -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine so far, in clock ticks (/proc/stat)."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def measure(base: Settings, lab_id: str, notebook: Path, n: int, workers: int, tmp: Path) -> tuple[float, float]:
    """Wall seconds to grade ``n`` hand-ins with ``workers``, and the machine's mean busy share meanwhile."""
    settings = private_cache(base, tmp / f"cache-{workers}")
    paths = ServicePaths.of(settings, tmp / f"workspace-{workers}")
    course = handin.ensure_released(settings, paths, only=[lab_id])
    cohorts.create(paths, "bench")
    roster = tmp / f"roster-{workers}.csv"
    roster.write_text("id,name,email,team\n" + "".join(f"bench-{i:03d},Bench {i},,\n" for i in range(n)))
    cohorts.add(paths, "bench", cohorts.read_roster(roster))
    for i in range(n):
        handin.hand_in(paths, course.id, lab_id, notebook, f"bench-{i:03d}")
    time.sleep(0.5)  # the exchange's hand-ins count as complete after a quiet moment
    started = time.perf_counter()
    busy0, total0 = busy_jiffies()

    def progress(t: cohorts.Tally) -> None:
        print(f"\r  {workers} worker(s): {t.done}/{t.total} done, {t.errors} errors", end="", file=sys.stderr)

    subs = cohorts.grade(settings, paths, "bench", lab_id, workers=workers, say=lambda _m: None, progress=progress)
    took = time.perf_counter() - started
    busy1, total1 = busy_jiffies()
    print(file=sys.stderr)
    bad = [s.key for s in subs if s.status != "graded"]
    if len(subs) != n or bad:
        sys.exit(f"{workers} worker(s): {len(subs)} graded of {n}; not graded: {bad}")
    return took, (busy1 - busy0) / max(1, total1 - total0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--submissions", type=int, default=30)
    p.add_argument("--lab", default="sec-1-iptables-hardening")
    p.add_argument("--workers", type=int, help="the parallel run's workers (default: what `cohort grade` picks)")
    args = p.parse_args()
    base = Settings.from_env()
    lab = load_lab(base, load_course(base.course_file), args.lab, registry=load_graders(base.root))
    workers, why = default_workers()
    workers = args.workers or workers
    print(f"default: {why}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="ll-bench-cohort-") as tmp:
        one, one_busy = measure(base, lab.id, lab.notebook_path, args.submissions, 1, Path(tmp))
        many, many_busy = measure(base, lab.id, lab.notebook_path, args.submissions, workers, Path(tmp))
    ratio = one / many
    cores = os.cpu_count() or 1
    print(f"lab {lab.id}, {args.submissions} submissions, {cores} cores")
    print(f"  1 worker:   {one:.1f} s ({args.submissions / one * 60:.1f} submissions/min), "
          f"machine busy {one_busy:.0%}")
    print(f"  {workers} workers: {many:.1f} s ({args.submissions / many * 60:.1f} submissions/min), "
          f"machine busy {many_busy:.0%}")
    print(f"  throughput ratio: {ratio:.2f}x (target >= 2.0x); the most the CPU allows at 1 worker's cost per "
          f"grading: {1 / max(one_busy, 1e-9):.2f}x")
    print(json.dumps({"lab": lab.id, "submissions": args.submissions, "one_worker_s": round(one, 1),
                      "workers": workers, "parallel_s": round(many, 1), "ratio": round(ratio, 2),
                      "one_worker_busy": round(one_busy, 3), "parallel_busy": round(many_busy, 3)}))


if __name__ == "__main__":
    main()
