"""Hand-in to feedback, against plain ``nbgrader autograde`` of the same cells with no environment, in one run.

- ``submit``: the grading service as ``ladderlab lab`` runs it (in process, one worker, already started),
  a hand-in through nbgrader's exchange (nbgrader's own submit), timed until the ledger says graded, which
  is after the gradebook, the evidence and ``release_feedback`` (the learner's Fetch Feedback finds it).
  Each hand-in is a fresh environment, sandbox, trusted checks; teardown runs off the critical path. The
  environment was prepared ahead, as ``ladderlab lab``'s service prepares one for the lab being practised
  and again after each grading (service/warm.py); ``cold`` is the same hand-in with none prepared.
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
        # As ``ladderlab lab`` runs it: preparing a grading environment ahead for the lab being handed in
        # (service/warm.py). ``cold`` hand-ins find none (prepared environments are dropped first).
        service = GradingService(settings, paths, prepare=True).start()
        assert service.warm is not None
        pool = service.warm

        plain = Path(tmp) / "plain"
        plain_course_root(plain, lab)
        no_env = {"LADDERLAB_CONNECT": str(Path(tmp) / "no-such-connection.json")}

        def prepared() -> None:
            """Wait, as a learner's work between hand-ins would, until the next one's environment is up."""
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                item = pool._items.get((STUDENT, lab.id))
                if item is not None and item.future.done():
                    return
                time.sleep(0.2)
            sys.exit("no environment was prepared within 300 s")

        def unprepared() -> None:
            for key in list(pool.keys()):
                env = pool.take(*key)
                if env is not None:
                    env.down()

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
            times: dict[str, list[float]] = {"submit": [], "cold": [], "plain": []}
            for i in range(args.rounds):
                prepared()
                times["submit"].append(hand_in_and_wait())
                unprepared()
                times["cold"].append(hand_in_and_wait())
                times["plain"].append(nbgrader(plain, "autograde", lab.id, "--force", env=no_env))
                print(f"round {i + 1}: hand-in to feedback {times['submit'][-1]:.2f}s (cold: "
                      f"{times['cold'][-1]:.2f}s)  plain autograde {times['plain'][-1]:.2f}s", file=sys.stderr)
        finally:
            service.stop()
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["submit"] / med["plain"]
    print(f"lab {lab.id}, {args.rounds} rounds, medians")
    cold = med["cold"] / med["plain"]
    print(f"  hand-in -> feedback released (grading service, prepared env + sandbox + checks): {med['submit']:.2f} s")
    print(f"  the same with no environment prepared (the env starts at hand-in):            {med['cold']:.2f} s")
    print(f"  plain nbgrader autograde, same cells, no environment:                         {med['plain']:.2f} s")
    print(f"  ratio: {ratio:.2f}x (target <= 1.0x); cold: {cold:.2f}x")
    print(json.dumps({"lab": lab.id, "rounds": args.rounds, "submit_s": round(med["submit"], 3),
                      "cold_s": round(med["cold"], 3), "plain_s": round(med["plain"], 3), "ratio": round(ratio, 3),
                      "cold_ratio": round(cold, 3)}))


if __name__ == "__main__":
    main()
