"""Resilience checks (cascading failures): the check runs the experiment itself.

One experiment per grading, shared by the checks (``ctx.cached``): the grader tells the dependency
(``inventory``, a fixture the learner has no shell on) what to do through its controls on its own
loopback, reached only from an observer in its network namespace; then a trusted load runs from an
observer on the ``probe`` host against the edge, every request with the caller's deadline; then the
dependency's ledger of the run (its own counters, per request id) is read back the same way.

The timeline (seconds from the start, ``rate`` requests a second, request ``i`` sent at ``i / rate``)::

    baseline   0.5 - 2    nothing wrong: the service must simply work
    transient  2 - 5      1 request in 10 (chosen by the grader) fails fast (503) on its first attempt
    incident   6 - 6+S    inventory slows down (S and the service time are seeded)
    recovery   6+S+4 - 6+S+7   4 to 7 seconds after the slowdown ended

A request is *good* when the edge answered 200 within the caller's deadline and inventory had really served
it by then (its ledger says so: an answer made up without inventory, or before it, does not count).

The machine is shared (other gradings run beside this one), and a busy machine only ever makes answers later and
fewer, never sooner: a phase that passes on every request passes. One that fails is judged again on the requests
the machine left alone: the probe logs every moment it was kept from running, and a request during whose wait
the probe lost ``DISTURBED_MS`` or more is set aside (answered in time or not, so that setting aside never favours
a slow service). When too few requests are left (``QUIET_MIN``), the experiment cannot judge that phase.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ladderlab.errors import CommandTimeout
from ladderlab.grading.checks import CannotJudge, Context, Verdict, check, fail, ok

#: Runs in the probe's observer: one request every 1/rate seconds from t0 (epoch), each giving up at its
#: deadline + slack; prints {"answers": [[status, milliseconds, sent (epoch ms)], ...] by request index (status
#: 0: no answer in time, -1: no connection or no HTTP answer, -2: not sent, the probe fell more than late_s
#: behind), "late_start_ms": how long after t0 it started (negative: before), "stall_ms": the longest the
#: probe was kept from running while the load ran (a heartbeat every 20 ms), "stalls": [[epoch ms, ms], ...]
#: every time the heartbeat woke STALL_LOG_MS or more late}.
LOAD_SCRIPT = r"""
import asyncio, json, sys, time
cfg = json.loads(sys.argv[1])
out = [None] * cfg["n"]
async def one(i):
    start = time.time()
    head = ("GET /order?id=%s-%d HTTP/1.1\r\nHost: edge\r\nConnection: close\r\nX-Deadline: %.0f\r\n\r\n"
            % (cfg["run"], i, start * 1000 + cfg["deadline_ms"]))
    status, writer = 0, None
    try:
        async with asyncio.timeout((cfg["deadline_ms"] + cfg["slack_ms"]) / 1000):
            reader, writer = await asyncio.open_connection(cfg["host"], cfg["port"])
            writer.write(head.encode())
            parts = (await reader.readline()).split()
            status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else -1
    except TimeoutError:
        status = 0
    except OSError:
        status = -1
    finally:
        if writer is not None:
            writer.close()
    out[i] = [status, round((time.time() - start) * 1000), round(start * 1000)]
end = cfg["t0"] + cfg["n"] / cfg["rate"] + (cfg["deadline_ms"] + cfg["slack_ms"]) / 1000
stall = [0.0]
stalls = []
async def heartbeat():  # how long this process was kept from running, at worst, while the load ran
    while time.time() < end:
        before = time.time()
        await asyncio.sleep(0.02)
        if time.time() > cfg["t0"]:
            late = time.time() - before - 0.02
            stall[0] = max(stall[0], late)
            if late * 1000 >= cfg["stall_log_ms"]:
                stalls.append([round(before * 1000), round(late * 1000)])
async def main():
    started = time.time()
    beat = asyncio.create_task(heartbeat())
    tasks = []
    for i in range(cfg["n"]):
        due = cfg["t0"] + i / cfg["rate"]
        await asyncio.sleep(max(0.0, due - time.time()))
        if time.time() - due > cfg["late_s"]:  # never a burst of overdue requests: skip, and say so
            out[i] = [-2, 0, 0]
            continue
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks, beat)
    return started
started = asyncio.run(main())
print(json.dumps({"answers": out, "late_start_ms": round((started - cfg["t0"]) * 1000),
                  "stall_ms": round(stall[0] * 1000), "stalls": stalls}))
"""

#: Runs in inventory's observer (its network namespace): one call to its controls on 127.0.0.1.
CONTROL_SCRIPT = r"""
import sys, urllib.request
method, path, body = sys.argv[1], sys.argv[2], sys.argv[3].encode() or None
req = urllib.request.Request("http://127.0.0.1:%s%s" % (sys.argv[4], path), data=body, method=method)
with urllib.request.urlopen(req, timeout=10) as r:
    print(r.read().decode())
"""

BASELINE_MIN = 0.8  # share of good requests before anything goes wrong (a broken service: 0)
TRANSIENT_MIN = 0.95  # 1 request in 10 fails once: without retries 0.9
AMPLIFICATION_MAX = 1.5  # inventory attempts per edge request during the incident
IN_TIME_MIN = 0.9  # share of incident requests answered (anything) within the deadline
RECOVERY_MIN = 0.9  # share of good requests once the slowdown is over
LATE_S = 0.25  # a request the probe could not send this close to its time is not sent at all
MAX_UNSENT = 0.1  # more unsent requests than this share of a phase: the experiment cannot judge
MAX_LAG_MS = 100.0  # inventory's event loop waking up later than this (90th percentile): the machine is overloaded
MAX_STALL_MS = 400  # the probe kept from running this long at once: the machine stalled (the fastest deadline: 700)
STALL_LOG_MS = 40  # the probe logs each time it woke this late or later (shorter: scheduling jitter, not a stall)
DISTURBED_MS = 150  # the probe lost this long in all while a request waited (the slack is 200): set it aside
QUIET_MIN = 0.5  # a failing phase is judged again only when at least this share of its requests was left alone
LEAD_S = 6.0  # from the schedule to the load's first request: time for the load's observer command to start


@dataclass(frozen=True)
class Timeline:
    """When each phase runs, in seconds from the start of the load."""

    slow_seconds: float
    rate: float = 20.0
    baseline: tuple[float, float] = (0.5, 2.0)
    transient: tuple[float, float] = (2.0, 5.0)
    slow_start: float = 6.0
    grace: float = 4.0
    window: float = 3.0

    @property
    def incident(self) -> tuple[float, float]:
        return self.slow_start, self.slow_start + self.slow_seconds

    @property
    def recovery(self) -> tuple[float, float]:
        start = self.incident[1] + self.grace
        return start, start + self.window

    @property
    def requests(self) -> int:
        return int(self.recovery[1] * self.rate)

    def indices(self, phase: tuple[float, float]) -> list[int]:
        return [i for i in range(self.requests) if phase[0] <= i / self.rate < phase[1]]


@dataclass(frozen=True)
class Outcome:
    """What the experiment measured: the edge's answers (status, ms, sent epoch ms) by request index, and
    inventory's ledger of the run: request id -> [attempts, served, skipped, first served epoch ms]."""

    run: str
    timeline: Timeline
    answers: Sequence[Sequence[int]]
    ledger: Mapping[str, Sequence[int]]
    transient: frozenset[int]
    #: [epoch ms, ms] each time the probe was kept from running; how long each request may wait (deadline + slack)
    stalls: Sequence[Sequence[int]] = ()
    wait_ms: int = 0

    def _entry(self, i: int) -> Sequence[int]:
        entry = self.ledger.get(f"{self.run}-{i}", ())
        return entry if len(entry) == 4 else (0, 0, 0, 0)

    def good(self, i: int) -> bool:
        """200 at the edge within the deadline, for an order inventory had served by then (a few ms of
        leeway: the answer leaves inventory just before it is stamped)."""
        status, ms, sent = self.answers[i]
        served, served_at = self._entry(i)[1], self._entry(i)[3]
        return status == 200 and served >= 1 and served_at <= sent + ms + 50

    def sent(self, phase: tuple[float, float]) -> list[int]:
        """The requests of ``phase`` the probe sent (not those it fell behind on)."""
        return [i for i in self.timeline.indices(phase) if self.answers[i][0] != -2]

    def disturbed(self, i: int) -> bool:
        """Whether the probe lost DISTURBED_MS or more, in all, while request ``i`` waited for its answer."""
        start = self.answers[i][2]
        end = start + self.wait_ms
        lost = sum(ms for at, ms in self.stalls if at < end and at + 20 + ms > start)
        return lost >= DISTURBED_MS

    def good_share(self, ids: Sequence[int]) -> tuple[int, int]:
        """(good, of) for the requests ``ids``."""
        return sum(1 for i in ids if self.good(i)), len(ids)

    def amplification(self, ids: Sequence[int]) -> tuple[int, int]:
        """(inventory attempts, edge requests) for the requests ``ids``."""
        return sum(int(self._entry(i)[0]) for i in ids), len(ids)

    def in_time(self, ids: Sequence[int]) -> tuple[int, int]:
        """(answered within the deadline, sent) for the requests ``ids``."""
        return sum(1 for i in ids if self.answers[i][0] > 0), len(ids)


@dataclass(frozen=True)
class Measured:
    """A phase's measure: ``got`` of ``of`` requests, ``set_aside`` requests left out (the machine disturbed them)."""

    got: int
    of: int
    set_aside: int = 0

    @property
    def share(self) -> float:
        return _share(self.got, self.of)

    def note(self) -> str:
        return (f" ({self.set_aside} requests sent while the machine kept the probe from running were set aside)"
                if self.set_aside else "")


def judged(outcome: Outcome, phase: tuple[float, float], name: str, measure: Callable[[Sequence[int]], tuple[int, int]],
           passes: Callable[[float], bool]) -> Measured:
    """``measure`` over every request of ``phase`` the probe sent; when that does not pass, over those the machine
    left alone (:meth:`Outcome.disturbed`): load only makes a service look worse, so a pass stands, and a failure
    counts only where the probe ran undisturbed. Too few of those: :class:`CannotJudge`."""
    ids = outcome.sent(phase)
    got, of = measure(ids)
    if passes(_share(got, of)):
        return Measured(got, of)
    quiet = [i for i in ids if not outcome.disturbed(i)]
    if len(quiet) == len(ids):
        return Measured(got, of)
    if len(quiet) < QUIET_MIN * len(ids):
        raise CannotJudge(f"the machine is too overloaded to judge the {name}: the probe was kept from running for "
                          f"{DISTURBED_MS} ms or more while {len(ids) - len(quiet)} of its {len(ids)} requests waited")
    got, of = measure(quiet)
    return Measured(got, of, len(ids) - len(quiet))


def _share(got: int, of: int) -> float:
    return got / of if of else 0.0


def breakdown(outcome: Outcome, phase: tuple[float, float]) -> str:
    """What the edge answered in ``phase``, e.g. "42 x 200, 12 x 503, 6 no answer in time"."""
    names = {0: "no answer in time", -1: "no connection"}
    counts: dict[int, int] = {}
    for i in outcome.sent(phase):
        counts[outcome.answers[i][0]] = counts.get(outcome.answers[i][0], 0) + 1
    return ", ".join(f"{n} {names[st]}" if st in names else f"{n} x {st}" for st, n in sorted(counts.items(),
                                                                                            key=lambda kv: -kv[1]))


def _observe(ctx: Context, host: str, command: str, *args: object, timeout: float) -> str:
    runner = ctx.observe(host)
    try:
        result = runner.run(command, *args, timeout=timeout)
    except CommandTimeout as exc:
        raise CannotJudge(f"the experiment's tool on {host} did not finish within {timeout:g}s") from exc
    if result.failed:
        raise CannotJudge(f"the experiment's tool on {host} exited {result.rc}: {result.stderr.strip()[-200:]}")
    return result.stdout


def _control(ctx: Context, method: str, path: str, body: str = "", *, host: str, port: int) -> Any:
    out = _observe(ctx, host, "python3 -c %s %s %s %s %s", CONTROL_SCRIPT, method, path, body, port, timeout=30)
    try:
        return json.loads(out)
    except ValueError as exc:
        raise CannotJudge(f"{host}'s controls answered {out[:80]!r}") from exc


def run_experiment(ctx: Context, *, deadline_ms: int, slow_ms: int, slow_seconds: float, edge: str = "edge",
                   edge_port: int = 8080, dependency: str = "inventory", control_port: int = 9101,
                   source: str = "probe", slack_ms: int = 200) -> Outcome:
    """Run the timeline once: the dependency's schedule, the load from ``source``, the dependency's ledger."""
    tl = Timeline(slow_seconds=float(slow_seconds))
    run = f"g{secrets.token_hex(4)}"
    offset = secrets.randbelow(10)
    transient = frozenset(i for i in tl.indices(tl.transient) if i % 10 == offset)
    t0 = time.time() + LEAD_S
    schedule = {"run": run, "slow": [t0 + tl.incident[0], t0 + tl.incident[1]], "slow_ms": int(slow_ms),
                "transient": [f"{run}-{i}" for i in sorted(transient)]}
    if _control(ctx, "POST", "/experiment", json.dumps(schedule), host=dependency, port=control_port).get(
            "run") != run:
        raise CannotJudge(f"{dependency} did not take the experiment's schedule")
    load = {"host": ctx.address(edge), "port": edge_port, "run": run, "t0": t0, "n": tl.requests, "rate": tl.rate,
            "deadline_ms": int(deadline_ms), "slack_ms": slack_ms, "late_s": LATE_S, "stall_log_ms": STALL_LOG_MS}
    out = _observe(ctx, source, "python3 -c %s %s", LOAD_SCRIPT, json.dumps(load),
                   timeout=tl.recovery[1] + 60)
    try:
        printed = json.loads(out)
        answers, late_start, stall = printed["answers"], float(printed["late_start_ms"]), float(printed["stall_ms"])
        stalls = [(int(at), int(ms)) for at, ms in printed["stalls"]]
        if len(answers) != tl.requests or not all(isinstance(a, list) and len(a) == 3 for a in answers):
            raise ValueError("not one answer per request")
    except (ValueError, TypeError, KeyError) as exc:
        raise CannotJudge(f"the load on {source} printed {out[:80]!r}: {exc}") from exc
    # A machine too busy to run the experiment on time: its timings say nothing about the learner's service.
    if late_start > 0:
        raise CannotJudge(f"the load on {source} started {late_start / 1000:.1f} s after its first request was due "
                          f"(its command took more than {LEAD_S:g} s to start: the machine is overloaded)")
    if stall > MAX_STALL_MS:
        raise CannotJudge(f"the load on {source} was kept from running for {stall:.0f} ms at once during the "
                          f"experiment (more than {MAX_STALL_MS} ms: the machine is overloaded)")
    for name, phase in (("baseline", tl.baseline), ("transient", tl.transient), ("incident", tl.incident),
                        ("recovery", tl.recovery)):
        ids = tl.indices(phase)
        unsent = sum(1 for i in ids if answers[i][0] == -2)
        if unsent > MAX_UNSENT * len(ids):
            raise CannotJudge(f"the load on {source} fell behind its schedule: {unsent} of the {len(ids)} requests of "
                              f"the {name} phase were not sent (the machine is overloaded)")
    time.sleep(0.5)  # the last attempts of the last requests reach inventory
    found = _control(ctx, "GET", f"/ledger?run={run}", host=dependency, port=control_port)
    try:
        ledger, lag = dict(found["ledger"]), float(found["lag_ms_p90"])
    except (TypeError, KeyError, ValueError) as exc:
        raise CannotJudge(f"{dependency}'s ledger is not what it writes: {str(found)[:80]}") from exc
    if lag > MAX_LAG_MS:
        raise CannotJudge(f"the machine is too overloaded to judge timing: {dependency} woke up {lag:g} ms late "
                          f"(90th percentile) during the experiment")
    return Outcome(run, tl, answers, ledger, transient, stalls, int(deadline_ms) + slack_ms)


def experiment(ctx: Context, *, deadline_ms: int | str, slow_ms: int | str, slow_seconds: int | str, edge: str,
               dependency: str, source: str) -> Outcome:
    """The grading's one experiment (every check asks for it; the first runs it)."""
    key = "resilience:" + json.dumps([int(deadline_ms), int(slow_ms), int(slow_seconds), edge, dependency, source])
    outcome: Outcome = ctx.cached(key, lambda: run_experiment(
        ctx, deadline_ms=int(deadline_ms), slow_ms=int(slow_ms), slow_seconds=int(slow_seconds), edge=edge,
        dependency=dependency, source=source))
    return outcome


def not_serving(outcome: Outcome) -> Verdict | None:
    """A failed verdict when orders do not succeed before anything goes wrong: how the service behaves in an
    incident counts only once it serves."""
    m = judged(outcome, outcome.timeline.baseline, "baseline", outcome.good_share, lambda s: s >= BASELINE_MIN)
    if m.share >= BASELINE_MIN:
        return None
    return fail(f"before any incident only {m.got} of {m.of} orders succeeded through the edge within the deadline "
                f"(the edge answered: {breakdown(outcome, outcome.timeline.baseline)}){m.note()} - the service "
                f"must work normally first (are orders and the edge running with your settings?)")


def served(ctx: Context, *, deadline_ms: int | str, slow_ms: int | str, slow_seconds: int | str, edge: str,
           dependency: str, source: str) -> Outcome | Verdict:
    """The experiment's outcome, or the failed verdict of :func:`not_serving` when orders did not succeed
    before anything went wrong (every experiment check starts so)."""
    outcome = experiment(ctx, deadline_ms=deadline_ms, slow_ms=slow_ms, slow_seconds=slow_seconds, edge=edge,
                         dependency=dependency, source=source)
    return not_serving(outcome) or outcome


@check
def recovers(ctx: Context, *, deadline_ms: int | str, slow_ms: int | str, slow_seconds: int | str,
             edge: str = "edge", dependency: str = "inventory", source: str = "probe") -> Verdict:
    """Goodput is back (>= 90% of orders succeed) 4 to 7 seconds after the dependency's slowdown ends."""
    outcome = served(ctx, deadline_ms=deadline_ms, slow_ms=slow_ms, slow_seconds=slow_seconds, edge=edge,
                     dependency=dependency, source=source)
    if isinstance(outcome, Verdict):
        return outcome
    m = judged(outcome, outcome.timeline.recovery, "recovery", outcome.good_share, lambda s: s >= RECOVERY_MIN)
    what = (f"{m.got} of {m.of} orders succeeded 4 to 7 seconds after a {slow_seconds}s slowdown of inventory "
            f"ended{m.note()}")
    if m.share >= RECOVERY_MIN:
        return ok(f"goodput recovers: {what}")
    return fail(f"goodput does not recover (the system stays down after the trigger is gone): {what} "
                f"(the edge answered: {breakdown(outcome, outcome.timeline.recovery)})")


@check
def amplification_bounded(ctx: Context, *, deadline_ms: int | str, slow_ms: int | str, slow_seconds: int | str,
                          edge: str = "edge", dependency: str = "inventory", source: str = "probe") -> Verdict:
    """During the slowdown, inventory sees at most 1.5 attempts per request sent to the edge."""
    outcome = served(ctx, deadline_ms=deadline_ms, slow_ms=slow_ms, slow_seconds=slow_seconds, edge=edge,
                     dependency=dependency, source=source)
    if isinstance(outcome, Verdict):
        return outcome
    m = judged(outcome, outcome.timeline.incident, "amplification", outcome.amplification,
               lambda s: s <= AMPLIFICATION_MAX)
    ratio = m.share
    what = f"{m.got} inventory requests for {m.of} edge requests during the slowdown ({ratio:.2f} per request)"
    if ratio <= AMPLIFICATION_MAX:
        return ok(f"amplification stays bounded: {what}{m.note()}")
    return fail(f"the incident is amplified: {what}, more than {AMPLIFICATION_MAX:g}{m.note()}")


@check
def fails_fast(ctx: Context, *, deadline_ms: int | str, slow_ms: int | str, slow_seconds: int | str,
               edge: str = "edge", dependency: str = "inventory", source: str = "probe") -> Verdict:
    """During the slowdown, at least 90% of requests get an answer (success or error) within their deadline."""
    outcome = served(ctx, deadline_ms=deadline_ms, slow_ms=slow_ms, slow_seconds=slow_seconds, edge=edge,
                     dependency=dependency, source=source)
    if isinstance(outcome, Verdict):
        return outcome
    m = judged(outcome, outcome.timeline.incident, "slowdown", outcome.in_time, lambda s: s >= IN_TIME_MIN)
    what = (f"{m.got} of {m.of} requests sent during the slowdown got an answer within their {deadline_ms} ms "
            f"deadline{m.note()}")
    if m.share >= IN_TIME_MIN:
        return ok(f"failures come back in time: {what}")
    return fail(f"callers are left waiting past their deadline: {what} "
                f"(the edge answered: {breakdown(outcome, outcome.timeline.incident)})")


@check
def transient_retried(ctx: Context, *, deadline_ms: int | str, slow_ms: int | str, slow_seconds: int | str,
                      edge: str = "edge", dependency: str = "inventory", source: str = "probe") -> Verdict:
    """When 1 request in 10 fails once, fast, at least 95% of orders still succeed (retried to success)."""
    outcome = served(ctx, deadline_ms=deadline_ms, slow_ms=slow_ms, slow_seconds=slow_seconds, edge=edge,
                     dependency=dependency, source=source)
    if isinstance(outcome, Verdict):
        return outcome
    m = judged(outcome, outcome.timeline.transient, "transient errors", outcome.good_share,
               lambda s: s >= TRANSIENT_MIN)
    what = f"{m.got} of {m.of} orders succeeded while 1 in 10 failed once at inventory (a fast 503){m.note()}"
    if m.share >= TRANSIENT_MIN:
        return ok(f"transient errors are retried to success: {what}")
    return fail(f"transient errors reach the callers: {what} "
                f"(the edge answered: {breakdown(outcome, outcome.timeline.transient)})")


def _norm(value: Any) -> str:
    return str(value).strip().lower()


@check
def diagnosis(ctx: Context, *, part: str, answer: str) -> Verdict:
    """The learner's named answer for the starting configuration: the amplifying layer (``part: layer``, the
    seeded ``amplifier``) or its factor (``part: factor``, the seeded ``attempts``: inventory requests per
    edge request during a slowdown). Feedback never tells the expected value."""
    if answer not in ctx.answers:
        return fail(f"no answer {answer!r} recorded - call lab.answer({answer!r}, ...) in the notebook")
    given = ctx.answers[answer]
    if part == "layer":
        right = _norm(given) == _norm(ctx.params["amplifier"])
    elif part == "factor":
        try:
            right = int(str(given).strip()) == int(ctx.params["attempts"])
        except ValueError:
            return fail(f"answer {answer!r} ({given!r}) is not a whole number")
    else:
        raise ValueError(f"unknown diagnosis part {part!r}")
    if right:
        return ok(f"the amplifying {part} is right")
    return fail(f"answer {answer!r} ({given!r}) is not the amplifying {part} of the starting configuration")
