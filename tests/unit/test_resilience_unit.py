"""graders/resilience.py without Docker: the experiment's plumbing and every verdict, over simulated systems.

A simulated system stands in for the two observers the experiment uses: inventory's (its loopback
controls: the schedule, the ledger) and the probe's (the load). Each system says, per request, what the
edge answered and how many attempts inventory saw and served, from the phase the request was sent in.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from graders import resilience as R

from ladderlab.environments.transports.base import CommandResult, quote_command
from ladderlab.grading.checks import Verdict, evaluate, render_args
from ladderlab.testing import FakeContext

#: (t seconds, the grader's transient id?) -> (edge status, inventory attempts, inventory served)
System = Callable[[float, bool], tuple[int, int, int]]
PARAMS = {"deadline_ms": "900", "slow_ms": "400", "slow_seconds": "4", "amplifier": "orders", "attempts": "4"}
ARGS = {"deadline_ms": "{deadline_ms}", "slow_ms": "{slow_ms}", "slow_seconds": "{slow_seconds}"}


def slow(t: float) -> bool:
    return 6.0 <= t < 10.0


def resilient(t: float, transient: bool) -> tuple[int, int, int]:
    if slow(t):
        return 503, 1 if int(t * 20) % 3 == 0 else 0, 0  # shed fast, a few tries
    return 200, 2 if transient else 1, 1  # a transient failure retried once


def metastable(t: float, transient: bool) -> tuple[int, int, int]:
    if t >= 6.0:
        return 0, 4, 1  # nobody answered in time; four tries each, inventory busy with dead work
    return (503, 1, 0) if transient else (200, 1, 1)


def down(t: float, transient: bool) -> tuple[int, int, int]:
    return -1, 0, 0


def made_up(t: float, transient: bool) -> tuple[int, int, int]:
    return 200, 0, 0  # 200 at the edge without inventory ever serving the order


def optimistic(t: float, transient: bool) -> tuple[int, int, int]:
    return 200, 1, 1  # 200 at the edge at once, the order reserved at inventory only afterwards


class Simulated:
    """Both observers at once: inventory's controls and the probe's load, answered from ``system``."""

    def __init__(self, system: System, load_output: str | None = None, lag: float = 2.0) -> None:
        self.system = system
        self.lag = lag
        self.load_output = load_output
        self.run_id = ""
        self.transient: set[str] = set()
        self.ledger: dict[str, list[int]] = {}
        self.loads = 0

    def run(self, command: str, *args: object, timeout: float | None = None) -> CommandResult:
        full = quote_command(command, *args)
        if args and args[0] == R.CONTROL_SCRIPT and args[2] == "/experiment":
            spec = json.loads(str(args[3]))
            self.run_id, self.transient = spec["run"], set(spec["transient"])
            return CommandResult(full, 0, json.dumps({"run": self.run_id}), "")
        if args and args[0] == R.CONTROL_SCRIPT and str(args[2]).startswith("/ledger"):
            return CommandResult(full, 0, json.dumps({"ledger": self.ledger, "lag_ms_p90": self.lag}), "")
        if args and args[0] == R.LOAD_SCRIPT:
            self.loads += 1
            cfg = json.loads(str(args[1]))
            answers = []
            for i in range(cfg["n"]):
                rid = f"{cfg['run']}-{i}"
                status, tries, served = self.system(i / cfg["rate"], rid in self.transient)
                sent = int(cfg["t0"] * 1000 + i * 50)
                served_at = sent + (200 if self.system is optimistic else 40) if served else 0
                self.ledger[rid] = [tries, served, 0, served_at]
                answers.append([status, 50, sent])
            return CommandResult(full, 0, self.load_output if self.load_output is not None else json.dumps(answers), "")
        raise AssertionError(f"unexpected command {full[:80]!r}")

    def put_file(self, path: str, data: bytes) -> None:
        raise AssertionError("the experiment writes no files")


def context(system: System, load_output: str | None = None, lag: float = 2.0) -> tuple[FakeContext, Simulated]:
    sim = Simulated(system, load_output, lag)
    return FakeContext({"inventory": sim, "probe": sim}, params=PARAMS, addresses={"edge": "10.0.0.2"}), sim


CHECKS = {"recovers": R.recovers, "amplification-bounded": R.amplification_bounded, "fails-fast": R.fails_fast,
          "transient-retried": R.transient_retried}


def verdicts(ctx: FakeContext) -> dict[str, Verdict]:
    return {cid: evaluate(ctx, fn, render_args(ARGS, ctx.params)) for cid, fn in CHECKS.items()}


def test_the_timeline_has_its_phases_in_order():
    tl = R.Timeline(slow_seconds=4)
    assert tl.incident == (6.0, 10.0) and tl.recovery == (14.0, 17.0) and tl.requests == 340
    assert len(tl.indices(tl.transient)) == 60 and len(tl.indices(tl.incident)) == 80


def test_a_resilient_system_passes_every_behaviour_and_the_experiment_runs_once():
    ctx, sim = context(resilient)
    got = verdicts(ctx)
    assert all(v.passed for v in got.values()), got
    assert sim.loads == 1
    assert len(sim.transient) == 6, "1 request in 10 of the transient phase fails once"


def test_a_metastable_system_fails_every_behaviour_with_numbers():
    got = verdicts(context(metastable)[0])
    assert not any(v.passed for v in got.values())
    assert "0 of 60 orders succeeded 4 to 7 seconds after" in got["recovers"].feedback
    assert "4.00 per request" in got["amplification-bounded"].feedback
    assert "0 of 80 requests" in got["fails-fast"].feedback
    assert "54 of 60 orders" in got["transient-retried"].feedback


@pytest.mark.parametrize("system", [down, made_up, optimistic])
def test_a_service_that_does_not_really_serve_passes_nothing(system):
    """A dead edge answers every incident request at once and never reaches inventory; answers made up without
    inventory, or given before inventory served the order, are not orders: none may pass the incident checks."""
    got = verdicts(context(system)[0])
    for v in got.values():
        assert v.status == "failed" and "before any incident only 0 of 30" in v.feedback, v


def test_a_broken_load_is_the_graders_fault_never_the_learners():
    got = verdicts(context(resilient, load_output="Traceback ...")[0])
    assert {v.status for v in got.values()} == {"error"}


def test_an_overloaded_machine_cannot_judge_timing():
    """inventory woke up late (its event loop lagged): any verdict on timing would be the machine's, not the
    learner's."""
    got = verdicts(context(metastable, lag=250.0)[0])
    assert {v.status for v in got.values()} == {"error"}
    assert "too overloaded" in got["recovers"].feedback


def test_a_probe_that_fell_behind_its_schedule_cannot_judge():
    answers = [[-2, 0, 0] if 6.0 <= i / 20 < 8.0 else [200, 50, 0] for i in range(R.Timeline(slow_seconds=4).requests)]
    got = verdicts(context(resilient, load_output=json.dumps(answers))[0])
    assert {v.status for v in got.values()} == {"error"}
    assert "fell behind its schedule" in got["fails-fast"].feedback


@pytest.mark.parametrize(("part", "given", "passed"), [
    ("layer", "orders", True), ("layer", " Orders ", True), ("layer", "edge", False),
    ("factor", 4, True), ("factor", "4", True), ("factor", 3, False), ("factor", "four", False),
])
def test_the_diagnosis_is_compared_with_the_seeded_starting_configuration(part, given, passed):
    name = {"layer": "amplifying_layer", "factor": "amplification_factor"}[part]
    ctx = FakeContext(params=PARAMS, answers={name: given})
    verdict = evaluate(ctx, R.diagnosis, {"part": part, "answer": name})
    assert verdict.passed is passed
    assert "4" not in verdict.feedback.replace(str(given), "") or passed  # the expected value is never told


def test_a_missing_diagnosis_fails_and_says_how_to_record_it():
    verdict = evaluate(FakeContext(params=PARAMS), R.diagnosis, {"part": "factor", "answer": "amplification_factor"})
    assert not verdict.passed and "lab.answer('amplification_factor'" in verdict.feedback
