"""inventory: the dependency of the orders service (a fixture: the learner has no shell on this host).

A fixed capacity: WORKERS requests are worked on at once, each for SERVICE_MS (SLOW_MS during a
slowdown); the rest wait in one unbounded FIFO queue. Like many real dependencies it does not notice
that a caller gave up: a request whose caller timed out is still worked on (dead work), unless the
caller said until when it waits (an X-Deadline header, epoch milliseconds): a request dequeued after
its deadline is dropped at no cost (answered 504).

Public, on :8081 (the lab network):
  GET  /reserve?id=ID       the work
  GET  /stats               counters (read-only): received, served, transient_failed, expired_skipped,
                            dead_work, queued, busy, slow
  GET  /metrics             the same in Prometheus's text format (read-only)
  POST /incident?seconds=N  a slowdown for N seconds (N <= 30; it can only be extended, never cut short)
  POST /flaky?seconds=N     for N seconds, the first attempt of 1 request in 10 fails at once with 503
Grader-only, on 127.0.0.1:9101 (inside this host's network namespace):
  POST /experiment          {"run", "slow": [start, end] (epoch s), "slow_ms", "transient": [ids]}
                            drops queued work, clears the public incident and flakiness, then keeps
                            a ledger of the run
  GET  /ledger?run=RUN      {"ledger": {id: [attempts, served, skipped, first served (epoch ms)]} for the
                             run's ids,
                             "lag_ms_p90": how late this process woke up during the run (overload)}
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import zlib
from typing import Any
from urllib.parse import parse_qs, urlsplit

WORKERS = int(os.environ.get("INVENTORY_WORKERS", "2"))
SERVICE_MS = float(os.environ.get("INVENTORY_SERVICE_MS", "40"))
SLOW_MS = float(os.environ.get("INVENTORY_SLOW_MS", "400"))
PORT = int(os.environ.get("INVENTORY_PORT", "8081"))
CONTROL_PORT = int(os.environ.get("INVENTORY_CONTROL_PORT", "9101"))
MAX_LEDGER = 20000

counters = {"received": 0, "served": 0, "transient_failed": 0, "expired_skipped": 0, "dead_work": 0}
public = {"slow_until": 0.0, "flaky_until": 0.0}
run: dict[str, Any] = {"id": None, "slow": (0.0, 0.0), "slow_ms": SLOW_MS, "transient": set(), "ledger": {},
                       "lag": []}
attempts: dict[str, int] = {}
queue: asyncio.Queue[tuple[float | None, asyncio.Future[int]]] | None = None
busy = 0


def slow_now(now: float) -> float | None:
    """The service time of work that starts now, when it is slow (None: normal)."""
    start, end = run["slow"]
    if start <= now < end:
        return float(run["slow_ms"])
    if now < public["slow_until"]:
        return SLOW_MS
    return None


def ledger(rid: str) -> list[int] | None:
    """The run's ledger entry for ``rid`` (only ids of the grader's current run are kept)."""
    if run["id"] is None or not rid.startswith(run["id"] + "-"):
        return None
    book: dict[str, list[int]] = run["ledger"]
    if rid not in book and len(book) >= MAX_LEDGER:
        return None
    return book.setdefault(rid, [0, 0, 0, 0])


async def worker() -> None:
    global busy
    assert queue is not None
    while True:
        deadline, done = await queue.get()
        now = time.time()
        if deadline is not None and now * 1000 >= deadline:
            counters["expired_skipped"] += 1
            if not done.done():
                done.set_result(504)
            continue
        busy += 1
        slow = slow_now(now)
        await asyncio.sleep((slow if slow is not None else SERVICE_MS) / 1000)
        busy -= 1
        counters["served"] += 1
        if not done.done():
            done.set_result(200)


async def lag_meter() -> None:
    """How late this process wakes up (event-loop lag), sampled every 50 ms during the grader's run: the
    grader's measure of whether the machine is too overloaded to judge timing."""
    while True:
        start = time.monotonic()
        await asyncio.sleep(0.05)
        if run["id"] is not None and len(run["lag"]) < 10000:
            run["lag"].append((time.monotonic() - start - 0.05) * 1000)


async def read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str]] | None:
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
    length = int(headers.get("content-length", "0") or 0)
    if 0 < length <= 65536:
        try:
            headers["_body"] = (await reader.readexactly(length)).decode("utf-8", "replace")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
    return parts[0], parts[1], headers


#: name, type, help, value (from the counters and the queue) of every metric on /metrics.
METRICS: tuple[tuple[str, str, str, Any], ...] = (
    ("inventory_requests_received_total", "counter", "Requests received on /reserve (every attempt of every caller).",
     lambda: counters["received"]),
    ("inventory_requests_served_total", "counter", "Requests a worker finished (whether or not the caller still waited).",
     lambda: counters["served"]),
    ("inventory_transient_failures_total", "counter", "Requests failed at once with a transient 503.",
     lambda: counters["transient_failed"]),
    ("inventory_expired_skipped_total", "counter",
     "Requests dropped unworked: their X-Deadline had passed when a worker got to them.",
     lambda: counters["expired_skipped"]),
    ("inventory_dead_work_total", "counter", "Requests served after their caller had hung up (work for nothing).",
     lambda: counters["dead_work"]),
    ("inventory_queue_length", "gauge", "Requests waiting for a worker now.",
     lambda: queue.qsize() if queue is not None else 0),
    ("inventory_busy_workers", "gauge", "Workers working now.", lambda: busy),
    ("inventory_workers", "gauge", "Workers (requests worked on at once).", lambda: WORKERS),
    ("inventory_slow", "gauge", "1 during a slowdown.", lambda: int(slow_now(time.time()) is not None)),
)


def exposition() -> str:
    """Every metric in the Prometheus text format (version 0.0.4)."""
    return "".join(f"# HELP {name} {help_}\n# TYPE {name} {kind}\n{name} {value()}\n"
                   for name, kind, help_, value in METRICS)


def respond(writer: asyncio.StreamWriter, status: int, body: Any) -> None:
    reason = {200: "OK", 404: "Not Found", 400: "Bad Request", 503: "Service Unavailable",
              504: "Gateway Timeout"}.get(status, "Status")
    if isinstance(body, str):
        data, kind = body.encode(), "text/plain; version=0.0.4"
    else:
        data, kind = (json.dumps(body) + "\n").encode(), "application/json"
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {len(data)}\r\n"
            f"Connection: close\r\n\r\n").encode()
    try:
        writer.write(head + data)
    except (ConnectionError, RuntimeError):
        pass


async def finish(writer: asyncio.StreamWriter) -> None:
    try:
        await asyncio.wait_for(writer.drain(), 5)
    except (ConnectionError, asyncio.TimeoutError, RuntimeError):
        pass
    writer.close()


def flaky(rid: str, now: float) -> bool:
    """Whether this attempt is a transient failure: the grader's chosen ids, or 1 in 10 while /flaky lasts;
    only ever the first attempt of an id."""
    n = attempts.get(rid, 0) + 1
    if len(attempts) > 100000:
        attempts.clear()
    attempts[rid] = n
    if n > 1:
        return False
    if rid in run["transient"]:
        return True
    return now < public["flaky_until"] and zlib.crc32(rid.encode()) % 10 == 0


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    assert queue is not None
    req = await read_request(reader)
    if req is None:
        writer.close()
        return
    method, target, headers = req
    url = urlsplit(target)
    query = parse_qs(url.query)
    now = time.time()
    if url.path == "/reserve" and method == "GET":
        rid = (query.get("id") or [""])[0][:80]
        counters["received"] += 1
        entry = ledger(rid)
        if entry is not None:
            entry[0] += 1
        if flaky(rid, now):
            counters["transient_failed"] += 1
            respond(writer, 503, {"id": rid, "error": "transient"})
            await finish(writer)
            return
        deadline = None
        try:
            if "x-deadline" in headers:
                deadline = float(headers["x-deadline"])
        except ValueError:
            deadline = None
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        await queue.put((deadline, done))
        status = await done
        if status == 200 and reader.at_eof():  # the caller hung up while it waited: the work was for nothing
            counters["dead_work"] += 1
        respond(writer, status, {"id": rid, "reserved": status == 200})
        if entry is not None:
            entry[1 if status == 200 else 2] += 1
            if status == 200 and not entry[3]:
                entry[3] = int(time.time() * 1000)  # when it was first served: an answer before it made nothing up
    elif url.path == "/stats" and method == "GET":
        respond(writer, 200, {**counters, "queued": queue.qsize(), "busy": busy,
                              "slow": slow_now(now) is not None})
    elif url.path == "/metrics" and method == "GET":
        respond(writer, 200, exposition())
    elif url.path in ("/incident", "/flaky") and method == "POST":
        try:
            seconds = float((query.get("seconds") or ["10"])[0])
        except ValueError:
            seconds = -1
        if not 0 < seconds <= 30:
            respond(writer, 400, {"error": "seconds must be in (0, 30]"})
        else:
            key = "slow_until" if url.path == "/incident" else "flaky_until"
            public[key] = max(public[key], now + seconds)
            respond(writer, 200, {url.path[1:]: "until", "epoch": public[key]})
    else:
        respond(writer, 404, {"error": "GET /reserve?id=..., GET /stats, GET /metrics, POST /incident?seconds=N, "
                                       "POST /flaky?seconds=N"})
    await finish(writer)


async def control(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    req = await read_request(reader)
    if req is None:
        writer.close()
        return
    method, target, headers = req
    url = urlsplit(target)
    if url.path == "/experiment" and method == "POST":
        spec = json.loads(headers.get("_body", "{}"))
        public["slow_until"] = public["flaky_until"] = 0.0
        assert queue is not None
        while not queue.empty():  # an experiment starts from an idle dependency: queued work is dropped
            _, waiting = queue.get_nowait()
            if not waiting.done():
                waiting.set_result(503)
        run.update(id=str(spec["run"]), slow=(float(spec["slow"][0]), float(spec["slow"][1])),
                   slow_ms=float(spec["slow_ms"]), transient=set(spec.get("transient", [])), ledger={},
                   lag=[])
        respond(writer, 200, {"run": run["id"]})
    elif url.path == "/ledger" and method == "GET":
        wanted = (parse_qs(url.query).get("run") or [""])[0]
        lag = sorted(run["lag"]) or [0.0]
        respond(writer, 200, {"ledger": run["ledger"] if wanted == run["id"] else {},
                              "lag_ms_p90": round(lag[int(0.9 * (len(lag) - 1))], 1)})
    else:
        respond(writer, 404, {})
    await finish(writer)


async def main() -> None:
    global queue
    queue = asyncio.Queue()
    for _ in range(WORKERS):
        asyncio.get_running_loop().create_task(worker())
    asyncio.get_running_loop().create_task(lag_meter())
    public_server = await asyncio.start_server(serve, "0.0.0.0", PORT, backlog=1024)
    control_server = await asyncio.start_server(control, "127.0.0.1", CONTROL_PORT)
    print(f"inventory: {WORKERS} workers, {SERVICE_MS:g} ms per request ({SLOW_MS:g} ms when slow), :{PORT}",
          flush=True)
    async with public_server, control_server:
        await asyncio.gather(public_server.serve_forever(), control_server.serve_forever())


if __name__ == "__main__":
    asyncio.run(main())
