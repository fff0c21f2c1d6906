"""graders/orchestrator.py without Docker: each check's pass and failures against a simulated cluster (a fake
observer per node answering the snapshot script from a table of listening sockets, a fake probe answering the
API, load-balancer and load scripts), and the CannotJudge cases."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from graders import orchestrator as orch

from ladderlab.environments.transports.base import CommandResult
from ladderlab.grading.checks import Listener, evaluate
from ladderlab.testing import FakeContext

NODES = ["node1", "node2", "node3"]
APP, V1, V2 = "shop-ab12", "10.0", "10.1"
ADDR = {"ctl": "10.200.9.10", "node1": "10.200.9.11", "node2": "10.200.9.12", "node3": "10.200.9.13",
        "probe": "10.200.9.130"}
COMMON: dict[str, Any] = {"app": APP, "replicas": 4, "per_node": 2, "nodes": NODES}


def rep(port: int, ino: str, rid: str | None, version: str = V1, app: str = APP) -> dict[str, Any]:
    return {"port": port, "ino": ino, "answer": None if rid is None else {"app": app, "version": version, "id": rid}}


def healthy(version: str = V1, layout: tuple[int, ...] = (2, 1, 1), start: int = 0) -> dict[str, list[dict[str, Any]]]:
    out, k = {}, start
    for node, count in zip(NODES, layout, strict=True):
        out[node] = [rep(9100 + i, f"{node}-{k + i}", f"{APP}-{k + i}", version) for i in range(count)]
        k += count
    return out


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    """The checks' waits, shortened (their logic is what is tested here)."""
    monkeypatch.setattr(orch, "POLL", 0.01)
    monkeypatch.setattr(orch, "HOLD", 0.05)


class Cluster:
    """The simulated cluster: what each node's sockets are, what the API and the load balancer answer."""

    def __init__(self, state: dict[str, list[dict[str, Any]]] | None = None) -> None:
        self.state = state if state is not None else healthy()
        self.api_status = 200
        self.lb_ids: list[str] | None = None  # None: round robin over the state's answering replicas
        self.puts: list[str] = []
        self.on_snapshot: Callable[[Cluster], None] | None = None  # evolves the state between snapshots
        self.timelines: dict[str, list[dict[str, Any]]] = {}  # node -> canned samples for sampled windows
        self.load: dict[str, Any] | None = None  # canned answer of the load script

    def run(self, host: str, full: str) -> CommandResult:
        if "def listening" in full:
            window = re.search(r" 9100 9199 (\S+) ", full)
            if window and float(window.group(1)) > 0 and host in self.timelines:
                return CommandResult(full, 0, json.dumps(self.timelines[host]), "")
            if self.on_snapshot is not None:
                self.on_snapshot(self)
            return CommandResult(full, 0, json.dumps([{"t": 1.0, "sockets": self.state.get(host, [])}]), "")
        if "urllib.request.Request(url" in full:  # the client script: one request
            if " PUT " in f" {full} ":
                self.puts.append(full)
                return CommandResult(full, 0, json.dumps({"status": self.api_status, "body": "{}"}), "")
            if f":{orch.API_PORT}/" in full:
                return CommandResult(full, 0, json.dumps({"status": self.api_status, "body": "{}"}), "")
            ids = self.ids()
            body = json.dumps({"app": APP, "id": ids[0] if ids else ""}) if ids else "no replica"
            return CommandResult(full, 0, json.dumps({"status": 200 if ids else 503, "body": body}), "")
        if "def get(i)" in full:  # the load script
            if self.load is not None:
                return CommandResult(full, 0, json.dumps(self.load), "")
            ids = self.ids()
            reqs = ([[1.0 + i, True, V1, ids[i % len(ids)], ""] for i in range(24)] if ids
                    else [[1.0, False, "", "", "HTTP 503"]] * 24)
            return CommandResult(full, 0, json.dumps({"requests": reqs, "put": None, "late_ms": 3}), "")
        raise AssertionError(f"unexpected command on {host}: {full[:100]}")

    def ids(self) -> list[str]:
        if self.lb_ids is not None:
            return self.lb_ids
        return [r["answer"]["id"] for reps in self.state.values() for r in reps if r["answer"]]


class Runner:
    def __init__(self, cluster: Cluster, host: str) -> None:
        self.cluster, self.host = cluster, host
        self.files: dict[str, bytes] = {}

    def run(self, command: str, *args: object, timeout: float | None = None) -> CommandResult:
        from ladderlab.environments.transports.base import quote_command

        return self.cluster.run(self.host, quote_command(command, *args))

    def put_file(self, path: str, data: bytes) -> None:
        self.files[path] = data


def context(cluster: Cluster) -> FakeContext:
    listeners = {(n, 9100 + i): Listener(pid=100 + 10 * j + i, uid=0, exe="/usr/bin/python3.11", exe_sha256="a" * 64)
                 for j, n in enumerate(NODES) for i in range(4)}
    return FakeContext({h: Runner(cluster, h) for h in [*NODES, "probe", "ctl"]}, addresses=ADDR,
                       listeners=listeners)  # type: ignore[arg-type]


def grade(fn: Callable[..., Any], cluster: Cluster, **args: Any) -> tuple[FakeContext, Any]:
    ctx = context(cluster)
    return ctx, evaluate(ctx, fn, {**COMMON, **args})


# --- converged, spread ------------------------------------------------------------------------------------


def test_converged_and_spread_pass_on_a_healthy_cluster():
    _, v = grade(orch.converged_behind_lb, Cluster(), version=V1, ctl="ctl", lb_port=8042)
    assert v.status == "passed", v.feedback
    _, v = grade(orch.spread, Cluster(), version=V1)
    assert v.status == "passed" and "node1: 2" in v.feedback


@pytest.mark.parametrize("state, words", [
    ({"node1": [], "node2": [], "node3": []}, "0 healthy replicas"),
    (healthy(layout=(2, 1, 0)), "3 healthy replicas"),
    ({**healthy(), "node3": [rep(9100, "x", f"{APP}-3"), rep(9101, "y", None)]}, "1 other listener"),
    ({**healthy(), "node3": [rep(9100, "x", f"{APP}-0")]}, "3 distinct ids"),
    (healthy(version=V2), "0 healthy replicas of shop-ab12 10.0"),
])
def test_converged_fails_when_the_replicas_are_not_exactly_the_deployment(state, words):
    _, v = grade(orch.converged_behind_lb, Cluster(state), version=V1, ctl="ctl", lb_port=8042)
    assert v.status == "failed" and words in v.feedback, v.feedback


def test_converged_fails_when_the_load_balancer_sticks_to_one_replica_or_answers_from_elsewhere():
    cluster = Cluster()
    cluster.lb_ids = [f"{APP}-0"]
    _, v = grade(orch.converged_behind_lb, cluster, version=V1, ctl="ctl", lb_port=8042)
    assert v.status == "failed" and "1 replica(s)" in v.feedback
    cluster.lb_ids = ["someone-else"]
    _, v = grade(orch.converged_behind_lb, cluster, version=V1, ctl="ctl", lb_port=8042)
    assert v.status == "failed" and "24 of 24 requests" in v.feedback


def test_spread_fails_on_a_crowded_node_and_when_not_converged():
    _, v = grade(orch.spread, Cluster(healthy(layout=(4, 0, 0))), version=V1)
    assert v.status == "failed" and "node1: 4" in v.feedback
    _, v = grade(orch.spread, Cluster({n: [] for n in NODES}), version=V1)
    assert v.status == "failed" and "cannot count" in v.feedback


def test_a_garbled_snapshot_cannot_be_judged():
    class Broken(Cluster):
        def run(self, host: str, full: str) -> CommandResult:
            return CommandResult(full, 0, "[{\"t\": 1}]", "")
    _, v = grade(orch.spread, Broken(), version=V1)
    assert v.status == "error"


# --- disruptive checks: what they do and what they judge ----------------------------------------------------


def test_every_disruptive_check_fails_when_the_api_does_not_answer():
    cluster = Cluster({n: [] for n in NODES})
    cluster.api_status = 0
    for fn, extra in ((orch.crash_replaced, {}), (orch.hung_replaced, {}), (orch.node_loss, {}),
                      (orch.node_return, {}), (orch.scaled, {}), (orch.ctl_restart, {"lb_port": 8042}),
                      (orch.rolling_update, {"lb_port": 8042, "new_version": V2})):
        ctx, v = grade(fn, cluster, version=V1, ctl="ctl", **extra)
        assert v.status == "failed" and "does not answer" in v.feedback, (fn, v.feedback)
        assert ctx.acted == []


def test_crash_replaced_kills_two_replicas_on_two_nodes_and_passes_once_they_are_back():
    cluster = Cluster()
    ctx = context(cluster)

    def heal(c: Cluster) -> None:
        if ctx.acted:  # after the kills: replaced by new sockets
            c.state = healthy(start=10)
    cluster.on_snapshot = heal
    v = evaluate(ctx, orch.crash_replaced, {**COMMON, "version": V1, "ctl": "ctl"})
    assert v.status == "passed", v.feedback
    kills = [a for a in ctx.acted if a[0] == "signal"]
    assert [a[3] for a in kills] == ["KILL", "KILL"] and len({a[1] for a in kills}) == 2
    assert '{"version": "10.0", "replicas": 4, "maxPerNode": 2}' in cluster.puts[0]


def test_crash_replaced_fails_when_the_killed_ones_stay_gone():
    cluster = Cluster()
    ctx = context(cluster)

    def die(c: Cluster) -> None:
        if ctx.acted:
            c.state = healthy(layout=(1, 0, 1))
    cluster.on_snapshot = die
    v = evaluate(ctx, orch.crash_replaced, {**COMMON, "version": V1, "ctl": "ctl", "within": 0.3})
    assert v.status == "failed" and "2 healthy replicas" in v.feedback


def test_hung_replaced_fails_while_the_stopped_one_holds_its_port_and_resumes_it():
    cluster = Cluster()
    ctx = context(cluster)

    def hang(c: Cluster) -> None:
        if ctx.acted:
            c.state["node1"][0]["answer"] = None
    cluster.on_snapshot = hang
    v = evaluate(ctx, orch.hung_replaced, {**COMMON, "version": V1, "ctl": "ctl", "within": 0.3})
    assert v.status == "failed" and "still holds its port" in v.feedback
    assert [a[3] for a in ctx.acted] == ["STOP", "CONT"]


def test_hung_replaced_passes_when_the_stopped_one_is_gone_and_replaced():
    cluster = Cluster()
    ctx = context(cluster)

    def replace(c: Cluster) -> None:
        if ctx.acted:
            c.state = healthy(start=20)
    cluster.on_snapshot = replace
    v = evaluate(ctx, orch.hung_replaced, {**COMMON, "version": V1, "ctl": "ctl"})
    assert v.status == "passed", v.feedback


def test_hung_replaced_cannot_judge_without_the_replicas_process():
    cluster = Cluster()
    ctx = context(cluster)
    ctx._listeners.clear()
    v = evaluate(ctx, orch.hung_replaced, {**COMMON, "version": V1, "ctl": "ctl"})
    assert v.status == "error" and "which process" in v.feedback


def node_loss_run(moves: bool, strays: bool) -> tuple[FakeContext, Any, Any]:
    cluster = Cluster()
    ctx = context(cluster)

    def evolve(c: Cluster) -> None:
        acted = [a[0] for a in ctx.acted]
        if acted == ["pause"] and moves:
            c.state = {"node1": c.state["node1"], "node2": healthy(layout=(0, 2, 0), start=30)["node2"],
                       "node3": healthy(layout=(0, 0, 2), start=40)["node3"]}
        elif acted == ["pause", "unpause"] and moves and not strays:
            c.state = {"node1": [], "node2": c.state["node2"], "node3": c.state["node3"]}
    cluster.on_snapshot = evolve
    args = {**COMMON, "version": V1, "ctl": "ctl", "within": 0.3, "back_within": 0.3}
    loss = evaluate(ctx, orch.node_loss, args)
    back = evaluate(ctx, orch.node_return, args)
    return ctx, loss, back


def test_node_loss_and_return_pass_when_the_replicas_move_and_the_old_ones_stop():
    ctx, loss, back = node_loss_run(moves=True, strays=False)
    assert loss.status == "passed" and "node1 froze" in loss.feedback, loss.feedback
    assert back.status == "passed", back.feedback
    assert ctx.acted == [("pause", "node1"), ("unpause", "node1")]  # one run for both checks


def test_node_loss_fails_when_nothing_moves_and_return_fails_on_duplicates():
    _, loss, back = node_loss_run(moves=False, strays=False)
    assert loss.status == "failed" and "node2: 1, node3: 1" in loss.feedback
    assert back.status == "passed"
    _, loss, back = node_loss_run(moves=True, strays=True)
    assert loss.status == "passed"
    assert back.status == "failed" and "6 healthy replicas" in back.feedback


GOOD_LOAD = {"requests": [[100.0 + i / 25, True, V1, "x", ""] for i in range(300)], "put": {"t": 100.0, "status": 200},
             "late_ms": 3}


def outage(late_ms: int) -> dict[str, Any]:
    """One request in ten through the load balancer fails during the update (a timeout or a refused connection)."""
    why = ["no answer in time", "no connection"]
    return {"requests": [[100.0 + i / 25, i % 10 != 0, "", "", "" if i % 10 else why[i // 10 % 2]] for i in range(300)],
            "put": {"t": 100.0, "status": 200}, "late_ms": late_ms}


def sampled(rows: list[tuple[float, dict[str, list[dict[str, Any]]]]]) -> dict[str, list[dict[str, Any]]]:
    return {n: [{"t": t, "sockets": state[n]} for t, state in rows] for n in NODES}


def test_rolling_update_passes_with_one_surge_replica_at_a_time_and_no_errors():
    cluster = Cluster()
    surge = healthy(V1)
    surge["node2"] = [*surge["node2"], rep(9102, "s", f"{APP}-9", V2)]
    cluster.timelines = sampled([(99.0, healthy(V1)), (100.5, surge), (102.0, healthy(V2, start=50))])
    cluster.load = GOOD_LOAD
    _, v = grade(orch.rolling_update, cluster, version=V1, new_version=V2, ctl="ctl", lb_port=8042)
    assert v.status == "passed" and "at most 5 replicas" in v.feedback, v.feedback


def test_rolling_update_fails_on_an_outage_too_many_replicas_or_no_rollout():
    cluster = Cluster()
    crowd = healthy(V1)
    for n in NODES:
        crowd[n] = [*crowd[n], rep(9150, f"{n}-new", f"{n}-9", V2)]
    cluster.timelines = sampled([(99.0, healthy(V1)), (100.5, crowd), (102.0, healthy(V2, start=50))])
    cluster.load = outage(late_ms=3)
    _, v = grade(orch.rolling_update, cluster, version=V1, new_version=V2, ctl="ctl", lb_port=8042)
    assert v.status == "failed" and "7 replicas listened" in v.feedback and "90.0%" in v.feedback, v.feedback
    assert "the failures: 15 no answer in time, 15 no connection" in v.feedback, v.feedback
    cluster.timelines = sampled([(99.0, healthy(V1)), (101.0, healthy(V1))])
    cluster.load = GOOD_LOAD
    _, v = grade(orch.rolling_update, cluster, version=V1, new_version=V2, ctl="ctl", lb_port=8042)
    assert v.status == "failed" and "0 of 4 replicas ran 10.1" in v.feedback


def test_merge_combines_the_latest_sample_of_every_node():
    reps = orch.parse_samples("node1", [{"t": 1.0, "sockets": [rep(9100, "a", "x", V2)]},
                                        {"t": 3.0, "sockets": []}])
    other = orch.parse_samples("node2", [{"t": 2.0, "sockets": [rep(9100, "b", "y", V1), rep(9101, "c", None)]}])
    spec = orch.Spec(APP, V2, 2, 2)
    assert orch.merge({"node1": reps, "node2": other}, spec) == [(2.0, 3, 1, 1), (3.0, 2, 0, 1)]


def test_ctl_restart_passes_when_nothing_changes_and_fails_on_churn_or_no_api():
    cluster = Cluster()
    cluster.timelines = sampled([(1.0, healthy()), (2.0, healthy())])
    ctx, v = grade(orch.ctl_restart, cluster, version=V1, ctl="ctl", lb_port=8042, after=0.0)
    assert v.status == "passed", v.feedback
    assert ctx.restarted == [("ctl",)]
    assert all(any(p.startswith("/run/ll-orchestrator-stop-") for p in ctx.observe(n).files) for n in NODES)  # type: ignore[attr-defined]
    cluster.timelines = sampled([(1.0, healthy()), (2.0, healthy(start=60))])
    _, v = grade(orch.ctl_restart, cluster, version=V1, ctl="ctl", lb_port=8042, after=0.0)
    assert v.status == "failed" and "stopped or started" in v.feedback
    cluster.timelines = sampled([(1.0, healthy())])
    ctx = context(cluster)
    ctx.on_restart = lambda hosts: setattr(cluster, "api_status", 0)
    v = evaluate(ctx, orch.ctl_restart, {**COMMON, "version": V1, "ctl": "ctl", "lb_port": 8042, "within": 0.5,
                                          "after": 0.0})
    assert v.status == "failed" and "did not both answer" in v.feedback


# --- scaled ---------------------------------------------------------------------------------------------


def _scaling(cluster: Cluster, up: dict[str, list[dict[str, Any]]], down: dict[str, list[dict[str, Any]]]) -> None:
    """The cluster follows the check's PUTs: ``up`` after the PUT of N+1, ``down`` after the PUT of N-1."""
    def follow(c: Cluster) -> None:
        wanted = [int(m) for m in re.findall(r'"replicas": (\d+)', " ".join(c.puts))]
        if wanted and wanted[-1] == 5:
            c.state = up
        elif wanted and wanted[-1] == 3:
            c.state = down
    cluster.on_snapshot = follow


def test_scaled_passes_when_only_the_surplus_starts_or_stops():
    cluster = Cluster()
    before = healthy()  # 4 replicas: node1 2, node2 1, node3 1
    up = {n: list(reps) for n, reps in before.items()}
    up["node3"] = [*up["node3"], rep(9150, "node3-new", f"{APP}-new")]
    down = {n: list(reps) for n, reps in up.items()}
    down["node1"] = down["node1"][:1]
    down["node3"] = down["node3"][:1]
    _scaling(cluster, up, down)
    ctx, v = grade(orch.scaled, cluster, version=V1, ctl="ctl")
    assert v.status == "passed", v.feedback
    assert [re.findall(r'"replicas": (\d+)', p)[0] for p in cluster.puts] == ["4", "5", "3"]
    assert ctx.acted == []  # scaling is asked of the learner's API; the engine does nothing


def test_scaled_fails_when_scaling_up_replaces_the_running_replicas():
    cluster = Cluster()
    _scaling(cluster, healthy(layout=(2, 2, 1), start=20), healthy(layout=(1, 1, 1), start=20))
    _, v = grade(orch.scaled, cluster, version=V1, ctl="ctl")
    assert v.status == "failed" and "scaling up to 5 replaced 4" in v.feedback, v.feedback


def test_scaled_fails_when_scaling_down_starts_the_deployment_over():
    cluster = Cluster()
    before = healthy()
    up = {n: list(reps) for n, reps in before.items()}
    up["node2"] = [*up["node2"], rep(9150, "node2-new", f"{APP}-new")]
    _scaling(cluster, up, healthy(layout=(1, 1, 1), start=40))
    _, v = grade(orch.scaled, cluster, version=V1, ctl="ctl")
    assert v.status == "failed" and "scaling down to 3 started 3 new replica(s)" in v.feedback, v.feedback


def test_scaled_fails_when_the_count_does_not_change():
    cluster = Cluster()  # the state stays at 4 replicas whatever is PUT
    _, v = grade(orch.scaled, cluster, version=V1, ctl="ctl", within=0.3)
    assert v.status == "failed" and "PUT replicas=5 (from 4)" in v.feedback and "4 healthy replicas" in v.feedback, \
        v.feedback


def test_scaled_fails_when_a_scale_down_only_passes_through_the_count_on_its_way_to_new_replicas():
    """Deleting every replica and creating the new count passes a moment where N-1 of the old ones still run:
    the count must hold, and a replica started meanwhile is seen."""
    cluster = Cluster()
    up = {n: list(reps) for n, reps in healthy().items()}
    up["node3"] = [*up["node3"], rep(9150, "node3-new", f"{APP}-new")]
    passing = {"node1": up["node1"][:1], "node2": up["node2"], "node3": up["node3"][:1]}  # 3 of the old ones
    later = iter([passing, passing, healthy(layout=(1, 1, 1), start=40)])

    def follow(c: Cluster) -> None:
        wanted = [int(m) for m in re.findall(r'"replicas": (\d+)', " ".join(c.puts))]
        if wanted and wanted[-1] == 5:
            c.state = up
        elif wanted and wanted[-1] == 3:
            c.state = next(later, c.state)
    cluster.on_snapshot = follow
    _, v = grade(orch.scaled, cluster, version=V1, ctl="ctl")
    assert v.status == "failed" and "scaling down to 3 started 3 new replica(s)" in v.feedback, v.feedback


def test_rolling_update_cannot_judge_failed_requests_when_the_load_itself_was_kept_from_running():
    """The probe sent a request 0.9 s after its time: the machine stalled, and the load balancer with it. Its
    failed requests are the machine's (an error, graded again), while a clean run under the same stall passes."""
    cluster = Cluster()
    surge = healthy(V1)
    surge["node2"] = [*surge["node2"], rep(9102, "s", f"{APP}-9", V2)]
    cluster.timelines = sampled([(99.0, healthy(V1)), (100.5, surge), (102.0, healthy(V2, start=50))])
    cluster.load = outage(late_ms=900)
    _, v = grade(orch.rolling_update, cluster, version=V1, new_version=V2, ctl="ctl", lb_port=8042)
    assert v.status == "error" and "0.9 s after its time" in v.feedback, v.feedback
    cluster.load = {**GOOD_LOAD, "late_ms": 900}
    _, v = grade(orch.rolling_update, cluster, version=V1, new_version=V2, ctl="ctl", lb_port=8042)
    assert v.status == "passed", v.feedback


def test_the_real_load_script_says_why_each_request_failed_and_how_late_it_ran():
    """LOAD_SCRIPT itself against a local app server: good answers, then the server gone (no connection); its
    lateness is small when it starts before t0 and counts the wait when t0 had already passed."""
    class App(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"app": APP, "version": V1, "id": "r1"}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), App)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"

    def load(t0: float) -> dict[str, Any]:
        cfg = {"url": url, "app": APP, "t0": t0, "duration": 0.4, "rate": 10.0, "timeout": 2.0}
        out = subprocess.run([sys.executable, "-c", orch.LOAD_SCRIPT, json.dumps(cfg)], capture_output=True,
                             text=True, timeout=30, check=True).stdout
        return json.loads(out)

    try:
        on_time = load(time.time() + 0.5)
        overdue = load(time.time() - 1.0)
    finally:
        server.shutdown()
        server.server_close()
    assert [r[1:] for r in on_time["requests"]] == [[True, V1, "r1", ""]] * 4
    assert on_time["late_ms"] < orch.MAX_LATE_MS and overdue["late_ms"] >= 1000
    gone = load(time.time() + 0.3)
    assert [r[1] for r in gone["requests"]] == [False] * 4 and {r[4] for r in gone["requests"]} == {"no connection"}
