"""Grading one submission end to end, against plain ``nbgrader autograde`` in the same run.

Each round runs the real nbgrader workflow twice on the same submitted notebook
(the lab's source notebook, i.e. a correct solution):

- ``ladderlab``: a course root from ``ladderlab nbgrader init`` -> ``nbgrader autograde``:
  fresh environment, sandbox runner, trusted checks, teardown, gradebook;
- ``plain``: a course root with nbgrader's default configuration -> ``nbgrader autograde`` of
  the same cells with no environment (``ladderlab.start`` fails at once, so every cell runs
  and errors quickly): nbgrader's own fixed cost plus a kernel.

Prints medians and the ratio. Target (issue 3): ratio <= 2.0.

    python benchmarks/grade_one.py [--rounds 5] [--lab sec-1-iptables-hardening]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ladderlab.config import Settings
from ladderlab.course import load_course
from ladderlab.course.labs import LabDef, load_lab
from ladderlab.grading.checks import load_graders
from ladderlab.grading.nbgrader_ext import init_course_root

STUDENT = "bench"


def nbgrader(root: Path, *args: str, env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    bindir = str(Path(sys.executable).parent)
    full_env = {**os.environ, "PATH": f"{bindir}:{os.environ.get('PATH', '')}",
                "LADDERLAB_LADDER_URL": f"sqlite:///{root / 'ladder.sqlite'}", **(env or {})}
    result = subprocess.run([f"{bindir}/nbgrader", *args], cwd=root, env=full_env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"nbgrader {' '.join(args)} failed in {root}:\n{result.stderr[-3000:]}")
    return time.perf_counter() - started


def submit(root: Path, lab_id: str, notebook: Path) -> None:
    dest = root / "submitted" / STUDENT / lab_id
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(notebook, dest / f"{lab_id}.ipynb")


def plain_course_root(plain: Path, lab: LabDef) -> None:
    """The baseline: a course root with nbgrader's default configuration, the lab generated, ``STUDENT``
    added and the lab's source notebook submitted for them."""
    (plain / "source" / lab.id).mkdir(parents=True)
    shutil.copyfile(lab.notebook_path, plain / "source" / lab.id / f"{lab.id}.ipynb")
    (plain / "nbgrader_config.py").write_text(
        f"c = get_config()  # noqa: F821\nc.CourseDirectory.root = {str(plain)!r}\n"
        f"c.CourseDirectory.course_id = 'plain'\n")
    nbgrader(plain, "generate_assignment", lab.id, "--force")
    nbgrader(plain, "db", "student", "add", STUDENT)
    submit(plain, lab.id, lab.notebook_path)


def score(root: Path, lab_id: str) -> float:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
        return float(gb.find_submission(lab_id, STUDENT).score)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--lab", default="sec-1-iptables-hardening")
    args = p.parse_args()
    settings = Settings.from_env()
    lab = load_lab(settings, load_course(settings.course_file), args.lab, registry=load_graders(settings.root))
    with tempfile.TemporaryDirectory(prefix="ll-bench-") as tmp:
        ours = Path(tmp) / "ladderlab"
        plain = Path(tmp) / "plain"
        init_course_root(settings, ours, [lab])
        nbgrader(ours, "generate_assignment", lab.id, "--force")
        nbgrader(ours, "db", "student", "add", STUDENT)
        submit(ours, lab.id, lab.notebook_path)
        plain_course_root(plain, lab)
        no_env = {"LADDERLAB_CONNECT": str(Path(tmp) / "no-such-connection.json")}
        nbgrader(ours, "autograde", lab.id, "--force")  # warm caches (imports, images) once
        nbgrader(plain, "autograde", lab.id, "--force", env=no_env)
        times: dict[str, list[float]] = {"ladderlab": [], "plain": []}
        for i in range(args.rounds):
            times["ladderlab"].append(nbgrader(ours, "autograde", lab.id, "--force"))
            times["plain"].append(nbgrader(plain, "autograde", lab.id, "--force", env=no_env))
            print(f"round {i + 1}: ladderlab {times['ladderlab'][-1]:.2f}s  plain {times['plain'][-1]:.2f}s",
                  file=sys.stderr)
        ours_score, plain_score = score(ours, lab.id), score(plain, lab.id)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["ladderlab"] / med["plain"]
    print(f"lab {lab.id}, {args.rounds} rounds, medians")
    print(f"  nbgrader autograde with ladderlab (fresh env + sandbox + checks): {med['ladderlab']:.2f} s "
          f"(score {ours_score:g}/{lab.max_score:g})")
    print(f"  plain nbgrader autograde, same cells, no environment:            {med['plain']:.2f} s "
          f"(score {plain_score:g})")
    print(f"  ratio: {ratio:.2f}x (target <= 2.0x)")
    print(json.dumps({"lab": lab.id, "rounds": args.rounds, "ladderlab_s": round(med["ladderlab"], 3),
                      "plain_s": round(med["plain"], 3), "ratio": round(ratio, 3), "score": ours_score}))


if __name__ == "__main__":
    main()
