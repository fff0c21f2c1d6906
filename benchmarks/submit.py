"""Hand-in to feedback, against plain ``nbgrader autograde`` of the same cells with no environment, in one run.

- ``submit``: the grading service as ``ladderlab lab`` runs it (in process, one worker, already started),
  a hand-in through nbgrader's exchange (nbgrader's own submit), timed until the ledger says graded, which
  is after the gradebook, the evidence and ``release_feedback`` (the learner's Fetch Feedback finds it).
  Each hand-in is a fresh environment, sandbox, trusted checks; teardown runs off the critical path.
- ``plain``: the baseline of ``benchmarks/grade_one.py``: ``nbgrader autograde`` with nbgrader's default
  configuration, the same cells, no environment.

Prints medians and the ratio (issue 11's target: no slower than the baseline, ratio <= 1.0).

    python benchmarks/submit.py [--rounds 5] [--lab sec-1-iptables-hardening]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from grade_one import STUDENT, nbgrader, plain_course_root

from ladderlab.config import Settings
from ladderlab.course import load_course
from ladderlab.course.labs import load_lab
from ladderlab.grading.checks import load_graders
from ladderlab.service import handin
from ladderlab.service.paths import ServicePaths
from ladderlab.service.queue import GradingService, wait_for
from ladderlab.testing import private_cache


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--lab", default="sec-1-iptables-hardening")
    args = p.parse_args()
    base = Settings.from_env()
    lab = load_lab(base, load_course(base.course_file), args.lab, registry=load_graders(base.root))
    with tempfile.TemporaryDirectory(prefix="ll-bench-submit-") as tmp:
        settings = private_cache(base, Path(tmp) / "cache")
        paths = ServicePaths.of(settings, Path(tmp) / "workspace")
        course = handin.ensure_released(settings, paths, only=[lab.id])
        service = GradingService(settings, paths).start()

        plain = Path(tmp) / "plain"
        plain_course_root(plain, lab)
        no_env = {"LADDERLAB_CONNECT": str(Path(tmp) / "no-such-connection.json")}

        def hand_in_and_wait() -> float:
            started = time.perf_counter()
            key = handin.hand_in(paths, course.id, lab.id, lab.notebook_path, STUDENT)
            sub = wait_for(service.ledger, key, 1800)
            took = time.perf_counter() - started
            if sub.status != "graded" or sub.score != lab.max_score:
                sys.exit(f"the solution was not graded full marks: {sub.to_json()}")
            return took

        try:
            hand_in_and_wait()  # warm once (imports, first gradebook, image caches), as grade_one does
            nbgrader(plain, "autograde", lab.id, "--force", env=no_env)
            times: dict[str, list[float]] = {"submit": [], "plain": []}
            for i in range(args.rounds):
                times["submit"].append(hand_in_and_wait())
                times["plain"].append(nbgrader(plain, "autograde", lab.id, "--force", env=no_env))
                print(f"round {i + 1}: hand-in to feedback {times['submit'][-1]:.2f}s  "
                      f"plain autograde {times['plain'][-1]:.2f}s", file=sys.stderr)
        finally:
            service.stop()
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["submit"] / med["plain"]
    print(f"lab {lab.id}, {args.rounds} rounds, medians")
    print(f"  hand-in -> feedback released (grading service, fresh env + sandbox + checks): {med['submit']:.2f} s")
    print(f"  plain nbgrader autograde, same cells, no environment:                       {med['plain']:.2f} s")
    print(f"  ratio: {ratio:.2f}x (target <= 1.0x)")
    print(json.dumps({"lab": lab.id, "rounds": args.rounds, "submit_s": round(med["submit"], 3),
                      "plain_s": round(med["plain"], 3), "ratio": round(ratio, 3)}))


if __name__ == "__main__":
    main()
