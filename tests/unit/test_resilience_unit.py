"""graders/resilience.py without Docker: the experiment's plumbing and every verdict, over simulated systems.

A simulated system stands in for the two observers the experiment uses: inventory's (its loopback
controls: the schedule, the ledger) and the probe's (the load). Each system says, per request, what the
edge answered and how many attempts inventory saw and served, from the phase the request was sent in.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import signal
import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import yaml
from graders import resilience as R

from ladderlab.environments.transports.base import CommandResult, quote_command
from ladderlab.grading.checks import Verdict, evaluate, render_args
from ladderlab.testing import FakeContext
from tests.conftest import ROOT

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

    def __init__(self, system: System, load_output: str | None = None, lag: float = 2.0, late_start: int = -3000,
                 stall: int = 30, stalls: list[list[float]] | None = None) -> None:
        self.system = system
        self.stalls_s = stalls or []  # [seconds from t0, ms] each time the probe was kept from running
        self.lag = lag
        self.late_start, self.stall = late_start, stall
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
            stalls = [[int(cfg["t0"] * 1000 + at * 1000), ms] for at, ms in self.stalls_s]
            printed = {"answers": answers, "late_start_ms": self.late_start, "stall_ms": self.stall, "stalls": stalls}
            return CommandResult(full, 0, self.load_output if self.load_output is not None else json.dumps(printed), "")
        raise AssertionError(f"unexpected command {full[:80]!r}")

    def put_file(self, path: str, data: bytes) -> None:
        raise AssertionError("the experiment writes no files")


def context(system: System, load_output: str | None = None, lag: float = 2.0, **load: Any) -> tuple[FakeContext,
                                                                                                  Simulated]:
    sim = Simulated(system, load_output, lag, **load)
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
    printed = {"answers": answers, "late_start_ms": -3000, "stall_ms": 30, "stalls": []}
    got = verdicts(context(resilient, load_output=json.dumps(printed))[0])
    assert {v.status for v in got.values()} == {"error"}
    assert "fell behind its schedule" in got["fails-fast"].feedback


@pytest.mark.parametrize(("load", "says"), [({"late_start": 900}, "started 0.9 s after its first request was due"),
                                            ({"stall": 1200}, "kept from running for 1200 ms at once")])
def test_a_load_that_started_late_or_stalled_cannot_judge_even_a_broken_service(load, says):
    """The probe shares the machine with the service: when it could not run on time, neither could orders or
    the edge, and the failures it saw are the machine's. A service failing anyway is not failed on that run."""
    got = verdicts(context(metastable, **load)[0])
    assert {v.status for v in got.values()} == {"error"}, got
    assert says in got["recovers"].feedback and "overloaded" in got["recovers"].feedback


def shed_late(t: float, transient: bool) -> tuple[int, int, int]:
    """Resilient, but during the slowdown its errors come back past the deadline (the probe gives up: 0)."""
    return (0, 1, 0) if slow(t) else resilient(t, transient)


def test_requests_the_machine_disturbed_are_set_aside_when_a_phase_fails():
    """Resilient, but the answers to the requests sent from 7 s to 7.6 s came late while the probe itself was kept
    from running for 200 ms at 7.5 s: the machine's doing. Judged on the requests it left alone, fails-fast
    passes and says how many it set aside."""
    def late_in_stall(t: float, transient: bool) -> tuple[int, int, int]:
        return (0, 1, 0) if 7.0 <= t < 7.6 else resilient(t, transient)
    got = verdicts(context(late_in_stall, stalls=[[7.5, 200]])[0])
    assert all(v.passed for v in got.values()), got
    assert "of 80 requests" not in got["fails-fast"].feedback
    assert "were set aside" in got["fails-fast"].feedback


def test_a_stall_never_rescues_a_service_that_is_late_anyway():
    """Late all through the slowdown, with the same stall: the requests it set aside were late, and so are the
    ones it left alone. Setting aside takes answered and unanswered requests alike."""
    got = verdicts(context(shed_late, stalls=[[7.5, 200]])[0])
    assert got["fails-fast"].status == "failed", got["fails-fast"]
    assert "0 of" in got["fails-fast"].feedback and "were set aside" in got["fails-fast"].feedback


def test_a_phase_that_passes_stands_whatever_the_machine_did():
    """A busy machine only makes a service look worse: a pass measured through stalls is a pass."""
    stalls = [[6.0 + k * 0.1, 60] for k in range(40)]
    got = verdicts(context(resilient, stalls=stalls)[0])
    assert all(v.passed for v in got.values()), got
    assert not any("set aside" in v.feedback for v in got.values())


def test_a_failing_phase_the_machine_disturbed_throughout_cannot_be_judged():
    """Stalls through the whole slowdown: too few requests were left alone to fail the service on them."""
    stalls = [[5.5 + k * 0.1, 60] for k in range(50)]
    got = verdicts(context(shed_late, stalls=stalls)[0])
    assert got["fails-fast"].status == "error", got["fails-fast"]
    assert "too overloaded to judge the slowdown" in got["fails-fast"].feedback
    assert got["transient-retried"].passed, "the transient phase ran undisturbed and passed"


def test_stalls_shorter_than_the_threshold_disturb_nothing():
    """Small hiccups add up to less than DISTURBED_MS in any request's wait: the service is judged on all."""
    got = verdicts(context(shed_late, stalls=[[6.0 + k * 1.0, 60] for k in range(4)])[0])
    assert got["fails-fast"].status == "failed" and "0 of 80" in got["fails-fast"].feedback


def test_the_baseline_failure_says_what_the_edge_answered():
    got = verdicts(context(down)[0])
    assert "(the edge answered: 30 no connection)" in got["recovers"].feedback


def _serve_ok() -> tuple[ThreadingHTTPServer, int]:
    class Ok(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


@pytest.mark.parametrize("stop_s", [0.0, 0.8])
def test_the_real_load_script_measures_its_own_start_and_stalls(stop_s):
    """LOAD_SCRIPT itself, against a local server: it reports how late it started (before t0 here) and the
    longest it was kept from running (a SIGSTOP of ``stop_s`` in the middle of the load)."""
    server, port = _serve_ok()
    cfg = {"host": "127.0.0.1", "port": port, "run": "t", "t0": time.time() + 1.0, "n": 30, "rate": 20.0,
           "deadline_ms": 700, "slack_ms": 200, "late_s": R.LATE_S, "stall_log_ms": R.STALL_LOG_MS}
    try:
        proc = subprocess.Popen([sys.executable, "-c", R.LOAD_SCRIPT, json.dumps(cfg)], stdout=subprocess.PIPE,
                                text=True)
        if stop_s:
            time.sleep(max(0.0, cfg["t0"] + 0.5 - time.time()))
            proc.send_signal(signal.SIGSTOP)
            time.sleep(stop_s)
            proc.send_signal(signal.SIGCONT)
        out, _ = proc.communicate(timeout=30)
    finally:
        server.shutdown()
    printed = json.loads(out)
    assert len(printed["answers"]) == 30 and printed["late_start_ms"] < 0
    if stop_s:
        assert printed["stall_ms"] >= stop_s * 1000 - 50, printed
        stopped = [(at, ms) for at, ms in printed["stalls"] if ms >= stop_s * 1000 - 50]
        assert len(stopped) == 1 and abs(stopped[0][0] / 1000 - (cfg["t0"] + 0.5)) < 0.2, printed["stalls"]
    else:
        assert printed["stall_ms"] < R.MAX_STALL_MS, printed
        assert all(a[0] == 200 for a in printed["answers"]), printed


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


# --- The cascade environment's metrics (what the learner's Prometheus scrapes) ---------------------------------

CASCADE = ROOT / "environments" / "cascade"
LABEL = r'[a-zA-Z_]\w*="[^"\\]*"'
SAMPLE = re.compile(rf"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?P<labels>\{{{LABEL}(,{LABEL})*\}})?"
                    r" (?P<value>-?[0-9.]+(e[+-]?[0-9]+)?|\+Inf|NaN)$")


def exposition(text: str) -> dict[str, float]:
    """The samples of a Prometheus text exposition (version 0.0.4), by name and labels; every sample belongs to a
    family declared with HELP and TYPE, counters end in _total."""
    kinds: dict[str, str] = {}
    helped: set[str] = set()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helped.add(line.split(" ")[2])
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram"), line
            assert kind != "counter" or name.endswith("_total"), line
            kinds[name] = kind
        else:
            m = SAMPLE.match(line)
            assert m, f"not a sample line: {line!r}"
            name = m["name"]
            family = name if name in kinds else re.sub(r"_(bucket|sum|count)$", "", name)
            assert kinds.get(family) == ("histogram" if family != name else kinds.get(name)), line
            assert family in helped, line
            samples[name + (m["labels"] or "")] = float(m["value"])
    return samples


def image_module(image: str, name: str) -> types.ModuleType:
    path = CASCADE / "images" / image / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"cascade_{name}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


async def http_get(port: int, path: str) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    head, _, body = data.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body


def test_orders_metrics_show_every_try_of_a_request_that_timed_out_and_survive_a_reload(tmp_path):
    orders = image_module("orders", "orders")

    async def scenario() -> tuple[dict[str, float], dict[str, float], int]:
        async def never_in_time(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            await asyncio.sleep(1)
            writer.close()

        dependency = await asyncio.start_server(never_in_time, "127.0.0.1", 0)
        port = dependency.sockets[0].getsockname()[1]
        orders.state = orders.State(orders.Settings(url=f"http://127.0.0.1:{port}/reserve", attempt_timeout_ms=50,
                                                    max_retries=2, retry_on=["timeout"]))
        server = await asyncio.start_server(orders.serve, "127.0.0.1", 0)
        here = server.sockets[0].getsockname()[1]
        status, _ = await http_get(here, "/order?id=a")
        first = exposition((await http_get(here, "/metrics"))[1])
        config = tmp_path / "resilience.toml"
        config.write_text("[retries]\nmax_retries = 0\n")
        orders.CONFIG = str(config)
        orders.reload()  # what SIGHUP does: new settings, the same counters
        after = exposition((await http_get(here, "/metrics"))[1])
        server.close()
        dependency.close()
        return first, after, status

    first, after, status = asyncio.run(scenario())
    assert status == 504
    assert first["orders_requests_total"] == 1
    assert first['orders_upstream_requests_total{outcome="timeout"}'] == 3  # one try and two retries
    assert first["orders_retries_total"] == 2
    assert first['orders_responses_total{code="504"}'] == 1
    assert first['orders_request_duration_seconds_bucket{le="0.1"}'] == 0
    count = first["orders_request_duration_seconds_count"]
    assert first['orders_request_duration_seconds_bucket{le="+Inf"}'] == count == 1
    assert first["orders_in_flight"] == 0 and first["orders_upstream_in_flight"] == 0
    assert after == first


def test_inventory_metrics_count_the_work_and_a_scrape_is_not_a_request():
    inventory = image_module("inventory", "inventory")

    async def scenario() -> tuple[dict[str, float], dict[str, float]]:
        inventory.queue = asyncio.Queue()
        worker = asyncio.get_running_loop().create_task(inventory.worker())
        server = await asyncio.start_server(inventory.serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        assert (await http_get(port, "/reserve?id=a"))[0] == 200
        first = exposition((await http_get(port, "/metrics"))[1])
        second = exposition((await http_get(port, "/metrics"))[1])
        server.close()
        worker.cancel()
        return first, second

    first, second = asyncio.run(scenario())
    assert first["inventory_requests_received_total"] == first["inventory_requests_served_total"] == 1
    assert first["inventory_queue_length"] == 0 and first["inventory_slow"] == 0
    assert first["inventory_workers"] == inventory.WORKERS
    assert second == first


def test_prometheus_scrapes_every_layer_where_it_serves_its_metrics():
    env = yaml.safe_load((CASCADE / "env.yaml").read_text())
    config = yaml.safe_load((CASCADE / "images" / "prometheus" / "prometheus.yml").read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    assert targets == {"edge": ["edge:8404"], "orders": ["orders:8080"], "inventory": ["inventory:8081"]}
    assert {t.split(":")[0] for ts in targets.values() for t in ts} <= set(env["hosts"])
    assert "prometheus" in env["hosts"]
    seeded = (CASCADE / "images" / "edge" / "ll-seed").read_text()
    assert re.search(r"frontend metrics\n\s+bind :8404\n\s+http-request use-service prometheus-exporter", seeded)
    # Cheap on a 2-core machine whose checks are timing-sensitive: a few seconds between scrapes, no rules.
    assert config["global"]["scrape_interval"] == "2s" and "rule_files" not in config


def test_the_prometheus_image_shares_the_slo_images_package_layer():
    """Its first instructions are the slo Prometheus image's, word for word: the build reuses that cached layer."""
    def head(env: str) -> list[str]:
        text = (ROOT / "environments" / env / "images" / "prometheus" / "Dockerfile").read_text()
        lines = [line for line in text.splitlines() if not line.startswith("#")]
        return lines[:lines.index(next(line for line in lines if line.startswith("COPY")))]

    assert head("cascade") == head("slo")
