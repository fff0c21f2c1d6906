"""The incident of comm-4-incident-rca: a retry storm in sre-3's order path, replayed from the seed alone.

One model, two readers: the environment's setup renders it (``python3 incident.py ROLE key=value ...``:
``edge`` writes haproxy's log, ``orders`` the orders log, ``prometheus`` writes the metrics as OpenMetrics
text and backfills them into Prometheus's TSDB with promtool), and the grader (graders/rca.py loads this
file) reads the truth from it: the times, the trigger, the mechanisms, the impact. Nothing depends on the
wall clock or on when the environment started: every timestamp and every request is a function of the
parameters, so the learner's environment and the fresh one grading re-runs the notebook against hold the
same incident, byte for byte. Randomness is SHA-256 of the parameters (stable across Python versions).

The skewed host writes its own log with its clock ``skew_s`` seconds off (ahead when positive); Prometheus's
timestamps are true time.

Standard library only (it runs in the lab image and in the grading process).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

#: 2026-10-05T00:00:00Z: the incident happens within the 14 days after it.
BASE = 1791158400
TRIGGERS = ("dependency-slowdown", "capacity-loss", "traffic-surge", "bad-deploy")
MECHANISMS = ("retry-amplification", "queue-saturation", "dead-work", "health-check-ejection",
              "cache-stampede", "connection-exhaustion", "thundering-herd", "clock-skew")
#: The parameters the model reads (env.yaml params of the ``incident`` environment).
PARAMS = ("start_min", "start_sec", "trigger", "mechanism", "skewed_host", "skew_s", "detect_after",
          "mitigate_after", "recover_after", "trigger_s", "rate")
TRIGGER_LEAD = 15  # the trigger starts this many seconds before the first failed order
STEP = 15  # Prometheus's sample interval in the backfill
BEFORE, AFTER = 600, 600  # seconds of logs around the incident


@dataclass(frozen=True)
class Request:
    """One order at the edge: true arrival (epoch s), id, status, termination state, attempts at inventory,
    whether it reached orders, total ms."""

    t: float
    rid: str
    status: int
    term: str
    attempts: int
    reached_orders: bool
    ms: int


@dataclass(frozen=True)
class Incident:
    params: Mapping[str, str | int]

    def _int(self, name: str) -> int:
        return int(self.params[name])

    # ---- the truth -----------------------------------------------------------------------------
    @property
    def start(self) -> int:
        """The first failed order (true epoch seconds)."""
        return BASE + 60 * self._int("start_min") + self._int("start_sec")

    @property
    def detected(self) -> int:
        """The page: the availability alert starts firing."""
        return self.start + self._int("detect_after")

    @property
    def mitigated(self) -> int:
        """orders reloads the settings that stop the storm (retries off, a concurrency limit, deadlines)."""
        return self.start + self._int("mitigate_after")

    @property
    def end(self) -> int:
        """Orders succeed again: no failed order from here on."""
        return self.mitigated + self._int("recover_after")

    @property
    def trigger(self) -> str:
        return str(self.params["trigger"])

    @property
    def trigger_window(self) -> tuple[int, int]:
        start = self.start - TRIGGER_LEAD
        return start, start + self._int("trigger_s")

    @property
    def mechanisms(self) -> frozenset[str]:
        return frozenset({"retry-amplification", "queue-saturation", str(self.params["mechanism"])})

    @property
    def skewed_host(self) -> str:
        return str(self.params["skewed_host"])

    @property
    def skew(self) -> int:
        """Seconds the skewed host's clock was ahead of true time (negative: behind)."""
        return int(self.params["skew_s"])

    def clock(self, host: str) -> int:
        return self.skew if host == self.skewed_host else 0

    @property
    def window(self) -> tuple[int, int]:
        return self.start - BEFORE, self.end + AFTER

    @property
    def failed_orders(self) -> int:
        """The impact: orders the edge did not answer 200 between the start and the end."""
        return sum(1 for r in self.requests() if r.status != 200 and self.start <= r.t < self.end)

    # ---- randomness ----------------------------------------------------------------------------
    @functools.cached_property
    def _key(self) -> bytes:
        return json.dumps([[k, str(self.params[k])] for k in PARAMS]).encode()

    def u(self, tag: str, i: int) -> float:
        """A number in [0, 1) fixed by the parameters, ``tag`` and ``i``."""
        digest = hashlib.sha256(self._key + f"|{tag}|{i}".encode()).digest()
        return int.from_bytes(digest[:7], "big") / float(1 << 56)

    # ---- the storm ---------------------------------------------------------------------------
    def failing(self, t: float) -> float:
        """The share of orders failing at true time ``t``."""
        if t < self.start or t >= self.end:
            return 0.0
        if t < self.mitigated:
            return min(0.85, 0.3 + 0.55 * (t - self.start) / 60)
        return 0.6 * (1 - (t - self.mitigated) / (self.end - self.mitigated))

    def ejected(self, t: float) -> bool:
        """Whether haproxy has ejected orders (health checks time out) at ``t``: 20 s of every 60 s of the storm."""
        if self.params["mechanism"] != "health-check-ejection":
            return False
        return self.start + 30 <= t < self.mitigated and (t - self.start - 30) % 60 < 20

    def requests(self) -> tuple[Request, ...]:
        """Every order at the edge in the logged window, by arrival."""
        return self._requests

    @functools.cached_property
    def _requests(self) -> tuple[Request, ...]:
        return tuple(self._generate())

    def _generate(self) -> Iterator[Request]:
        rate = self._int("rate")
        w0, w1 = self.window
        for k in range((w1 - w0) * rate):
            t = round(w0 + k / rate + 0.08 * self.u("jitter", k), 3)
            rid = hashlib.sha256(f"{self.u('id', k)}".encode()).hexdigest()[:10]
            healthy = 38 + int(30 * self.u("ms", k))
            if self.u("fail", k) >= self.failing(t):
                storm = self.start <= t < self.mitigated
                attempts = 1 + (1 if storm and self.u("retry", k) < 0.5 else 0)
                ms = healthy + (int(300 * self.u("slow", k)) if self.start <= t < self.end else 0)
                yield Request(t, rid, 200, "----", attempts, True, ms)
            elif self.ejected(t):
                yield Request(t, rid, 503, "SC--", 0, False, 0)
            elif self.params["mechanism"] == "dead-work" and self.u("shed", k) < 0.35:
                yield Request(t, rid, 503, "sQ--", 0, False, 1000)
            else:
                storm = t < self.mitigated
                yield Request(t, rid, 504, "sH--", 3 if storm else 1, True, 2000)

    # ---- rendering -----------------------------------------------------------------------------
    def edge_log(self) -> Iterator[str]:
        """haproxy's log on edge, in edge's clock."""
        skew = self.clock("edge")
        events: list[tuple[float, str]] = []
        for n, r in enumerate(self.requests()):
            at = r.t + skew
            port = 30000 + n % 30000
            if r.term == "SC--":
                timers, server = "0/-1/-1/-1/0", "<NOSRV>"
            elif r.term == "sQ--":
                timers, server = "0/1000/-1/-1/1000", "orders"
            elif r.status == 504:
                timers, server = "0/0/0/-1/2001", "orders"
            else:
                timers, server = f"0/0/0/{r.ms - 1}/{r.ms}", "orders"
            size = {200: 187, 503: 217, 504: 198}[r.status]
            events.append((at, f"{_syslog(at)} edge haproxy[412]: 10.89.0.7:{port} [{_clf(at)}] web "
                               f"orders/{server} {timers} {r.status} {size} - - {r.term} "
                               f'"GET /order?id={r.rid} HTTP/1.1"'))
        if self.params["mechanism"] == "health-check-ejection":
            t = self.start + 30
            while t < self.mitigated:
                down, up = t + skew, min(t + 20, self.mitigated) + skew
                head = f"{_syslog(down)} edge haproxy[412]:"
                events.append((down - 0.0005, f"{head} Server orders/orders is DOWN, reason: Layer7 timeout, check "
                                              "duration: 2001ms. 0 active and 0 backup servers left. 41 sessions "
                                              "active, 0 requeued, 0 remaining in queue."))
                events.append((down - 0.0004, f"{head} backend orders has no server available!"))
                events.append((up - 0.0005, f"{_syslog(up)} edge haproxy[412]: Server orders/orders is UP, reason: "
                                            "Layer7 check passed, code: 200, check duration: 640ms. 1 active and 0 "
                                            "backup servers online. 0 sessions requeued, 0 total in queue."))
                t += 60
        events.sort(key=lambda e: e[0])
        return (line for _, line in events)

    def orders_log(self) -> Iterator[str]:
        """The orders service's log on orders, in orders' clock."""
        skew = self.clock("orders")
        events: list[tuple[float, str]] = []
        for r in self.requests():
            if not r.reached_orders:
                continue
            at = r.t + 0.002 + skew
            retried = f" retries={r.attempts - 1}" if r.attempts > 1 else ""
            events.append((at, f"{_iso(at)} orders[233]: order id={r.rid} status={r.status} ms={r.ms}{retried}"))
        at = self.mitigated + skew
        events.append((at, f"{_iso(at)} orders[233]: settings reloaded from /etc/orders/resilience.toml: "
                           "max_retries 2 -> 0, max_in_flight 0 -> 24, deadline.propagate false -> true"))
        events.sort(key=lambda e: e[0])
        return (line for _, line in events)

    def openmetrics(self) -> Iterator[str]:
        """Every series Prometheus holds, as OpenMetrics text (true time), for promtool's backfill."""
        w0, w1 = self.window[0] - 1200, self.window[1]
        steps = list(range(w0 - w0 % STEP, w1, STEP))
        reqs = self.requests()
        counters: dict[str, list[float]] = {k: [0.0] * len(steps) for k in (
            "edge", "2xx", "5xx", "orders", "retries", "received", "dead", "skipped")}
        rate = self._int("rate")
        w_start = self.window[0]
        for step_i, ts in enumerate(steps):
            # requests before the logged window count at the steady rate (all answered 200)
            before = max(0, min(ts, w_start) - steps[0]) * rate
            counters["edge"][step_i] = counters["2xx"][step_i] = counters["orders"][step_i] = before
            counters["received"][step_i] = before
        j = 0
        run = {k: 0.0 for k in counters}
        for step_i, ts in enumerate(steps):
            while j < len(reqs) and reqs[j].t <= ts:
                r = reqs[j]
                run["edge"] += 1
                run["2xx" if r.status == 200 else "5xx"] += 1
                run["orders"] += 1 if r.reached_orders else 0
                run["retries"] += max(0, r.attempts - 1)
                run["received"] += r.attempts
                if r.status == 504 and r.t < self.mitigated:
                    run["dead" if self.params["mechanism"] == "dead-work" else "skipped"] += r.attempts
                j += 1
            for k in counters:
                counters[k][step_i] += run[k]
        w_lo, w_hi = self.trigger_window
        series: list[tuple[str, str, str, str, list[float]]] = [
            ("haproxy_frontend_http_requests", "counter", "HTTP requests received by the frontend", '{proxy="web"}',
             counters["edge"]),
            ("haproxy_frontend_http_responses", "counter", "HTTP responses by class", '{proxy="web",code="2xx"}',
             counters["2xx"]),
            ("haproxy_frontend_http_responses", "counter", "", '{proxy="web",code="5xx"}', counters["5xx"]),
            ("orders_requests", "counter", "Orders received from the edge", "", counters["orders"]),
            ("orders_retries", "counter", "Retries of calls to inventory", "", counters["retries"]),
            ("inventory_requests_received", "counter", "Requests received on /reserve (every attempt)", "",
             counters["received"]),
            ("inventory_dead_work", "counter", "Requests served after their caller had given up", "",
             counters["dead"]),
            ("inventory_expired_skipped", "counter", "Requests dropped unworked: their X-Deadline had passed", "",
             counters["skipped"]),
        ]
        out: list[str] = []
        typed: set[str] = set()
        for name, kind, help_, labels, values in series:
            if name not in typed:
                out += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
                typed.add(name)
            out += [f"{name}_total{labels} {v:g} {ts}" for ts, v in zip(steps, values, strict=True)]
        gauges = [
            ("inventory_queue_length", "Requests waiting for a worker", "", lambda t: self._queue(t)),
            ("inventory_workers", "Workers serving requests", "",
             lambda t: 4 if self.trigger == "capacity-loss" and w_lo <= t < w_hi else 8),
            ("inventory_service_seconds", "Mean time a worker spends on one request", "",
             lambda t: 0.41 if self.trigger == "dependency-slowdown" and w_lo <= t < w_hi else 0.04),
            ("haproxy_backend_active_servers", "Servers in service", '{proxy="orders"}',
             lambda t: 0 if self.ejected(t) else 1),
            ("orders_config_reloads", "Settings reloaded", "", lambda t: 1 if t >= self.mitigated else 0),
        ]
        for name, help_, labels, fn in gauges:
            kind = "counter" if name == "orders_config_reloads" else "gauge"
            out += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
            suffix = "_total" if kind == "counter" else ""
            out += [f"{name}{suffix}{labels} {fn(ts):g} {ts}" for ts in steps]
        out += ["# HELP ALERTS Alerts of the orders service", "# TYPE ALERTS gauge"]
        alert = 'ALERTS{alertname="OrdersAvailabilityLow",alertstate="%s",severity="page"} 1 %d'
        out += [alert % ("pending", ts) for ts in steps if self.detected - 60 <= ts < self.detected]
        out += [alert % ("firing", ts) for ts in steps if self.detected <= ts < self.end + 120]
        out.append("# EOF")
        return iter(out)

    def _queue(self, t: float) -> float:
        if t < self.start - TRIGGER_LEAD or t >= self.end:
            return float(int(3 * self.u("q", int(t))))
        if t < self.mitigated:
            return float(min(400, int(8 * (t - self.start + TRIGGER_LEAD))))
        return float(int(400 * (1 - (t - self.mitigated) / (self.end - self.mitigated))))


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(t))) + f".{round(t % 1 * 1000) % 1000:03d}Z"


def _syslog(t: float) -> str:
    g = time.gmtime(int(t))
    return time.strftime("%b ", g) + f"{g.tm_mday:2d} " + time.strftime("%H:%M:%S", g)


def _clf(t: float) -> str:
    return time.strftime("%d/%b/%Y:%H:%M:%S", time.gmtime(int(t))) + f".{round(t % 1 * 1000) % 1000:03d}"


def _write(path: str, lines: Iterator[str]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        for line in lines:
            fh.write(line + "\n")


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[0] not in ("edge", "orders", "prometheus"):
        sys.exit("usage: incident.py edge|orders|prometheus key=value ...")
    params = dict(a.split("=", 1) for a in argv[1:])
    missing = [p for p in PARAMS if p not in params]
    if missing:
        sys.exit(f"incident.py: missing parameters {', '.join(missing)}")
    incident = Incident(params)
    if argv[0] == "edge":
        _write("/var/log/haproxy.log", incident.edge_log())
    elif argv[0] == "orders":
        _write("/var/log/orders.log", incident.orders_log())
    else:
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "incident.om")
            _write(src, incident.openmetrics())
            subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", src,
                            "/var/lib/prometheus/data"], check=True, stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    main(sys.argv[1:])
