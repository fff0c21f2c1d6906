"""comm-4-incident-rca: the incident model (environments/incident/images/replay/incident.py) and the front-matter
checks (graders/rca.py), without Docker.

The model is what both the environment (its logs and metrics) and the checks (the truth) read, so the tests check
that what a learner can read from the rendered evidence is the truth the checks hold, that rendering depends on
the parameters alone (never the clock: the grading environment must hold the learner's incident), and that each
check rejects exactly its own kind of wrong front matter.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import statistics
import time
from typing import Any

import pytest
from graders import rca

from ladderlab.testing import FakeContext

PARAMS: list[dict[str, str | int]] = [
    {"start_min": 5000, "start_sec": 17, "trigger": "capacity-loss", "mechanism": "health-check-ejection",
     "skewed_host": "orders", "skew_s": "-300", "detect_after": 150, "mitigate_after": 700, "recover_after": 120,
     "trigger_s": 200, "rate": "5"},
    {"start_min": 17, "start_sec": 59, "trigger": "dependency-slowdown", "mechanism": "dead-work",
     "skewed_host": "edge", "skew_s": "180", "detect_after": 90, "mitigate_after": 480, "recover_after": 240,
     "trigger_s": 300, "rate": "4"},
]
CHECKS = ("timeline", "clock_skew", "trigger", "mechanisms", "impact", "action_items")


def iso(t: float) -> str:
    return dt.datetime.fromtimestamp(round(t), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def right(params: dict[str, str | int]) -> dict[str, Any]:
    """The front matter of the true incident."""
    inc = rca.truth(params)
    return {
        "start": iso(inc.start), "detected": iso(inc.detected), "mitigated": iso(inc.mitigated), "end": iso(inc.end),
        "clock_skew": {"host": inc.skewed_host, "seconds": inc.skew},
        "trigger": inc.trigger,
        "mechanisms": sorted(inc.mechanisms),
        "impact": {"failed_orders": inc.failed_orders},
        "action_items": [{"action": f"make {m} impossible next time", "mechanism": m, "owner": "team"}
                         for m in sorted(inc.mechanisms)],
    }


def grade(params: dict[str, str | int], fm: Any) -> dict[str, Any]:
    text = fm if isinstance(fm, str) else json.dumps(fm)
    ctx = FakeContext(params=params, answers={"rca": text})
    return {name: getattr(rca, name)(ctx) for name in CHECKS}


def failed(params: dict[str, str | int], fm: Any) -> list[str]:
    return sorted(name for name, v in grade(params, fm).items() if v.status != "passed")


@pytest.mark.parametrize("params", PARAMS)
def test_the_true_front_matter_passes_every_check(params):
    assert failed(params, right(params)) == []
    as_yaml = "---\n" + "\n".join(f"{k}: {json.dumps(v)}" for k, v in right(params).items()) + "\n---\n"
    assert failed(params, as_yaml) == []


@pytest.mark.parametrize("params", PARAMS)
def test_each_wrong_field_fails_only_its_check(params):
    inc = rca.truth(params)
    cases: list[tuple[str, dict[str, Any]]] = [
        ("timeline", {"start": iso(inc.start + inc.skew)} if inc.skewed_host == "edge" else
         {"mitigated": iso(inc.mitigated + inc.skew)}),
        ("timeline", {"end": iso(inc.end + 61)}),
        ("clock_skew", {"clock_skew": {"host": inc.skewed_host, "seconds": -inc.skew}}),
        ("clock_skew", {"clock_skew": {"host": "edge" if inc.skewed_host == "orders" else "orders",
                                       "seconds": inc.skew}}),
        ("trigger", {"trigger": "traffic-surge"}),
        ("trigger", {"trigger": "retries"}),
        ("impact", {"impact": {"failed_orders": round(inc.failed_orders * 1.11)}}),
        ("impact", {"impact": {"failed_orders": round(inc.failed_orders * 0.89)}}),
    ]
    fm = right(params)
    two = sorted(inc.mechanisms - {"queue-saturation"})
    cases.append(("mechanisms", {"mechanisms": two, "action_items": [i for i in fm["action_items"]
                                                                     if i["mechanism"] in two]}))
    cases.append(("action_items", {"action_items": fm["action_items"] + [
        {"action": "put a cache in front", "mechanism": "cache-stampede"}]}))
    cases.append(("action_items", {"action_items": fm["action_items"][1:]}))
    cases.append(("action_items", {"action_items": [dict(fm["action_items"][0], action="fix it"),
                                                    *fm["action_items"][1:]]}))
    for check, change in cases:
        assert failed(params, {**fm, **change}) == [check], (check, change)
    within = {"start": iso(inc.start + 59), "impact": {"failed_orders": round(inc.failed_orders * 1.09)},
              "clock_skew": {"host": inc.skewed_host, "seconds": inc.skew + 19}}
    assert failed(params, {**fm, **within}) == []


def test_feedback_never_gives_the_truth_away():
    params = PARAMS[0]
    inc = rca.truth(params)
    fm = right(params)
    wrong = {**fm, "start": iso(inc.start + 600), "trigger": "bad-deploy", "mechanisms": ["dead-work"],
             "impact": {"failed_orders": 1}, "clock_skew": {"host": "orders", "seconds": 0}}
    text = " ".join(v.feedback for v in grade(params, wrong).values())
    for secret in (iso(inc.start), inc.trigger, "health-check-ejection", str(inc.failed_orders), str(inc.skew)):
        assert secret not in text


def test_unreadable_or_missing_front_matter_fails_with_a_reason():
    params = PARAMS[0]
    assert all(v.status == "failed" and "no answer 'rca'" in v.feedback
               for v in (getattr(rca, n)(FakeContext(params=params)) for n in CHECKS))
    for text, says in (("start: [unclosed", "not YAML"), ("- a list", "mapping"), ("x" * 10_001, "longer")):
        assert all(v.status == "failed" and says in v.feedback for v in grade(params, text).values()), says
    bad_time = {**right(params), "start": "yesterday"}
    verdict = grade(params, bad_time)["timeline"]
    assert verdict.status == "failed" and "ISO 8601" in verdict.feedback
    assert grade(params, {**right(params), "impact": {"failed_orders": True}})["impact"].status == "failed"


# ---- the model: the evidence it renders holds the truth the checks read --------------------------

def _edge(inc: Any) -> list[tuple[float, str, int]]:
    out = []
    for line in inc.edge_log():
        m = re.search(r"\[(\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d\.\d{3})\] web \S+ \S+ (\d{3}) .*id=(\w+)", line)
        if m:
            at = dt.datetime.strptime(m[1], "%d/%b/%Y:%H:%M:%S.%f").replace(tzinfo=dt.UTC).timestamp()
            out.append((at, m[3], int(m[2])))
    return out


@pytest.mark.parametrize("params", PARAMS)
def test_the_rendered_evidence_holds_the_truth(params):
    inc = rca.truth(params)
    edge = _edge(inc)
    orders: dict[str, float] = {}
    reload_at = None
    for line in inc.orders_log():
        at = dt.datetime.fromisoformat(line.split()[0].replace("Z", "+00:00")).timestamp()
        m = re.search(r" order id=(\w+) ", line)
        if m:
            orders[m[1]] = at
        elif "settings reloaded" in line:
            reload_at = at
    edge_skew, orders_skew = inc.clock("edge"), inc.clock("orders")
    fails = [at - edge_skew for at, _, status in edge if status != 200]
    assert abs(fails[0] - inc.start) < 2 and abs(fails[-1] - inc.end) < 60
    assert len(fails) == inc.failed_orders  # every failure of the log lies within the incident
    offset = statistics.median(orders[rid] - at for at, rid, _ in edge if rid in orders)
    assert abs(offset - (orders_skew - edge_skew)) < 0.1
    assert reload_at is not None and abs(reload_at - orders_skew - inc.mitigated) < 1
    # The metrics (true time) agree: the page, the reload, the 5xx counter's growth over the incident.
    samples: dict[str, list[tuple[int, float]]] = {}
    for line in inc.openmetrics():
        if not line.startswith("#"):
            series, value, ts = line.rsplit(" ", 2)
            samples.setdefault(series, []).append((int(ts), float(value)))
    firing = samples['ALERTS{alertname="OrdersAvailabilityLow",alertstate="firing",severity="page"}']
    assert 0 <= firing[0][0] - inc.detected < 15
    reloads = samples["orders_config_reloads_total"]
    assert 0 <= next(t for t, v in reloads if v >= 1) - inc.mitigated < 15
    errors = dict(samples['haproxy_frontend_http_responses_total{proxy="web",code="5xx"}'])
    assert max(errors.values()) == inc.failed_orders
    workers = [v for _, v in samples["inventory_workers"]]
    assert (min(workers) < max(workers)) == (inc.trigger == "capacity-loss")
    assert any("is DOWN" in line for line in inc.edge_log()) == ("health-check-ejection" in inc.mechanisms)
    assert (max(v for _, v in samples["inventory_dead_work_total"]) > 0) == ("dead-work" in inc.mechanisms)


def test_rendering_depends_on_the_parameters_alone(monkeypatch):
    """The grading environment is a fresh one: it must hold the learner's incident, whenever it starts."""

    def digest(params: dict[str, str | int]) -> str:
        inc = rca.model().Incident(dict(params))
        h = hashlib.sha256()
        for part in (inc.edge_log(), inc.orders_log(), inc.openmetrics()):
            for line in part:
                h.update(line.encode() + b"\n")
        return h.hexdigest()

    first = digest(PARAMS[0])
    monkeypatch.setattr(time, "time", lambda: 2_000_000_000.0)
    assert digest(PARAMS[0]) == first
    assert digest({**PARAMS[0], "skew_s": "300"}) != first


def test_the_model_loads_once_for_checks_in_parallel_gradings(monkeypatch):
    """Gradings run their checks in threads at once: none may see the model half loaded (a self-test once saw
    "module has no attribute 'Incident'")."""
    import sys
    import threading

    monkeypatch.setattr(rca, "_MODEL", [])
    monkeypatch.delitem(sys.modules, "_ladderlab_incident_model", raising=False)
    start = threading.Barrier(16)
    errors: list[BaseException] = []

    def load() -> None:
        start.wait()
        try:
            rca.model().Incident  # noqa: B018
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=load) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
