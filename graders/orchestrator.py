"""Orchestrator checks (sys-6): a learner's control plane and node agents keep N healthy replicas of a
service running, spread over the nodes, behind a load balancer, through disruption.

What a replica is, is read from outside the learner's reach: an observer in each node's network namespace
lists the kernel's listening TCP sockets in the replica port range (``/proc/net/tcp``: port and socket
inode, so a replica started again on the same port is a new one) and asks each of them, itself, who it is
(``GET /``: ``ll-replica`` answers its app, version and id). A socket in the range counts as a replica
whether or not it answers; one that answers with the app is a healthy one. Nothing the learner's control
plane says about its replicas (its API's status, its files, its logs) is read. Traffic goes from the probe
through the learner's load balancer, the way a client's would. The checks that act use the engine's tools
only: ``ctx.signal`` (KILL or STOP a replica, found by its socket's owner), ``ctx.pause``/``ctx.unpause`` (a
node that hangs and comes back), ``ctx.restart`` (the control host).

Every disruptive check first declares the deployment through the learner's API (``PUT /deployments/<app>``,
the contract the instructions give) and waits until it has converged, so each one judges its own
requirement whatever an earlier check left behind.
"""

from __future__ import annotations

import json
import secrets
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

from graders._net import ObservationError, script_json
from ladderlab.errors import CommandTimeout
from ladderlab.grading.checks import CannotJudge, Context, Verdict, check, fail, ok

#: The API the instructions give: ``PUT /deployments/<app>`` on this port of the control host.
API_PORT = 8080
#: The ports replicas listen on (the instructions reserve them for replicas).
PORT_MIN, PORT_MAX = 9100, 9199
#: How long a disruptive check waits for the deployment it declared to converge before acting.
SETTLE = 12.0
#: Seconds between two looks while a check waits for something (a snapshot takes a few tenths itself).
POLL = 0.2
#: How long exactly N replicas must hold after a frozen node returns.
HOLD = 1.5
#: A load that sent a request this much after its time was kept from running (the machine is overloaded): the
#: load balancer and the replicas, on the same machine, were too, and the requests that failed cannot judge them.
MAX_LATE_MS = 400

#: Runs in an observer in a node's network namespace: the listening TCP sockets whose port is in [lo, hi]
#: (from the kernel's /proc/net/tcp{,6}: hex fields only), each asked ``GET /`` (its answer, or null within
#: ``wait`` seconds); every ``every`` seconds for ``duration`` seconds (0: once), or until the file ``stop``
#: exists in the observer. Prints JSON [{"t": epoch, "sockets": [{"port", "ino", "answer"}]}].
SNAPSHOT_SCRIPT = r"""
import json, os, socket, sys, time, concurrent.futures as cf
lo, hi = int(sys.argv[1]), int(sys.argv[2])
duration, every, wait = float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
stop = sys.argv[6] if len(sys.argv) > 6 else ""
def listening():
    found = {}
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name, "rb") as fh:
                lines = fh.read(1 << 22).decode("ascii").splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            f = line.split()
            if len(f) < 10 or f[3] != "0A" or ":" not in f[1]:
                continue
            addr, port = f[1].split(":")
            port = int(port, 16)
            if lo <= port <= hi and f[9] != "0":
                local = len(addr) == 8 and bytes.fromhex(addr)[::-1] == bytes([127, 0, 0, 1])
                if not local:
                    found[f[9]] = port
    return found
def ask(port):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=wait)
        s.settimeout(wait)
        s.sendall(b"GET / HTTP/1.0\r\nHost: replica\r\n\r\n")
        data, end = b"", time.monotonic() + wait
        while len(data) < 8192 and time.monotonic() < end:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        s.close()
        head, _, body = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.") or head.split()[1:2] != [b"200"]:
            return None
        got = json.loads(body.decode("utf-8", "replace"))
        if not isinstance(got, dict):
            return None
        return {k: str(got.get(k, ""))[:80] for k in ("app", "version", "id")}
    except Exception:
        return None
out, end = [], time.time() + duration
pool = cf.ThreadPoolExecutor(max_workers=16)
while True:
    t = time.time()
    found = listening()
    answers = list(pool.map(ask, found.values()))
    out.append({"t": t, "sockets": [{"port": p, "ino": i, "answer": a} for (i, p), a in zip(found.items(), answers)]})
    if time.time() >= end or (stop and os.path.exists(stop)):
        break
    time.sleep(max(0.0, every - (time.time() - t)))
print(json.dumps(out))
"""

#: Runs in the probe's observer: one HTTP request (method, url, JSON body); prints {"status", "body"}
#: (status 0: no answer).
CLIENT_SCRIPT = r"""
import json, sys, urllib.request, urllib.error
method, url, body = sys.argv[1], sys.argv[2], sys.argv[3]
req = urllib.request.Request(url, data=body.encode() if body else None, method=method,
                             headers={"Content-Type": "application/json"})
try:
    with urllib.request.urlopen(req, timeout=5) as r:
        print(json.dumps({"status": r.status, "body": r.read(4096).decode("utf-8", "replace")}))
except urllib.error.HTTPError as exc:
    print(json.dumps({"status": exc.code, "body": exc.read(4096).decode("utf-8", "replace")}))
except Exception as exc:
    print(json.dumps({"status": 0, "body": type(exc).__name__ + ": " + str(exc)[:200]}))
"""

#: Runs in the probe's observer: ``rate`` GETs a second to ``url`` for ``duration`` seconds from ``t0`` (epoch),
#: each with a ``timeout``; an optional PUT (method, url, body) at ``put_at`` (epoch). Prints
#: {"requests": [[sent, ok, version, id, why not ok]], "put": {"t", "status"} or null, "late_ms": the most a
#: request went out after its time}; ok: 200 with the app's JSON.
LOAD_SCRIPT = r"""
import json, sys, time, urllib.error, urllib.request, concurrent.futures as cf
cfg = json.loads(sys.argv[1])
def get(i):
    sent = time.time()
    try:
        with urllib.request.urlopen(cfg["url"], timeout=cfg["timeout"]) as r:
            got = json.loads(r.read(8192).decode("utf-8", "replace"))
            good = r.status == 200 and isinstance(got, dict) and got.get("app") == cfg["app"]
            if not good:
                return [sent, False, "", "", "not the app"]
            return [sent, True, str(got.get("version", ""))[:80], str(got.get("id", ""))[:80], ""]
    except urllib.error.HTTPError as exc:
        return [sent, False, "", "", "HTTP %d" % exc.code]
    except TimeoutError:  # socket.timeout is TimeoutError since Python 3.10
        return [sent, False, "", "", "no answer in time"]
    except urllib.error.URLError as exc:
        timed_out = isinstance(exc.reason, TimeoutError)
        return [sent, False, "", "", "no answer in time" if timed_out else "no connection"]
    except Exception:
        return [sent, False, "", "", "no HTTP answer"]
def put():
    if not cfg.get("put_url"):
        return None
    while time.time() < cfg["put_at"]:
        time.sleep(0.01)
    t = time.time()
    req = urllib.request.Request(cfg["put_url"], data=cfg["put_body"].encode(), method="PUT",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return {"t": t, "status": r.status}
    except urllib.error.HTTPError as exc:
        return {"t": t, "status": exc.code}
    except Exception:
        return {"t": t, "status": 0}
late = 0.0  # the most a request went out after its time: this process was kept from running that long
with cf.ThreadPoolExecutor(max_workers=48) as pool:
    putting = pool.submit(put)
    futures, n = [], int(cfg["duration"] * cfg["rate"])
    for i in range(n):
        at = cfg["t0"] + i / cfg["rate"]
        while time.time() < at:
            time.sleep(max(0.0, min(0.005, at - time.time())))
        late = max(late, time.time() - at)
        futures.append(pool.submit(get, i))
    print(json.dumps({"requests": [f.result() for f in futures], "put": putting.result(),
                      "late_ms": round(late * 1000)}))
"""


@dataclass(frozen=True)
class Replica:
    """One listening socket in the replica range on a node: its port, its socket inode (a new process on the
    same port is a new inode) and what it answered (None: no answer: starting, hung or not ll-replica)."""

    node: str
    port: int
    ino: str
    answer: dict[str, str] | None

    @property
    def key(self) -> tuple[str, int, str]:
        return (self.node, self.port, self.ino)

    def serves(self, app: str, version: str | None = None) -> bool:
        return (self.answer is not None and self.answer.get("app") == app
                and (version is None or self.answer.get("version") == version))


@dataclass(frozen=True)
class Spec:
    """The deployment a check declares: the app, its version, N replicas, at most ``per_node`` on a node."""

    app: str
    version: str
    replicas: int
    per_node: int

    def body(self) -> str:
        return json.dumps({"version": self.version, "replicas": self.replicas, "maxPerNode": self.per_node})


def _run(ctx: Context, host: str, script: str, *args: object, timeout: float) -> Any:
    try:
        return script_json(ctx.observe(host), script, *args, timeout=timeout)
    except CommandTimeout as exc:
        raise CannotJudge(f"the check's tool on {host} did not finish within {timeout:g}s") from exc


def parse_samples(node: str, raw: Any) -> list[tuple[float, list[Replica]]]:
    """The snapshot script's output for ``node``: (time, replicas) per sample."""
    if not isinstance(raw, list):
        raise ObservationError(f"unexpected snapshot of {node}: {str(raw)[:100]!r}")
    out = []
    for sample in raw:
        try:
            reps = [Replica(node, int(s["port"]), str(s["ino"]),
                            {k: str(v) for k, v in s["answer"].items()} if isinstance(s["answer"], dict) else None)
                    for s in sample["sockets"]]
            out.append((float(sample["t"]), reps))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ObservationError(f"unexpected snapshot of {node}: {exc}") from None
    return out


def sample(ctx: Context, node: str, duration: float = 0.0, every: float = 0.25, wait: float = 1.0,
           stop: str = "") -> list[tuple[float, list[Replica]]]:
    """The replicas of ``node`` every ``every`` seconds for ``duration`` seconds (0: one snapshot), or until
    the file ``stop`` exists in the node's observer (see :func:`stop_sampling`)."""
    raw = _run(ctx, node, SNAPSHOT_SCRIPT, PORT_MIN, PORT_MAX, duration, every, wait, stop, timeout=duration + 30)
    return parse_samples(node, raw)


def stop_sampling(ctx: Context, nodes: Sequence[str], stop: str) -> None:
    """End the samplers started with ``stop`` on ``nodes`` (a file in each node's observer)."""
    for node in nodes:
        ctx.observe(node).put_file(stop, b"")


def snapshot(ctx: Context, nodes: Sequence[str]) -> list[Replica]:
    """Every node's replicas now (the nodes observed at once)."""
    with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
        found = list(pool.map(lambda n: sample(ctx, n)[-1][1], nodes))
    return [r for reps in found for r in reps]


def request(ctx: Context, method: str, url: str, body: str = "", source: str = "probe") -> tuple[int, str]:
    """One request from the probe: (status, body); status 0 when nothing answered."""
    got = _run(ctx, source, CLIENT_SCRIPT, method, url, body, timeout=30)
    if not isinstance(got, dict):
        raise ObservationError(f"unexpected client answer {got!r}")
    return int(got.get("status", 0)), str(got.get("body", ""))


def declare(ctx: Context, spec: Spec, ctl: str) -> Verdict | None:
    """``PUT /deployments/<app>`` through the learner's API; a failed verdict when it is not accepted."""
    url = f"http://{ctx.address(ctl)}:{API_PORT}/deployments/{spec.app}"
    status, body = request(ctx, "PUT", url, spec.body())
    if status == 0:
        return fail(f"the API on {ctl}:{API_PORT} does not answer (PUT /deployments/{spec.app}: {body[:80]})")
    if not 200 <= status < 300:
        return fail(f"the API refused PUT /deployments/{spec.app} with HTTP {status}")
    return None


def converged(reps: Sequence[Replica], spec: Spec) -> str | None:
    """What keeps ``reps`` from being exactly the deployment: None when N replicas listen, each answering
    as the app at the version, with distinct ids."""
    serving = [r for r in reps if r.serves(spec.app, spec.version)]
    ids = {r.answer.get("id") for r in serving if r.answer is not None}
    if len(reps) == spec.replicas and len(serving) == spec.replicas and len(ids) == spec.replicas:
        return None
    others = len(reps) - len(serving)
    return (f"{len(serving)} healthy replicas of {spec.app} {spec.version} ({len(ids)} distinct ids) and "
            f"{others} other listener(s) in the replica ports, where {spec.replicas} are wanted")


def settle(ctx: Context, spec: Spec, nodes: Sequence[str], ctl: str,
           within: float = SETTLE) -> tuple[list[Replica], Verdict | None]:
    """Declare ``spec`` and wait until it has converged: (replicas, None), or a failed verdict."""
    refused = declare(ctx, spec, ctl)
    if refused is not None:
        return [], refused
    end = time.monotonic() + within
    while True:
        reps = snapshot(ctx, nodes)
        wrong = converged(reps, spec)
        if wrong is None:
            return reps, None
        if time.monotonic() > end:
            return reps, fail(f"before acting, the deployment did not converge within {within:g} s of its PUT: {wrong}")
        time.sleep(POLL)


def wait_until(ctx: Context, nodes: Sequence[str], within: float,
               done: Callable[[list[Replica]], bool]) -> tuple[float | None, list[Replica]]:
    """Snapshot ``nodes`` until ``done``: (seconds it took, replicas), or (None, the last replicas)."""
    start = time.monotonic()
    while True:
        reps = snapshot(ctx, nodes)
        took = time.monotonic() - start
        if done(reps):
            return took, reps
        if took > within:
            return None, reps
        time.sleep(POLL)


def _spec(app: str, version: str, replicas: int | str, per_node: int | str) -> Spec:
    return Spec(app, str(version), int(replicas), int(per_node))


def _describe(reps: Sequence[Replica]) -> str:
    by_node: dict[str, int] = {}
    for r in reps:
        by_node[r.node] = by_node.get(r.node, 0) + 1
    return ", ".join(f"{n}: {c}" for n, c in sorted(by_node.items())) or "none"


def through_lb(ctx: Context, ctl: str, lb_port: int, app: str, count: int,
               rate: float = 12.0) -> list[tuple[bool, str]]:
    """``count`` GETs through the load balancer from the probe, ``rate`` a second: (answered by the app, id)."""
    load = {"url": f"http://{ctx.address(ctl)}:{lb_port}/", "app": app, "t0": time.time() + 1.0,
            "duration": count / rate, "rate": rate, "timeout": 2.0}
    result = _run(ctx, "probe", LOAD_SCRIPT, json.dumps(load), timeout=count / rate + 40)
    try:
        return [(bool(r[1]), str(r[3])) for r in result["requests"]]
    except (KeyError, TypeError, IndexError) as exc:
        raise ObservationError(f"unexpected load answer: {exc}") from None


# --- the state as the learner left it --------------------------------------------------------------------


def _state(ctx: Context, nodes: Sequence[str], spec: Spec, tries: int = 4) -> list[Replica]:
    """The replicas as the notebook left them: a snapshot that shows the deployment converged, else the
    last of ``tries`` (a replica slow to answer once, on a busy machine, is asked again)."""
    def look() -> list[Replica]:
        for _ in range(tries - 1):
            reps = snapshot(ctx, nodes)
            if converged(reps, spec) is None:
                return reps
            time.sleep(2 * POLL)
        return snapshot(ctx, nodes)
    return ctx.cached(f"orchestrator-state:{','.join(nodes)}:{spec}", look)


@check
def converged_behind_lb(ctx: Context, *, app: str, version: str, replicas: int, per_node: int, nodes: list[str],
                        ctl: str, lb_port: int, requests: int = 24) -> Verdict:
    """As the notebook left it: exactly N replicas listen in the replica ports, each answering as the app at
    the version (distinct ids), and ``requests`` GETs through the load balancer on ``ctl:lb_port`` from the
    probe are all answered by those replicas, by at least two (or all, when fewer) of them."""
    spec = _spec(app, version, replicas, per_node)
    reps = _state(ctx, nodes, spec)
    wrong = converged(reps, spec)
    if wrong is not None:
        return fail(f"the nodes run {wrong}")
    live = {r.answer.get("id") for r in reps if r.answer is not None}
    answers = through_lb(ctx, ctl, int(lb_port), app, int(requests))
    seen = [rid for good, rid in answers if good and rid in live]
    bad = len(answers) - len(seen)
    if bad:
        return fail(f"{bad} of {requests} requests to the load balancer on {ctl}:{lb_port} were not answered by "
                    f"one of the deployment's running replicas")
    want = min(2, spec.replicas)
    if len(set(seen)) < want:
        return fail(f"the load balancer sent all {requests} requests to {len(set(seen))} replica(s): it must spread "
                    f"them over the healthy replicas")
    return ok(f"{spec.replicas} healthy replicas of {spec.app} {spec.version}; the load balancer spread "
              f"{requests} requests over {len(set(seen))} of them")


@check
def spread(ctx: Context, *, app: str, version: str, replicas: int, per_node: int, nodes: list[str]) -> Verdict:
    """As the notebook left it: the deployment has converged (N replicas) and no node runs more than
    ``per_node`` of them."""
    spec = _spec(app, version, replicas, per_node)
    reps = _state(ctx, nodes, spec)
    wrong = converged(reps, spec)
    if wrong is not None:
        return fail(f"the deployment has not converged, so its spread cannot count: {wrong}")
    crowded = {n: c for n in nodes if (c := sum(1 for r in reps if r.node == n)) > spec.per_node}
    if crowded:
        return fail(f"replicas per node: {_describe(reps)}; at most {spec.per_node} may run on one node")
    return ok(f"replicas per node: {_describe(reps)} (at most {spec.per_node})")


# --- replicas that fail ----------------------------------------------------------------------------------


def _pick(reps: Sequence[Replica], count: int) -> list[Replica]:
    """``count`` replicas, from as many different nodes as possible."""
    chosen: list[Replica] = []
    pool = sorted(reps, key=lambda r: (r.node, r.port))
    while pool and len(chosen) < count:
        used = {r.node for r in chosen}
        nxt = next((r for r in pool if r.node not in used), pool[0])
        chosen.append(nxt)
        pool.remove(nxt)
    return chosen


def _pid(ctx: Context, rep: Replica) -> int:
    holder = ctx.listener(rep.node, rep.port)
    if holder is None or holder.uid < 0 or holder.pid < 2:
        raise CannotJudge(f"could not tell which process serves {rep.node}:{rep.port}")
    return holder.pid


@check(disruptive=True)
def crash_replaced(ctx: Context, *, app: str, version: str, replicas: int, per_node: int, nodes: list[str],
                   ctl: str, within: float = 8.0) -> Verdict:
    """Two replicas are killed (SIGKILL); within ``within`` seconds N healthy replicas run again."""
    spec = _spec(app, version, replicas, per_node)
    reps, verdict = settle(ctx, spec, nodes, ctl)
    if verdict is not None:
        return verdict
    victims = _pick(reps, 2)
    for rep in victims:
        ctx.signal(rep.node, _pid(ctx, rep), "KILL")
    gone = {r.key for r in victims}
    took, now = wait_until(ctx, nodes, within,
                           lambda rs: converged(rs, spec) is None and not gone & {r.key for r in rs})
    if took is None:
        return fail(f"{within:g} s after two replicas were killed: {converged(now, spec) or 'a killed one listens'}")
    return ok(f"two killed replicas were replaced within {took:.1f} s")


@check(disruptive=True)
def hung_replaced(ctx: Context, *, app: str, version: str, replicas: int, per_node: int, nodes: list[str],
                  ctl: str, within: float = 8.0) -> Verdict:
    """One replica is stopped (SIGSTOP: it keeps its port but answers nothing); within ``within`` seconds N
    healthy replicas run again and the stopped one is gone (its socket closed). The check resumes it (CONT)
    at the end if it is still there."""
    spec = _spec(app, version, replicas, per_node)
    reps, verdict = settle(ctx, spec, nodes, ctl)
    if verdict is not None:
        return verdict
    victim = _pick(reps, 1)[0]
    pid = _pid(ctx, victim)
    ctx.signal(victim.node, pid, "STOP")
    try:
        took, now = wait_until(ctx, nodes, within,
                               lambda rs: converged(rs, spec) is None and victim.key not in {r.key for r in rs})
    finally:
        ctx.signal(victim.node, pid, "CONT")
    if took is None:
        if victim.key in {r.key for r in now}:
            return fail(f"{within:g} s after a replica stopped answering (SIGSTOP), it still holds its port and was "
                        f"not replaced: {converged(now, spec) or 'the hung one lingers'}")
        return fail(f"{within:g} s after a replica stopped answering (SIGSTOP): {converged(now, spec)}")
    return ok(f"a hung replica was replaced, and removed, within {took:.1f} s")


# --- scaling ----------------------------------------------------------------------------------------------


def _is_converged(reps: list[Replica], spec: Spec) -> bool:
    return converged(reps, spec) is None


@check(disruptive=True)
def scaled(ctx: Context, *, app: str, version: str, replicas: int, per_node: int, nodes: list[str], ctl: str,
           within: float = 8.0) -> Verdict:
    """With the deployment converged at N replicas, the check PUTs N+1, then N-1: each time, within ``within``
    seconds exactly that many healthy replicas run and keep running for ``HOLD`` seconds, and scaling leaves the
    running replicas alone (scaling up replaces none of them, scaling down starts none)."""
    spec = _spec(app, version, replicas, per_node)
    before, verdict = settle(ctx, spec, nodes, ctl)
    if verdict is not None:
        return verdict
    took: list[str] = []
    for count in (spec.replicas + 1, spec.replicas - 1):
        target = Spec(spec.app, spec.version, count, spec.per_node)
        refused = declare(ctx, target, ctl)
        if refused is not None:
            return refused
        was = {r.key for r in before}
        seconds, now = wait_until(ctx, nodes, within, partial(_is_converged, spec=target))
        if seconds is None:
            return fail(f"{within:g} s after PUT replicas={count} (from {len(before)}): {converged(now, target)}")
        seen = {r.key for r in now}  # every replica seen while the new count holds (a passing moment is not enough)
        held_until = time.monotonic() + HOLD
        while time.monotonic() < held_until:
            time.sleep(POLL)
            now = snapshot(ctx, nodes)
            if converged(now, target) is not None:
                return fail(f"scaling to {count} did not hold for {HOLD:g} s: {converged(now, target)}")
            seen |= {r.key for r in now}
        keys = {r.key for r in now}
        if count > len(before) and was - keys:
            return fail(f"scaling up to {count} replaced {len(was - keys)} of the replicas that were running: scaling "
                        f"adds replicas, it leaves the running ones alone")
        if count < len(before) and seen - was:
            return fail(f"scaling down to {count} started {len(seen - was)} new replica(s): scaling down only stops "
                        f"replicas")
        took.append(f"{len(before)} -> {count} in {seconds:.1f} s")
        before = now
    return ok(f"scaled {', then '.join(took)}, leaving the running replicas alone")


# --- a node that goes away -------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeLoss:
    """One run of the node-loss experiment: which node was frozen, how long until N healthy replicas ran on
    the others (None: not within the budget), and after it came back, how long until exactly N ran again and
    stayed so (None: not within the budget)."""

    node: str
    moved: float | None
    moved_state: str
    settled: float | None
    settled_state: str


def node_loss_experiment(ctx: Context, spec: Spec, nodes: Sequence[str], ctl: str, within: float,
                         back_within: float) -> NodeLoss | Verdict:
    def run() -> NodeLoss | Verdict:
        reps, verdict = settle(ctx, spec, nodes, ctl)
        if verdict is not None:
            return verdict
        node = max(nodes, key=lambda n: (sum(1 for r in reps if r.node == n), -list(nodes).index(n)))
        others = [n for n in nodes if n != node]
        ctx.pause(node)
        try:
            moved, now = wait_until(ctx, others, within,
                                    lambda rs: sum(1 for r in rs if r.serves(spec.app, spec.version)) >= spec.replicas)
            moved_state = _describe([r for r in now if r.serves(spec.app, spec.version)])
        finally:
            ctx.unpause(node)
        start = time.monotonic()
        good_since: float | None = None
        settled, last = None, "nothing observed"
        while time.monotonic() - start <= back_within + HOLD:
            reps = snapshot(ctx, nodes)
            now_t = time.monotonic()
            last = converged(reps, spec) or ""
            if not last:
                good_since = now_t if good_since is None else good_since
                if now_t - good_since >= HOLD:
                    settled = good_since - start
                    break
            else:
                good_since = None
                last = f"{last} ({_describe(reps)})"
            time.sleep(POLL)
        if settled is not None and settled > back_within:
            settled, last = None, f"exactly {spec.replicas} only after {settled:.1f} s"
        return NodeLoss(node, moved, moved_state, settled, last)

    return ctx.cached(f"orchestrator-node-loss:{spec}", run)


@check(disruptive=True)
def node_loss(ctx: Context, *, app: str, version: str, replicas: int, per_node: int, nodes: list[str], ctl: str,
              within: float = 8.0, back_within: float = 4.0) -> Verdict:
    """The node running the most replicas freezes (the engine pauses it: its processes stop, its sockets stay
    open and silent); within ``within`` seconds N healthy replicas run on the other nodes."""
    spec = _spec(app, version, replicas, per_node)
    run = node_loss_experiment(ctx, spec, nodes, ctl, float(within), float(back_within))
    if isinstance(run, Verdict):
        return run
    if run.moved is None:
        return fail(f"{within:g} s after {run.node} froze, the other nodes run healthy replicas: {run.moved_state} "
                    f"- {spec.replicas} are wanted")
    return ok(f"{run.moved:.1f} s after {run.node} froze, {spec.replicas} healthy replicas ran on the other nodes")


@check(disruptive=True)
def node_return(ctx: Context, *, app: str, version: str, replicas: int, per_node: int, nodes: list[str], ctl: str,
                within: float = 8.0, back_within: float = 4.0) -> Verdict:
    """After the frozen node comes back (the same run as :func:`node_loss`), within ``back_within`` seconds
    exactly N replicas run again, and stay so: the returning node's old replicas do not keep running beside
    their replacements."""
    spec = _spec(app, version, replicas, per_node)
    run = node_loss_experiment(ctx, spec, nodes, ctl, float(within), float(back_within))
    if isinstance(run, Verdict):
        return run
    if run.settled is None:
        return fail(f"after {run.node} came back, the nodes did not settle on exactly {spec.replicas} replicas "
                    f"within {back_within:g} s: {run.settled_state}")
    return ok(f"{run.settled:.1f} s after {run.node} came back, exactly {spec.replicas} replicas ran again")


# --- a new version ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rollout:
    """The rolling update as observed: the PUT's time, the merged replica counts over time, and the load."""

    put_at: float
    counts: list[tuple[float, int, int, int]]  # (t, listening, healthy at the new version, healthy at another)
    requests: list[tuple[float, bool]]


def merge(samples: dict[str, list[tuple[float, list[Replica]]]], new: Spec) -> list[tuple[float, int, int, int]]:
    """At each sample time of any node, the latest sample of every node combined: (t, listening sockets,
    healthy replicas at ``new.version``, healthy replicas of the app at another version)."""
    times = sorted({t for rows in samples.values() for t, _ in rows})
    out = []
    for t in times:
        latest = []
        for rows in samples.values():
            before = [reps for ts, reps in rows if ts <= t]
            if not before:
                break
            latest.extend(before[-1])
        else:
            out.append((t, len(latest), sum(1 for r in latest if r.serves(new.app, new.version)),
                        sum(1 for r in latest if r.serves(new.app) and not r.serves(new.app, new.version))))
    return out


@check(disruptive=True)
def rolling_update(ctx: Context, *, app: str, version: str, new_version: str, replicas: int, per_node: int,
                   nodes: list[str], ctl: str, lb_port: int, within: float = 12.0, rate: float = 25.0,
                   availability: float = 0.99) -> Verdict:
    """With the deployment converged at ``version``, the probe sends ``rate`` GETs a second through the load
    balancer while the check PUTs ``new_version``; within ``within`` seconds exactly N healthy replicas run the
    new version (none the old), never more than N+1 replicas listen, and at least ``availability`` of the
    requests are answered by the app."""
    old, new = _spec(app, version, replicas, per_node), _spec(app, new_version, replicas, per_node)
    _, verdict = settle(ctx, old, nodes, ctl)
    if verdict is not None:
        return verdict
    lead, tail = 1.0, 1.0
    duration = lead + float(within) + tail
    t0 = time.time() + 2.0  # the observers' commands start meanwhile
    load = {"url": f"http://{ctx.address(ctl)}:{int(lb_port)}/", "app": app, "t0": t0, "duration": duration,
            "rate": float(rate), "timeout": 2.0, "put_at": t0 + lead, "put_body": new.body(),
            "put_url": f"http://{ctx.address(ctl)}:{API_PORT}/deployments/{app}"}
    with ThreadPoolExecutor(max_workers=len(nodes) + 1) as pool:
        driving = pool.submit(_run, ctx, "probe", LOAD_SCRIPT, json.dumps(load), timeout=duration + 40)
        watching = {n: pool.submit(sample, ctx, n, duration + 2.0) for n in nodes}
        result = driving.result()
        samples = {n: f.result() for n, f in watching.items()}
    try:
        put = result["put"]
        put_at, status = float(put["t"]), int(put["status"])
        requests = [(float(r[0]), bool(r[1])) for r in result["requests"]]
        why = [str(r[4]) for r in result["requests"] if float(r[0]) >= put_at and not r[1]]
        late_ms = float(result["late_ms"])
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ObservationError(f"unexpected load answer: {exc}") from None
    if not 200 <= status < 300:
        return fail(f"the API did not accept the new version (PUT answered {status or 'nothing'})")
    counts = [c for c in merge(samples, new) if c[0] >= put_at - 0.5]
    done = next((t - put_at for t, n, fresh, stale in counts
                 if n == new.replicas and fresh == new.replicas and stale == 0 and put_at <= t <= put_at + within),
                None)
    most = max((n for _, n, _, _ in counts), default=0)
    window = [g for s, g in requests if s >= put_at]
    share = sum(window) / len(window) if window else 0.0
    if share < availability and late_ms > MAX_LATE_MS:
        raise CannotJudge(f"the load on the probe sent a request {late_ms / 1000:.1f} s after its time (the machine "
                          f"is overloaded): its failed requests say nothing about the update")
    problems = []
    if done is None:
        last = counts[-1] if counts else (0.0, 0, 0, 0)
        problems.append(f"{within:g} s after the PUT, {last[2]} of {new.replicas} replicas ran {new_version} "
                        f"({last[3]} still another version)")
    if most > new.replicas + 1:
        problems.append(f"{most} replicas listened at once during the update (at most {new.replicas + 1})")
    if share < availability:
        kinds = Counter(why)
        problems.append(f"only {share:.1%} of the requests through the load balancer succeeded during the update "
                        f"(at least {availability:.0%}; the failures: "
                        f"{', '.join(f'{n} {k}' for k, n in kinds.most_common())})")
    if problems:
        return fail("; ".join(problems))
    assert done is not None
    return ok(f"{new_version} rolled out in {done:.1f} s, at most {most} replicas at once, {share:.1%} of "
              f"{len(window)} requests succeeded")


# --- the control plane restarts ---------------------------------------------------------------------------


@check(disruptive=True)
def ctl_restart(ctx: Context, *, app: str, version: str, replicas: int, per_node: int, nodes: list[str],
                ctl: str, lb_port: int, within: float = 10.0, after: float = 2.0) -> Verdict:
    """With the deployment converged, the control host restarts (every process gone, its start-up run again):
    within ``within`` seconds its API and load balancer answer again, and no replica is stopped or started
    meanwhile, nor for ``after`` seconds more (the same sockets, the same processes)."""
    spec = _spec(app, version, replicas, per_node)
    before, verdict = settle(ctx, spec, nodes, ctl)
    if verdict is not None:
        return verdict
    keys = {r.key for r in before}
    stop = f"/run/ll-orchestrator-stop-{secrets.token_hex(6)}"
    with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
        watching = {n: pool.submit(sample, ctx, n, within + after + 2.0, 0.3, 1.0, stop) for n in nodes}
        time.sleep(2 * POLL)  # the samplers see the replicas before the restart
        ctx.restart(ctl)
        start = time.monotonic()
        back: float | None = None
        while back is None and time.monotonic() - start < within:
            api, _ = request(ctx, "GET", f"http://{ctx.address(ctl)}:{API_PORT}/deployments/{app}")
            lb, body = request(ctx, "GET", f"http://{ctx.address(ctl)}:{int(lb_port)}/")
            if api == 200 and lb == 200 and f'"{app}"' in body:
                back = time.monotonic() - start
            else:
                time.sleep(POLL)
        time.sleep(after)
        stop_sampling(ctx, nodes, stop)
        samples = {n: f.result() for n, f in watching.items()}
    changed = sorted({f"{r.node}:{r.port}" for rows in samples.values() for _, reps in rows for r in reps
                      if r.key not in keys}
                     | {f"{k[0]}:{k[1]}" for k in keys
                        if any(k not in {r.key for r in reps} for _, reps in samples.get(k[0], []))})
    if changed:
        return fail(f"while {ctl} restarted, replicas were stopped or started ({', '.join(changed[:6])}): a control "
                    f"plane that restarts must leave running replicas alone")
    if back is None:
        return fail(f"{within:g} s after {ctl} restarted, its API (:{API_PORT}) and load balancer (:{lb_port}) did "
                    f"not both answer for {app} - start them from {ctl}'s start-up")
    return ok(f"{ctl} restarted: API and load balancer back after {back:.1f} s, no replica stopped or started")
