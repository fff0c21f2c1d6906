"""Every published lab's checks discriminate: `ladderlab selftest LAB --seeds K --json`, as CI runs it.

For several learners (seeds) per lab: the source notebook and every other correct solution
(``solutions/*.yaml``) score full marks, every decoy is rejected by exactly the checks it names, and the
untouched release scores 0.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from ladderlab.course import load_course
from tests.conftest import ROOT

pytestmark = [pytest.mark.docker, pytest.mark.slow]

#: Seeds per lab, and the choice parameters whose every value the seeds must draw: the seeded choices that
#: change what a check looks for. sre-5's injected fault changes the whole diagnosis: every fault is graded
#: here, every decoy for every fault. sre-3's amplifying layer and its tries, and sec-3's analyst (company
#: and workstation), change only what a right answer says: every value is graded on the lab's solutions,
#: each decoy once (DECOYS_ONCE: a decoy breaks one requirement whatever the seed draws). sre-2's and
#: sre-4's seeded thresholds and targets change only the series the checks replay through
#: promtool: every value of them is judged against the notebook's solution and the nearest wrong rules in
#: tests/integration/test_slo_scenarios.py (seconds, not a full self-test per value). Ports, zone and host
#: names differ between learners anyway (tests/integration grades several learners of sec-1).
SEEDS: dict[str, tuple[int, list[str]]] = {
    "sec-1-iptables-hardening": (1, []),
    "net-2-dns-authoritative-zone": (1, []),
    "sec-2-tls-server": (1, []),
    "sre-2-golden-signal-alerts": (1, []),
    "sre-4-slo-burn-rate-alerts": (1, []),
    "sre-5-strace-debugging": (4, ["fault"]),
    "sys-3-tested-cli-tool": (1, []),
    "sec-3-postgres-least-privilege": (3, ["analyst_company", "analyst_host"]),
    "sre-3-retry-storm": (3, ["amplifier", "attempts"]),
    "net-3-multi-region-mesh": (1, []),
    "comm-4-incident-rca": (1, []),
    "sys-6-mini-orchestrator": (1, []),
}

DECOYS_ONCE = ["sec-3-postgres-least-privilege", "sre-3-retry-storm"]

#: Gradings at once for all the labs' self-tests together: one `ladderlab selftest` run grades every lab in one
#: pool, so one lab's waits (sec-3's alert window, sec-1's filtered ports, sre-3's experiment) overlap another
#: lab's work instead of each lab's last, half-empty round running alone. The machine has 2 cores.
JOBS = 4

#: What the self-test cost, per lab: printed at the end of the test session (tests/conftest.py), CI's log keeps it.
SUMMARY: list[str] = []

#: The labs whose gradings take longest come first among gradings at the same point of their labs (the self-test
#: interleaves the labs' gradings, grading/selftest.interleave), so the pool does not end on one of them alone.
FIRST = ["sec-3-postgres-least-privilege", "sys-6-mini-orchestrator", "sre-3-retry-storm", "net-3-multi-region-mesh",
         "sre-5-strace-debugging"]


def _published() -> list[str]:
    from ladderlab.config import Settings

    return [lab.id for lab in load_course(Settings.from_env(ROOT).course_file).labs if lab.status == "published"]


def test_every_published_lab_has_a_seed_count():
    assert sorted(_published()) == sorted(SEEDS), "say in SEEDS how many seeds each published lab needs"


@pytest.fixture(scope="module")
def selftest_all(images, root) -> dict[str, dict]:
    """Every published lab's self-test, in one run as CI runs it: {lab id: its JSON}."""
    labs = sorted(_published(), key=lambda lab: (FIRST.index(lab) if lab in FIRST else len(FIRST), lab))
    counts = [f"{lab}={SEEDS[lab][0]}" for lab in labs if SEEDS[lab][0] != 1]
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "ladderlab.cli", "selftest", *labs, "--json", "--jobs", str(JOBS),
                        *(f"--seeds={c}" for c in counts), *(f"--decoys-once={lab}" for lab in DECOYS_ONCE)],
                       capture_output=True, text=True, cwd=root, timeout=3000)
    wall = time.monotonic() - t0
    assert r.stdout.strip(), r.stderr[-3000:]
    out = json.loads(r.stdout)
    SUMMARY.append(f"self-test of {len(labs)} labs: {wall:.0f}s wall, {JOBS} gradings at once")
    for lab in out["labs"]:
        again = sum(run.get("attempts", 1) - 1 for run in lab["runs"])
        SUMMARY.append(f"  {lab['id']}: {len(lab['seeds'])} seeds, {len(lab['runs'])} gradings, "
                       f"{lab['seconds']:.0f}s of grading" + (f", {again} graded again" if again else ""))
    return {lab["id"]: lab for lab in out["labs"]}


@pytest.mark.parametrize("lab_id", _published())
def test_lab_passes_its_selftest_for_several_seeds(selftest_all, lab_id):
    seeds, must_cover = SEEDS[lab_id]
    lab = selftest_all[lab_id]
    assert lab["id"] == lab_id
    learners = [s["learner"] for s in lab["seeds"]]
    assert len(set(learners)) == seeds
    assert not [u for u in lab["uncovered"] if u.split("=", 1)[0] in must_cover], lab["seeds"]
    assert lab["untouched"]["ok"] and lab["untouched"]["score"] == 0, lab["untouched"]
    solutions = [run for run in lab["runs"] if run["kind"] == "solution"]
    assert {run["learner"] for run in solutions} == set(learners)
    assert len({run["name"] for run in solutions}) >= 2, f"{lab_id}: no solutions/*.yaml graded"
    for run in solutions:
        assert run["ok"] and run["score"] == run["max_score"], _why(run, lab)
    decoys = lab["decoys"]
    assert len({d["name"] for d in decoys}) >= 3, lab_id
    if lab_id in DECOYS_ONCE:
        assert len({d["name"] for d in decoys}) == len(decoys), "each decoy graded once"
    for decoy in decoys:
        assert decoy["rejected"], _why(decoy, lab)
        failed = set(decoy["failed_checks"])
        assert set(decoy["must_fail"]) <= failed <= set(decoy["must_fail"]) | set(decoy["may_fail"]), decoy
        assert decoy["errored_checks"] == [], decoy
    assert lab["passed"]


def _why(run: dict, lab: dict) -> str:
    """One failed run, whole, with what its learner's seed drew: pytest cuts a dict in an assertion message
    short."""
    keep = ("learner", "kind", "name", "score", "failed_checks", "errored_checks", "must_fail", "error", "attempts",
            "feedback")
    params = next((s["params"] for s in lab["seeds"] if s["learner"] == run.get("learner")), None)
    return json.dumps({**{k: run.get(k) for k in keep}, "params": params})
