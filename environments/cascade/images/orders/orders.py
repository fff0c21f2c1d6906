"""orders: takes an order at GET /order?id=ID and reserves it with the inventory service.

Every resilience setting lives in /etc/orders/resilience.toml (see the comments there). Reload after
editing it: `orders-reload` checks the file and sends SIGHUP; a file that does not check is refused and
the running settings stay. `python3 orders.py --check FILE` checks a file.

Answers: 200 reserved; 503 shed (concurrency limit, open circuit breaker, retry refused after a 5xx);
504 the deadline passed or every attempt timed out; 502 inventory unreachable.

GET /metrics: the same counters in Prometheus's text format (they live as long as the process: a reload
keeps them); GET /stats: a JSON summary of them.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import random
import signal
import sys
import time
import tomllib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

CONFIG = os.environ.get("ORDERS_CONFIG", "/etc/orders/resilience.toml")
PORT = int(os.environ.get("ORDERS_PORT", "8080"))
RETRY_ON = {"timeout", "5xx", "connect"}


@dataclass
class Settings:
    url: str = "http://inventory:8081/reserve"
    attempt_timeout_ms: float = 1000
    max_retries: int = 0
    retry_on: list[str] = field(default_factory=lambda: ["timeout"])
    backoff_ms: float = 0
    backoff_max_ms: float = 1000
    jitter: bool = False
    budget_ratio: float = 0.0
    budget_window_s: float = 10.0
    propagate_deadline: bool = False
    max_in_flight: int = 0
    breaker_enabled: bool = False
    breaker_failure_ratio: float = 0.5
    breaker_window: int = 20
    breaker_min_calls: int = 10
    breaker_open_ms: float = 1000


def load(path: str) -> Settings:
    """Settings from the TOML file; ValueError names what is wrong."""
    with open(path, "rb") as fh:
        raw = tomllib.load(fh)
    known = {"dependency": {"url"}, "timeouts": {"attempt_timeout_ms"},
             "retries": {"max_retries", "retry_on", "backoff_ms", "backoff_max_ms", "jitter", "budget_ratio",
                         "budget_window_s"},
             "deadline": {"propagate"}, "concurrency": {"max_in_flight"},
             "circuit_breaker": {"enabled", "failure_ratio", "window", "min_calls", "open_ms"}}
    s = Settings()
    for section, values in raw.items():
        if section not in known or not isinstance(values, dict):
            raise ValueError(f"unknown section [{section}] (known: {', '.join(known)})")
        for key, value in values.items():
            if key not in known[section]:
                raise ValueError(f"unknown setting {section}.{key} (known: {', '.join(sorted(known[section]))})")
            name = {"propagate": "propagate_deadline", "enabled": "breaker_enabled",
                    "failure_ratio": "breaker_failure_ratio", "window": "breaker_window",
                    "min_calls": "breaker_min_calls", "open_ms": "breaker_open_ms"}.get(key, key)
            default = getattr(s, name)
            if isinstance(default, bool):
                if not isinstance(value, bool):
                    raise ValueError(f"{section}.{key} must be true or false")
            elif isinstance(default, (int, float)) and not isinstance(default, bool):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                    raise ValueError(f"{section}.{key} must be a number >= 0")
                if isinstance(default, int) and not isinstance(default, float):
                    value = int(value)
            elif isinstance(default, list):
                if not isinstance(value, list) or not set(value) <= RETRY_ON:
                    raise ValueError(f"{section}.{key} must be a list of {', '.join(sorted(RETRY_ON))}")
            elif not isinstance(value, str):
                raise ValueError(f"{section}.{key} must be a string")
            setattr(s, name, value)
    if s.attempt_timeout_ms <= 0:
        raise ValueError("timeouts.attempt_timeout_ms must be > 0")
    if not 0 < s.breaker_failure_ratio <= 1:
        raise ValueError("circuit_breaker.failure_ratio must be in (0, 1]")
    if s.breaker_window < 1 or s.budget_window_s <= 0:
        raise ValueError("circuit_breaker.window and retries.budget_window_s must be > 0")
    return s


class Breaker:
    """Closed: count the last ``window`` outcomes; open when at least ``min_calls`` of them are in and the
    failure share reaches the ratio. Open: refuse for ``open_ms``, then half-open: one trial call; its
    success closes, its failure opens again."""

    def __init__(self, s: Settings) -> None:
        self.s = s
        self.outcomes: collections.deque[bool] = collections.deque(maxlen=s.breaker_window)
        self.opened_at: float | None = None
        self.trial = False

    def allow(self) -> bool:
        if not self.s.breaker_enabled or self.opened_at is None:
            return True
        if (time.monotonic() - self.opened_at) * 1000 < self.s.breaker_open_ms or self.trial:
            return False
        self.trial = True
        return True

    def record(self, success: bool) -> None:
        if not self.s.breaker_enabled:
            return
        if self.opened_at is not None:
            if self.trial:
                self.trial = False
                if success:
                    self.opened_at = None
                    self.outcomes.clear()
                else:
                    self.opened_at = time.monotonic()
            return
        self.outcomes.append(success)
        failures = self.outcomes.count(False)
        if len(self.outcomes) >= self.s.breaker_min_calls and failures >= self.s.breaker_failure_ratio * len(self.outcomes):
            self.opened_at = time.monotonic()


class Budget:
    """Retries allowed within ``budget_ratio`` x the requests of the last ``budget_window_s`` seconds
    (ratio 0: no budget, every request may use all its retries)."""

    def __init__(self, s: Settings) -> None:
        self.s = s
        self.requests: collections.deque[float] = collections.deque()
        self.retries: collections.deque[float] = collections.deque()

    def _trim(self, now: float) -> None:
        for q in (self.requests, self.retries):
            while q and q[0] < now - self.s.budget_window_s:
                q.popleft()

    def request(self) -> None:
        self.requests.append(time.monotonic())

    def may_retry(self) -> bool:
        if self.s.budget_ratio <= 0:
            return True
        now = time.monotonic()
        self._trim(now)
        if len(self.retries) + 1 > self.s.budget_ratio * len(self.requests):
            return False
        self.retries.append(now)
        return True


class State:
    def __init__(self, s: Settings) -> None:
        self.s = s
        self.breaker = Breaker(s)
        self.budget = Budget(s)
        self.in_flight = 0


#: Upper bounds (seconds) of the request duration histogram's buckets.
BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)


class Metrics:
    """What orders did since it started (a reload keeps it: Prometheus counters only grow)."""

    def __init__(self) -> None:
        self.requests = 0                                     # GET /order received
        self.responses = collections.Counter[int]()           # ... answered, by status
        self.upstream = collections.Counter[str]()            # calls to inventory, by outcome
        self.upstream_in_flight = 0
        self.retries = 0                                      # calls after the first one of a request
        self.retries_denied = 0                               # retries the budget refused
        self.shed = collections.Counter[str]()                # answered at once: "concurrency", "breaker"
        self.buckets = [0] * len(BUCKETS)
        self.duration_sum = 0.0

    def observe(self, status: int, seconds: float) -> None:
        self.responses[status] += 1
        self.duration_sum += seconds
        for i, bound in enumerate(BUCKETS):
            if seconds <= bound:
                self.buckets[i] += 1

    def stats(self, st: State) -> dict[str, Any]:
        return {"requests": self.requests, "attempts": sum(self.upstream.values()), "retries": self.retries,
                "retries_denied": self.retries_denied, "shed": self.shed["concurrency"],
                "breaker_refused": self.shed["breaker"], "in_flight": st.in_flight,
                "breaker": "closed" if st.breaker.opened_at is None else "open"}

    def exposition(self, st: State) -> str:
        """The Prometheus text format (version 0.0.4)."""
        out: list[str] = []

        def family(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
            out.extend((f"# HELP {name} {help_}", f"# TYPE {name} {kind}"))
            out.extend(f"{name}{labels} {value}" for labels, value in samples)

        family("orders_requests_total", "counter", "Orders received (GET /order), counted when they arrive.",
               [("", self.requests)])
        family("orders_responses_total", "counter", "Orders answered, by HTTP status.",
               [(f'{{code="{code}"}}', self.responses[code]) for code in sorted({200, 502, 503, 504, *self.responses})])
        family("orders_in_flight", "gauge", "Orders being worked on now.", [("", st.in_flight)])
        family("orders_upstream_requests_total", "counter",
               "Calls to inventory (first attempts and retries), by outcome: ok, 5xx, timeout, connect.",
               [(f'{{outcome="{o}"}}', self.upstream[o]) for o in ("ok", "5xx", "timeout", "connect")])
        family("orders_upstream_in_flight", "gauge", "Calls to inventory waiting for an answer now.",
               [("", self.upstream_in_flight)])
        family("orders_retries_total", "counter", "Retries: calls to inventory after the first one of an order.",
               [("", self.retries)])
        family("orders_retries_denied_total", "counter", "Retries the retry budget refused.",
               [("", self.retries_denied)])
        family("orders_shed_total", "counter", "Orders refused at once, by reason: concurrency, breaker.",
               [(f'{{reason="{r}"}}', self.shed[r]) for r in ("concurrency", "breaker")])
        family("orders_circuit_breaker_open", "gauge", "1 while the circuit breaker is open.",
               [("", 0 if st.breaker.opened_at is None else 1)])
        count = sum(self.responses.values())  # the histogram's suffixes go in the labels' slot: name_bucket{le=...}
        family("orders_request_duration_seconds", "histogram", "Time from an order's arrival to its answer.",
               [(f'_bucket{{le="{bound:g}"}}', n) for bound, n in zip(BUCKETS, self.buckets, strict=True)]
               + [('_bucket{le="+Inf"}', count), ("_sum", self.duration_sum), ("_count", count)])
        return "\n".join(out) + "\n"


state = State(Settings())
metrics = Metrics()


async def attempt(s: Settings, rid: str, timeout: float, deadline_ms: float | None) -> str:
    """One call to inventory: "ok", "5xx", "timeout" or "connect"."""
    url = urlsplit(s.url)
    host, port = url.hostname or "inventory", url.port or 80
    headers = f"GET {url.path}?id={rid} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
    if deadline_ms is not None:
        headers += f"X-Deadline: {deadline_ms:.0f}\r\n"
    writer = None
    try:
        async with asyncio.timeout(timeout):
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except OSError:
                return "connect"
            writer.write((headers + "\r\n").encode())
            await writer.drain()
            line = await reader.readline()
            parts = line.split()
            status = int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else 0
            return "ok" if status == 200 else "5xx"
    except TimeoutError:
        return "timeout"
    except (OSError, asyncio.IncompleteReadError):
        return "connect"
    finally:
        if writer is not None:
            writer.close()


async def order(rid: str, caller_deadline: float | None) -> tuple[int, str]:
    st = state
    s = st.s
    st.budget.request()
    deadline = caller_deadline if s.propagate_deadline else None
    tries = 0
    last = "timeout"
    while True:
        remaining = None if deadline is None else deadline - time.time() * 1000 - 10
        if remaining is not None and remaining <= 0:
            return 504, "the caller's deadline passed"
        if not st.breaker.allow():
            metrics.shed["breaker"] += 1
            return 503, "circuit breaker open"
        timeout_ms = s.attempt_timeout_ms if remaining is None else min(s.attempt_timeout_ms, remaining)
        # The deadline passed on is the time this attempt waits until: after it, the answer is of no use.
        attempt_deadline = time.time() * 1000 + timeout_ms if s.propagate_deadline else None
        metrics.upstream_in_flight += 1
        try:
            last = await attempt(s, rid, timeout_ms / 1000, attempt_deadline)
        finally:
            metrics.upstream_in_flight -= 1
        metrics.upstream[last] += 1
        st.breaker.record(last == "ok")
        if last == "ok":
            return 200, "reserved"
        tries += 1
        if tries > s.max_retries or last not in s.retry_on:
            break
        if not st.budget.may_retry():
            metrics.retries_denied += 1
            break
        metrics.retries += 1
        if s.backoff_ms > 0:
            wait = min(s.backoff_max_ms, s.backoff_ms * 2 ** (tries - 1))
            if s.jitter:
                wait = random.uniform(0, wait)
            if deadline is not None and time.time() * 1000 + wait >= deadline:
                return 504, "the caller's deadline passes before the next retry"
            await asyncio.sleep(wait / 1000)
    return {"timeout": 504, "5xx": 503, "connect": 502}[last], f"inventory: {last}"


async def read_head(reader: asyncio.StreamReader) -> tuple[str, dict[str, str]] | None:
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        return None
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return parts[1], headers


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    head = await read_head(reader)
    if head is None:
        writer.close()
        return
    target, headers = head
    url = urlsplit(target)
    st = state
    body: dict[str, Any] | str
    if url.path == "/order":
        started = time.monotonic()
        rid = (parse_qs(url.query).get("id") or [""])[0][:80]
        metrics.requests += 1
        try:
            caller_deadline = float(headers["x-deadline"]) if "x-deadline" in headers else None
        except ValueError:
            caller_deadline = None
        if st.s.max_in_flight and st.in_flight >= st.s.max_in_flight:
            metrics.shed["concurrency"] += 1
            status, why = 503, "over the concurrency limit"
        else:
            st.in_flight += 1
            try:
                status, why = await order(rid, caller_deadline)
            finally:
                st.in_flight -= 1
        metrics.observe(status, time.monotonic() - started)
        body = {"id": rid, "status": status, "detail": why}
    elif url.path == "/healthz":
        status, body = 200, {"ok": True}
    elif url.path == "/stats":
        status, body = 200, metrics.stats(st)
    elif url.path == "/metrics":
        status, body = 200, metrics.exposition(st)
    else:
        status, body = 404, {"error": "GET /order?id=..., /healthz, /stats, /metrics"}
    if isinstance(body, str):
        data, kind = body.encode(), "text/plain; version=0.0.4"
    else:
        data, kind = (json.dumps(body) + "\n").encode(), "application/json"
    try:
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Type: {kind}\r\nContent-Length: {len(data)}\r\n"
                     f"Connection: close\r\n\r\n".encode() + data)
        await asyncio.wait_for(writer.drain(), 5)
    except (ConnectionError, asyncio.TimeoutError, RuntimeError):
        pass
    writer.close()


def reload() -> None:
    global state
    try:
        s = load(CONFIG)
    except (OSError, ValueError, tomllib.TOMLDecodeError) as exc:
        print(f"orders: {CONFIG} refused, keeping the running settings: {exc}", flush=True)
        return
    state = State(s)
    print(f"orders: settings loaded from {CONFIG}: {s}", flush=True)


async def main() -> None:
    reload()
    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload)
    server = await asyncio.start_server(serve, "0.0.0.0", PORT, backlog=1024)
    with open("/run/orders.pid", "w") as fh:
        fh.write(str(os.getpid()))
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        try:
            print(load(sys.argv[2]))
        except (OSError, ValueError, tomllib.TOMLDecodeError) as exc:
            print(f"{sys.argv[2]}: {exc}", file=sys.stderr)
            sys.exit(1)
        sys.exit(0)
    asyncio.run(main())
