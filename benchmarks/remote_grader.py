"""Hand-ins judged through the judging table (graders on other machines, docs/hub-design.md 2.9), against the same
hand-ins graded in the grading service's own process, in one run.

Each round hands in ``--learners`` correct solutions of one lab to a grading service (``ladderlab service run
--workers N``) and times hand-in to the last one graded (the ledger says ``graded``), two ways:

- ``in-process``: the service grades them itself (its SQLite queue, ledger and gradebook);
- ``judged``: the service keeps its ledger and records in a PostgreSQL of its own (as a hub does), posts every
  version to the judging table and judges none itself (``LADDERLAB_LOCAL_JUDGES=0``); a separate ``ladderlab
  service grader --workers N`` process claims and judges them (here over the server's socket: the cost measured is
  the table's, not a network's).

Prints each round and the ratio of medians. Root only (PostgreSQL runs as the postgres account).

    python benchmarks/remote_grader.py [--rounds 2] [--learners 4] [--workers 2] [--lab sec-1-iptables-hardening]
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

import nbformat

from ladderlab.config import Settings
from ladderlab.course import load_course
from ladderlab.course.labs import load_lab
from ladderlab.grading.checks import load_graders
from ladderlab.hub.database import HubDatabase
from ladderlab.service.judging import LOCAL_ENV, URL_ENV
from ladderlab.testing import private_cache, stop_process


def cli(env: dict[str, str], *args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "ladderlab.cli", *args], env=env, capture_output=True, text=True,
                       timeout=600, check=False)
    if r.returncode != 0:
        sys.exit(f"ladderlab {' '.join(args)} failed:\n{r.stderr[-3000:]}")
    return r.stdout


def round_(settings: Settings, lab_id: str, notebook: Path, work: Path, tag: str, learners: int, workers: int,
           judged: bool) -> float:
    cache = private_cache(settings, work / f"cache-{tag}").cache_dir
    base = {k: v for k, v in os.environ.items() if not k.startswith("LADDERLAB_")}
    env = dict(base, LADDERLAB_ROOT=str(settings.root), LADDERLAB_CACHE_DIR=str(cache),
               LADDERLAB_WORKSPACE=str(work / f"workspace-{tag}"))
    db = None
    procs: list[subprocess.Popen[bytes]] = []
    try:
        if judged:
            db = HubDatabase(work / f"pg-{tag}" / "postgres")
            env.update(db.start(lambda _m: None))
            env.update({URL_ENV: db.sqlalchemy_url("judging"), LOCAL_ENV: "0"})
        log = (work / f"service-{tag}.log").open("w")
        procs.append(subprocess.Popen([sys.executable, "-m", "ladderlab.cli", "service", "run", "--workers",
                                       str(workers if not judged else max(workers, 8))], env=env, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True))
        if judged:
            grader_log = (work / f"grader-{tag}.log").open("w")
            procs.append(subprocess.Popen([sys.executable, "-m", "ladderlab.cli", "service", "grader", "--workers",
                                           str(workers)], env=env, stdout=grader_log, stderr=subprocess.STDOUT,
                                          start_new_session=True))
        deadline = time.monotonic() + 300  # both up before the clock starts (the service releases the labs first)
        while not (json.loads(cli(env, "service", "status", "--json"))["running"]
                   and (not judged or "judging for" in (work / f"grader-{tag}.log").read_text())):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                sys.exit(f"{tag}: the service or the grader did not start (logs in {work})")
            time.sleep(0.5)
        started = time.perf_counter()
        for i in range(learners):
            cli(env, "submit", lab_id, "--notebook", str(notebook), "--learner", f"bench-{tag}-{i}", "--no-wait")
        while True:
            subs = json.loads(cli(env, "service", "status", "--json"))["submissions"]
            if len(subs) == learners and all(s["status"] in ("graded", "error") for s in subs):
                break
            time.sleep(0.5)
        elapsed = time.perf_counter() - started
        bad = [s for s in subs if s["status"] != "graded" or s["score"] != s["max_score"]]
        if bad:
            sys.exit(f"{tag}: not every solution got full marks: {bad}")
        return elapsed
    finally:
        for proc in procs:
            stop_process(proc)
        if db is not None:
            db.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--learners", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--lab", default="sec-1-iptables-hardening")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: the judged way runs a PostgreSQL as the postgres account")
    settings = Settings.from_env()
    lab = load_lab(settings, load_course(settings.course_file), args.lab, registry=load_graders(settings.root))
    work = Path(tempfile.mkdtemp(prefix="ll-bench-judging-"))
    work.chmod(0o755)  # the postgres account walks to its data directory
    try:
        notebook = work / f"{lab.id}.ipynb"
        nbformat.write(lab.source, str(notebook))
        times: dict[str, list[float]] = {"in-process": [], "judged": []}
        for r in range(args.rounds):
            for way in ("in-process", "judged") if r % 2 == 0 else ("judged", "in-process"):
                t = round_(settings, lab.id, notebook, work, f"{way[:2]}{r}", args.learners, args.workers,
                           way == "judged")
                times[way].append(t)
                print(f"round {r + 1} {way:>10}: {args.learners} hand-ins graded in {t:6.1f} s", flush=True)
        base, judged = statistics.median(times["in-process"]), statistics.median(times["judged"])
        print(f"median: in-process {base:.1f} s, judged {judged:.1f} s; ratio judged/in-process {judged / base:.2f} "
              f"({args.learners} hand-ins of {lab.id}, {args.workers} gradings at once)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
