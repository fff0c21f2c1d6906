"""Multi-region mesh checks (net-3): pod-to-pod reachability over the learner's WireGuard tunnels, routes
learned from BGP, nothing but pod prefixes exchanged, and timed failover and failback when one underlay
link is cut.

Every probe is ladderlab's own: a UDP echo started at check time in a trusted observer that shares the
destination region's network namespace, bound to that region's pod address, answering only datagrams and
with a token drawn by the check; the client runs in an observer of the source region, bound to the source's
pod address (so the reply has to find its way back through the learner's routing, too). The echo reports
the TTL each probe arrived with: 64 is the direct tunnel, 63 one forwarding hop (the third region).
Routes are read with the observer's own ``ip``; the process behind the BGP port is identified by the
kernel (:meth:`~ladderlab.grading.checks.Context.listener`) and compared with the image's bird.

The failover check cuts the underlay between two regions with iptables rules in an admin observer of the
source region (UDP to and from the peer's underlay address dropped, both directions), measures the outage
of continuous probing (10 per second) against the seeded budget, lifts the cut and measures the way back.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from graders._net import ObservationError, control_free, run_json
from graders.tracing import image_digest
from ladderlab.grading.checks import CannotJudge, Context, Runner, Verdict, check, fail, ok

#: TTL of a probe that came straight through the source's tunnel (no forwarding hop).
DIRECT_TTL = 64
#: Probes per second while failover is measured.
INTERVAL = 0.1

#: The echo: bound to the region's pod address, answers ``<token> <payload> <ttl seen>``; exits after
#: ``duration`` seconds or once ``expect`` distinct sources said ``bye``. Prints ``listening`` once bound.
ECHO_SCRIPT = r"""
import select, socket, struct, sys, time
addr, port, token = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
duration, expect = float(sys.argv[4]), int(sys.argv[5])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    s.setsockopt(socket.IPPROTO_IP, 12, 1)  # IP_RECVTTL
    s.bind((addr, port))
except OSError as e:
    print("bind-error", e.errno, e.strerror, flush=True)
    sys.exit(0)
print("listening", flush=True)
end, byes = time.monotonic() + duration, set()
while time.monotonic() < end and len(byes) < expect:
    if not select.select([s], [], [], 0.2)[0]:
        continue
    data, anc, _, peer = s.recvmsg(512, 64)
    if data == b"bye " + token:
        byes.add(peer)
        continue
    ttl = next((struct.unpack("i", d[:4])[0] for lvl, typ, d in anc if lvl == socket.IPPROTO_IP and typ == 2), -1)
    s.sendto(token + b" " + data[:64] + b" " + str(ttl).encode(), peer)
"""

#: One client to several echoes: a datagram to each every 0.25 s until each answered or ``timeout``;
#: prints ``{"<addr>": ttl or null}``.
REACH_SCRIPT = r"""
import json, select, socket, sys, time
src, token, timeout, targets = sys.argv[1], sys.argv[2].encode(), float(sys.argv[3]), json.loads(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    s.bind((src, 0))
except OSError as e:
    print(json.dumps({"bind_error": f"{e.errno} {e.strerror}"}))
    sys.exit(0)
seen = {a: None for a, _ in targets}
end, nxt = time.monotonic() + timeout, 0.0
while time.monotonic() < end and any(v is None for v in seen.values()):
    if time.monotonic() >= nxt:
        for a, p in targets:
            if seen[a] is None:
                try:
                    s.sendto(b"reach", (a, int(p)))
                except OSError:
                    pass
        nxt = time.monotonic() + 0.25
    if select.select([s], [], [], 0.05)[0]:
        data, peer = s.recvfrom(512)
        parts = data.split()
        if len(parts) == 3 and parts[0] == token and parts[1] == b"reach" and peer[0] in seen:
            seen[peer[0]] = int(parts[2])
for _ in range(3):
    for a, p in targets:
        try:
            s.sendto(b"bye " + token, (a, int(p)))
        except OSError:
            pass
print(json.dumps({"ttl": seen}))
"""

#: Failover, run in an admin observer of the source region: probe the destination's echo 10 times a second;
#: after ``lead`` seconds cut the underlay to ``peer`` (UDP both ways); once the probes come back through
#: another region for a while (or ``budget`` + 3 s passed) lift the cut; then probe until the direct path
#: is back for a while (or ``budget`` + 3 s). Prints the times and every probe (sent, answered, ttl).
FAILOVER_SCRIPT = r"""
import json, select, socket, subprocess, sys, time
src, dst, port, token, budget, peer, lead = (sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].encode(),
                                           float(sys.argv[5]), sys.argv[6], float(sys.argv[7]))
TAG = ["-p", "udp", "-m", "comment", "--comment", "ladderlab-mesh-cut", "-j", "DROP"]
RULES = [["INPUT", "-s", peer], ["OUTPUT", "-d", peer]]
def ipt(op, rule):
    return subprocess.run(["iptables", "-w", "5", op, rule[0], *([ "1"] if op == "-I" else []), rule[1], rule[2], *TAG],
                          capture_output=True, text=True, timeout=20)
def lift():
    for rule in RULES:
        for _ in range(5):
            if ipt("-D", rule).returncode != 0:
                break
out = {"probes": [], "t_cut": None, "t_lift": None, "error": None}
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    s.bind((src, 0))
except OSError as e:
    out["bind_error"] = f"{e.errno} {e.strerror}"
    print(json.dumps(out)); sys.exit(0)
probes = out["probes"]  # [t_sent, t_answered, ttl]
nxt = 0.0
def pump(until, done=lambda: False):
    global nxt
    while time.time() < until and not done():
        now = time.time()
        if now >= nxt:
            try:
                s.sendto(b"p%d" % len(probes), (dst, port))
            except OSError:
                pass
            probes.append([now, None, None])
            nxt = now + %INTERVAL%
        if select.select([s], [], [], 0.02)[0]:
            data, who = s.recvfrom(512)
            parts = data.split()
            if who[0] == dst and len(parts) == 3 and parts[0] == token and parts[1][:1] == b"p":
                i = int(parts[1][1:])
                if 0 <= i < len(probes) and probes[i][1] is None:
                    probes[i][1], probes[i][2] = time.time(), int(parts[2])
def steady(direct):
    old = [p for p in probes if p[0] < time.time() - 0.6][-15:]
    return len(old) == 15 and all(p[2] is not None and (p[2] >= 64) == direct for p in old)
try:
    pump(time.time() + lead)
    if not any(p[1] is not None for p in probes):
        out["error"] = "unreachable-before"
    else:
        for rule in RULES:
            r = ipt("-I", rule)
            if r.returncode != 0:
                out["error"] = "cut-failed: " + r.stderr.strip()[:200]
                break
        if out["error"] is None:
            out["t_cut"] = time.time()
            pump(out["t_cut"] + budget + 3, lambda: steady(False))
            lift()
            out["t_lift"] = time.time()
            pump(out["t_lift"] + budget + 3, lambda: steady(True))
            pump(time.time() + 0.6)
finally:
    lift()
    for _ in range(3):
        try:
            s.sendto(b"bye " + token, (dst, port))
        except OSError:
            pass
print(json.dumps(out))
""".replace("%INTERVAL%", str(INTERVAL))


def pod_address(prefix: str) -> str:
    """The address the region's pod answers on: the first host address of its prefix."""
    return str(next(ipaddress.ip_network(prefix, strict=False).hosts()))


def _regions(hosts: Sequence[str], pods: Sequence[str]) -> dict[str, str]:
    if len(hosts) != len(pods) or len(set(hosts)) != len(hosts):
        raise ValueError(f"hosts {list(hosts)} and pods {list(pods)} must pair up one to one")
    return dict(zip(hosts, pods, strict=True))


class Unbound(Exception):
    """A region's pod address is not on its host any more (the echo or a client could not bind to it)."""


def start_echo(runner: Runner, addr: str, port: int, token: str, duration: float, expect: int) -> None:
    """Start the echo in ``runner`` (background, ``duration`` seconds) and return once it listens."""
    result = runner.run(
        "out=$(mktemp); (python3 -c %s %s %s %s %s %s >\"$out\" 2>&1 &); "
        "for _ in $(seq 300); do [ -s \"$out\" ] && break; sleep 0.01; done; cat \"$out\"",
        ECHO_SCRIPT, addr, port, token, duration, expect, timeout=15)
    if "listening" in result.stdout:
        return
    if "bind-error 99 " in result.stdout:  # EADDRNOTAVAIL: the address is not on the host
        raise Unbound(addr)
    raise ObservationError(f"the echo could not start on {addr}:{port}: {result.stdout.strip()[:200]}")


def reach(ctx: Context, regions: dict[str, str], timeout: float,
          pairs: Sequence[tuple[str, str]] | None = None) -> dict[tuple[str, str], int | None]:
    """Probe every ordered pair of regions at once (or only ``pairs``: (source, destination)), pod address to
    pod address: (src, dst) -> the TTL the probe arrived with, None when no answer came within ``timeout``.
    :class:`Unbound` when a pod address is gone."""
    token, port = secrets.token_hex(8), 20000 + secrets.randbelow(40000)
    addrs = {h: pod_address(p) for h, p in regions.items()}
    wanted = list(pairs) if pairs is not None else [(s, d) for s in regions for d in regions if s != d]
    sources = [h for h in regions if any(s == h for s, _ in wanted)]
    dests = [h for h in regions if any(d == h for _, d in wanted)]
    with ThreadPoolExecutor(max_workers=len(regions)) as pool:
        list(pool.map(lambda h: start_echo(ctx.observe(h), addrs[h], port, token, timeout + 10,
                                           sum(1 for _, d in wanted if d == h)), dests))

        def client(h: str) -> dict[str, Any]:
            targets = [[addrs[d], port] for s, d in wanted if s == h]
            return run_json(ctx.observe(h), REACH_SCRIPT, addrs[h], token, timeout, json.dumps(targets),
                            timeout=timeout + 15)

        answers = dict(zip(sources, pool.map(client, sources), strict=True))
    found: dict[tuple[str, str], int | None] = {}
    for h, answer in answers.items():
        if "bind_error" in answer:
            raise Unbound(addrs[h])
        ttl = answer.get("ttl")
        if not isinstance(ttl, dict):
            raise ObservationError(f"unexpected probe answer {answer!r}")
        for s, d in wanted:
            if s == h:
                seen = ttl.get(addrs[d])
                found[(h, d)] = seen if isinstance(seen, int) else None
    return found


def _reach_verdict(ctx: Context, regions: dict[str, str], timeout: float, *, shared: bool = False) -> Verdict:
    """Whether every pod reaches every other; ``shared``: one probe run per grading for every check asking
    (the state as the learner left it), else a fresh one (after a restart)."""
    try:
        if shared:
            key = "mesh-reach:" + ",".join(f"{h}={p}" for h, p in regions.items())
            found = ctx.cached(key, lambda: reach(ctx, regions, timeout))
        else:
            found = reach(ctx, regions, timeout)
    except Unbound as gone:
        return fail(f"the pod address {gone} is no longer on its region's host - leave the pods' lo addresses")
    missing = [f"{s}->{d}" for (s, d), ttl in found.items() if ttl is None]
    if missing:
        return fail(f"pod to pod, these pairs get no answer: {', '.join(missing)} "
                    f"(every region's pod must reach every other region's pod, both ways)")
    return ok(f"every region's pod reaches every other region's pod ({len(found)} directions)")


@check
def mesh_reach(ctx: Context, *, hosts: list[str], pods: list[str], timeout: float = 6.0,
               nat: dict[str, Any] | None = None) -> Verdict:
    """From each region's pod address, an echo bound to every other region's pod address answers (a fresh
    token per check, the reply routed back to the source's pod)."""
    enforce_nat(ctx, nat)
    return _reach_verdict(ctx, _regions(hosts, pods), timeout, shared=True)


# --- the NATed region ------------------------------------------------------------------------------

#: The rules that keep a NATed region behind its NAT (``nat: {hidden: rc, peers: [ra, rb]}``): in each peer's
#: network namespace, nothing straight from or to the hidden region's own underlay address. The image sets
#: them at every start; a check puts them back (trusted, from an admin observer) where the learner took them
#: away, so that no grading judges a mesh that went around the NAT.
NAT_RULES = [("PREROUTING", "-s"), ("OUTPUT", "-d")]


def enforce_nat(ctx: Context, nat: dict[str, Any] | None) -> None:
    if not nat:
        return

    def compute() -> bool:
        hidden = ctx.address(str(nat["hidden"]))
        check_it = "iptables -w 5 -t raw -C %s %s %s -m comment --comment ladderlab-nat -j DROP"
        insert = "iptables -w 5 -t raw -I %s 1 %s %s -m comment --comment ladderlab-nat -j DROP"
        for peer in nat["peers"]:
            admin = ctx.observe(str(peer), admin=True)
            for chain, side in NAT_RULES:
                result = admin.run(f"{check_it} 2>/dev/null || {insert}", chain, side, hidden, chain, side, hidden,
                                   timeout=20)
                if result.failed:
                    raise CannotJudge(f"could not keep {nat['hidden']} behind its NAT on {peer}: "
                                      f"{result.stderr.strip()[:200]}")
        return True
    ctx.cached("mesh-nat", compute)


# --- routes ----------------------------------------------------------------------------------------


def routes(ctx: Context, host: str) -> list[dict[str, Any]]:
    """Every route of ``host`` (all tables), read with the observer's own ``ip -j``."""
    def compute() -> list[dict[str, Any]]:
        result = ctx.observe(host).run("ip -j route show table all", timeout=15)
        if result.failed:
            raise ObservationError(f"ip route in {host}: {result.stderr.strip()[:200]}")
        try:
            found = json.loads(control_free(result.stdout, f"{host}'s route table", "\n\t"))
        except ValueError:
            raise ObservationError(f"ip -j route printed {result.stdout[:100]!r}") from None
        if not isinstance(found, list):
            raise ObservationError("ip -j route printed no list")
        return [r for r in found if isinstance(r, dict)]
    return ctx.cached(f"mesh-routes:{host}", compute)


def network_of(route: dict[str, Any]) -> ipaddress.IPv4Network | None:
    dst = str(route.get("dst", ""))
    if dst == "default":
        return ipaddress.IPv4Network("0.0.0.0/0")
    try:
        return ipaddress.IPv4Network(dst if "/" in dst else f"{dst}/32", strict=False)
    except ValueError:
        return None


def is_bird(route: dict[str, Any]) -> bool:
    return str(route.get("protocol", "")) in {"bird", "12"}


def in_main(route: dict[str, Any]) -> bool:
    return str(route.get("table", "main")) in {"main", "254"}


def gateways(route: dict[str, Any]) -> set[str]:
    found = {str(route["gateway"])} if route.get("gateway") else set()
    for hop in route.get("nexthops") or []:
        if isinstance(hop, dict) and hop.get("gateway"):
            found.add(str(hop["gateway"]))
    return found


def route_problems(host: str, table: list[dict[str, Any]], others: dict[str, str]) -> list[str]:
    """What is wrong with ``host``'s routes to the other regions' pods (``others``: region -> prefix): each
    needs a route of exactly that prefix in the main table from bird, and nothing else may route any of
    its addresses (no static route, no more specific one, no other table)."""
    problems = []
    for region, prefix in others.items():
        net = ipaddress.IPv4Network(prefix, strict=False)
        if not any(network_of(r) == net and is_bird(r) and in_main(r) and r.get("type", "unicast") == "unicast"
                   for r in table):
            problems.append(f"no route to {region}'s pod prefix from bird")
        for r in table:
            found = network_of(r)
            if (found is None or found.prefixlen == 0 or is_bird(r) or not found.overlaps(net)
                    or str(r.get("table")) == "local"):
                continue
            problems.append(f"a {r.get('protocol', 'static')} route {r.get('dst')} covers {region}'s pod prefix")
    return problems


def bgp_peers(ctx: Context, host: str) -> set[str]:
    """Addresses ``host`` has an established TCP session with on port 179 (either side), from ``ss``."""
    result = ctx.observe(host).run("ss -Htn state established '( sport = :179 or dport = :179 )'", timeout=15)
    if result.failed:
        raise ObservationError(f"ss in {host}: {result.stderr.strip()[:200]}")
    peers = set()
    for line in control_free(result.stdout, f"{host}'s sockets", "\n\t").splitlines():
        cols = line.split()
        if len(cols) >= 4:
            local, remote = cols[-2], cols[-1]
            if local.endswith(":179") or remote.endswith(":179"):
                peers.add(remote.rsplit(":", 1)[0].strip("[]").removeprefix("::ffff:"))
    return peers


@check
def bgp_learned(ctx: Context, *, hosts: list[str], pods: list[str], binary: str = "/usr/sbin/bird",
                nat: dict[str, Any] | None = None) -> Verdict:
    """In every region, the routes to the other regions' pod prefixes come from bird (``proto bird`` in the
    main table, nothing static covering them), the image's bird serves the BGP port, and each such route's
    next hop is a peer with an established BGP session."""
    regions = _regions(hosts, pods)
    enforce_nat(ctx, nat)
    problems: list[str] = []
    for host in regions:
        others = {h: p for h, p in regions.items() if h != host}
        table = routes(ctx, host)
        found = route_problems(host, table, others)
        if found:
            problems += [f"{host}: {p}" for p in found]
            continue
        listener = ctx.listener(host, 179)
        if listener is None:
            problems.append(f"{host}: nothing listens on the BGP port 179")
            continue
        if listener.exe_sha256 != image_digest(ctx, host, binary):
            problems.append(f"{host}: port 179 is served by {listener.exe}, not by the image's bird")
            continue
        peers = bgp_peers(ctx, host)
        for region, prefix in others.items():
            net = ipaddress.IPv4Network(prefix, strict=False)
            hops = set().union(*(gateways(r) for r in table if network_of(r) == net and is_bird(r) and in_main(r)))
            if not hops or not hops <= peers:
                via = ", ".join(sorted(hops)) or "no gateway"
                problems.append(f"{host}: the route to {region}'s pod goes via {via}, "
                                f"which is not a BGP peer with an established session")
    if problems:
        return fail("; ".join(problems))
    return ok(f"every region learns the other pod prefixes from its BGP peers ({len(regions)} regions)")


@check
def no_leak(ctx: Context, *, hosts: list[str], pods: list[str], nat: dict[str, Any] | None = None) -> Verdict:
    """Only pod prefixes travel in BGP: once the pods reach each other (shared with :func:`mesh_reach`), every
    route bird installs is one of the pod prefixes, and every region reaches the others' underlay addresses
    on the underlay, never through a tunnel."""
    regions = _regions(hosts, pods)
    enforce_nat(ctx, nat)
    reached = _reach_verdict(ctx, regions, 6.0, shared=True)
    if not reached.passed:  # nothing exchanged leaks nothing: what is exchanged counts once the pods reach
        return fail(f"the pods do not reach each other yet, so what the regions exchange cannot count: "
                    f"{reached.feedback}")
    allowed = {ipaddress.IPv4Network(p, strict=False) for p in regions.values()}
    problems: list[str] = []
    for host in regions:
        table = routes(ctx, host)
        leaked = sorted({str(r.get("dst")) for r in table
                         if is_bird(r) and str(r.get("table")) != "local" and network_of(r) not in allowed})
        if leaked:
            problems.append(f"{host} has bird routes to {', '.join(leaked[:4])}, which are no pod prefixes")
        for peer in regions:
            if peer == host:
                continue
            address = ctx.address(peer)
            result = ctx.observe(host).run("ip -j route get %s", address, timeout=15)
            try:
                got = json.loads(result.stdout) if not result.failed else None
            except ValueError:
                got = None
            if not isinstance(got, list) or not got or not isinstance(got[0], dict):
                raise ObservationError(f"ip route get {address} in {host}: {result.stderr.strip()[:200]}")
            dev = str(got[0].get("dev", ""))
            if not dev.startswith("eth"):
                problems.append(f"{host} sends {peer}'s underlay address through {dev or 'nowhere'}, not the underlay")
    if problems:
        return fail("; ".join(problems))
    return ok("only pod prefixes are routed by bird, and the underlay stays on the underlay")


# --- failover --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timeline:
    """What the failover script saw: probes (sent, answered or None, TTL or None) and the cut's times."""

    probes: list[tuple[float, float | None, int | None]]
    t_cut: float | None
    t_lift: float | None
    error: str | None = None


def recovery(probes: Sequence[tuple[float, float | None, int | None]], start: float, end: float,
             direct: bool) -> float | None:
    """Seconds from ``start`` to the first probe sent after it that was answered on the wanted path
    (``direct``: TTL 64, else fewer), counting from which at least 90 % of the probes sent before ``end``
    were answered on that path (so one lucky answer is no recovery). None: never."""
    window = [p for p in probes if start <= p[0] < end]
    for i, (sent, answered, ttl) in enumerate(window):
        if answered is None or ttl is None or (ttl >= DIRECT_TTL) != direct:
            continue
        rest = window[i:]
        good = sum(1 for _, a, t in rest if a is not None and t is not None and (t >= DIRECT_TTL) == direct)
        if good >= 0.9 * len(rest):
            return sent - start
    return None


def parse_timeline(answer: dict[str, Any]) -> Timeline:
    raw = answer.get("probes")
    if not isinstance(raw, list):
        raise ObservationError(f"unexpected failover answer {str(answer)[:100]!r}")
    probes = [(float(p[0]), None if p[1] is None else float(p[1]), None if p[2] is None else int(p[2]))
              for p in raw]
    return Timeline(probes, answer.get("t_cut"), answer.get("t_lift"), answer.get("error"))


def experiment(ctx: Context, src: str, dst: str, regions: dict[str, str], budget: float,
               cut: str | None = None) -> Timeline:
    """Run the failover experiment once per grading (failover and failback judge the same run). ``cut``:
    the host whose underlay address ``dst``'s traffic comes from as ``src`` sees it (``dst``'s NAT), else
    ``dst`` itself."""
    def compute() -> Timeline:
        token, port = secrets.token_hex(8), 20000 + secrets.randbelow(40000)
        src_addr, dst_addr = pod_address(regions[src]), pod_address(regions[dst])
        longest = 2.0 + 2 * (budget + 3) + 10
        try:
            start_echo(ctx.observe(dst), dst_addr, port, token, longest + 10, 1)
        except Unbound:
            return Timeline([], None, None, f"unbound {dst_addr}")
        answer = run_json(ctx.observe(src, admin=True), FAILOVER_SCRIPT, src_addr, dst_addr, port, token, budget,
                          ctx.address(cut or dst), 2.0, timeout=longest + 20)
        if "bind_error" in answer:
            return Timeline([], None, None, f"unbound {src_addr}")
        return parse_timeline(answer)
    return ctx.cached(f"mesh-failover:{src}:{dst}", compute)


def _precondition(timeline: Timeline, src: str, dst: str) -> Verdict | None:
    if timeline.error and timeline.error.startswith("unbound "):
        return fail(f"the pod address {timeline.error.split()[1]} is no longer on its region's host")
    if timeline.error == "unreachable-before":
        return fail(f"{src}'s pod does not reach {dst}'s pod even before the underlay is cut - build the mesh first")
    if timeline.error:
        raise CannotJudge(f"could not cut the {src}-{dst} underlay: {timeline.error}")
    before = [p for p in timeline.probes if timeline.t_cut is None or p[0] < timeline.t_cut]
    ttls = {t for _, a, t in before if a is not None and t is not None}
    if ttls and max(ttls) < DIRECT_TTL:
        return fail(f"before the cut, {src}'s pod reaches {dst}'s pod through another region, not over their "
                    f"direct tunnel (the shorter AS path should win)")
    if timeline.t_cut is None or timeline.t_lift is None:
        raise ObservationError("the failover run has no cut times")
    return None


@check(disruptive=True)
def failover(ctx: Context, *, src: str, dst: str, via: str, hosts: list[str], pods: list[str],
             budget: int, cut: str | None = None, nat: dict[str, Any] | None = None) -> Verdict:
    """When the underlay between ``src`` and ``dst`` is cut (UDP both ways), continuous probing from
    ``src``'s pod to ``dst``'s pod is answered again within ``budget`` seconds, through ``via`` (one
    forwarding hop), and stays answered."""
    regions = _regions(hosts, pods)
    enforce_nat(ctx, nat)
    timeline = experiment(ctx, src, dst, regions, float(budget), cut)
    if (verdict := _precondition(timeline, src, dst)) is not None:
        return verdict
    assert timeline.t_cut is not None and timeline.t_lift is not None
    took = recovery(timeline.probes, timeline.t_cut, timeline.t_lift, direct=False)
    if took is None:
        direct = any(a is not None and t is not None and t >= DIRECT_TTL
                     for s, a, t in timeline.probes if timeline.t_cut + 1 <= s < timeline.t_lift)
        if direct:
            raise CannotJudge(f"probes still arrived directly while the {src}-{dst} underlay was cut")
        return fail(f"with the {src}-{dst} underlay cut, {src}'s pod did not reach {dst}'s pod through {via} "
                    f"within {budget} s (measured for {timeline.t_lift - timeline.t_cut:.0f} s)")
    if took > budget:
        return fail(f"with the {src}-{dst} underlay cut, traffic took {took:.1f} s to flow through {via} again: "
                    f"more than the {budget} s budget")
    return ok(f"with the {src}-{dst} underlay cut, traffic flowed through {via} again after {took:.1f} s "
              f"(budget {budget} s)")


@check(disruptive=True)
def failback(ctx: Context, *, src: str, dst: str, hosts: list[str], pods: list[str], budget: int,
             cut: str | None = None, nat: dict[str, Any] | None = None) -> Verdict:
    """Once the cut underlay between ``src`` and ``dst`` is back, the direct tunnel carries the traffic
    again within ``budget`` seconds (the same run as :func:`failover`)."""
    regions = _regions(hosts, pods)
    enforce_nat(ctx, nat)
    timeline = experiment(ctx, src, dst, regions, float(budget), cut)
    if (verdict := _precondition(timeline, src, dst)) is not None:
        return verdict
    assert timeline.t_lift is not None
    end = max((p[0] for p in timeline.probes), default=timeline.t_lift) + 1
    took = recovery(timeline.probes, timeline.t_lift, end, direct=True)
    if took is None or took > budget:
        said = "not" if took is None else f"only after {took:.1f} s, not"
        return fail(f"after the {src}-{dst} underlay came back, traffic returned to the direct tunnel {said} "
                    f"within the {budget} s budget")
    return ok(f"after the {src}-{dst} underlay came back, the direct tunnel carried traffic again after {took:.1f} s")


@check(disruptive=True)
def survives_restart(ctx: Context, *, hosts: list[str], pods: list[str], within: float = 30.0,
                     nat: dict[str, Any] | None = None) -> Verdict:
    """The mesh is in the hosts' files: once it works, every region is restarted (all processes gone, the
    start-up run again), and within ``within`` seconds every pod reaches every other pod again."""
    regions = _regions(hosts, pods)
    enforce_nat(ctx, nat)
    now = _reach_verdict(ctx, regions, 6.0)
    if not now.passed:
        return fail(f"before any restart: {now.feedback}")
    ctx.restart(*hosts)
    enforce_nat(ctx, nat)  # a restart forgot what was cached; the image's start-up set the rules again anyway
    end = time.monotonic() + within
    while True:
        verdict = _reach_verdict(ctx, regions, 5.0)
        if verdict.passed:
            return ok(f"after {', '.join(hosts)} restarted, {verdict.feedback}")
        if time.monotonic() > end:
            return fail(f"{within:g} s after {', '.join(hosts)} restarted: {verdict.feedback} - the tunnels and "
                        f"bird must come up from the hosts' own start-up files")
        time.sleep(1.0)


#: Run in an admin observer of the NAT: every ``interval`` s for ``duration`` s, which of ``peers`` (wan
#: addresses) the NATed address has a live UDP mapping toward (the NAT's own connection table: expired
#: entries are not listed). Prints ``{"samples": [[t, [peer...]], ...]}``.
NAT_WATCH_SCRIPT = r"""
import json, sys, time
natted, peers, duration, interval = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
start, samples = time.monotonic(), []
while True:
    t = time.monotonic() - start
    try:
        with open("/proc/net/nf_conntrack") as fh:
            lines = fh.read().splitlines()
    except OSError as e:
        print(json.dumps({"error": f"{e.errno} {e.strerror}"}))
        sys.exit(0)
    live = set()
    for line in lines:
        f = line.split()
        if "udp" not in f[:4]:
            continue
        src = next((x[4:] for x in f if x.startswith("src=")), None)
        dst = next((x[4:] for x in f if x.startswith("dst=")), None)
        if src == natted and dst in peers:
            live.add(dst)
    samples.append([round(t, 2), sorted(live)])
    if t >= duration:
        break
    time.sleep(interval)
print(json.dumps({"samples": samples}))
"""


def mapping_gaps(samples: Sequence[Sequence[Any]], peers: Sequence[str]) -> dict[str, float]:
    """peer -> the first time (s into the watch) its mapping was missing, for the peers whose mapping was
    there at the first sample (a tunnel the learner did not build has none to keep); never missing: left out."""
    if not samples:
        return {}
    watched = [p for p in peers if p in samples[0][1]]
    gone: dict[str, float] = {}
    for t, live in samples:
        for peer in watched:
            if peer not in live and peer not in gone:
                gone[peer] = float(t)
    return gone


def settle(ctx: Context, regions: dict[str, str], within: float) -> None:
    """Wait (at most ``within`` s) until every pod reaches every other again: a disruptive check leaves the
    mesh as it found it for the next one, as far as the learner's configuration recovers by itself."""
    end = time.monotonic() + within
    while time.monotonic() < end:
        try:
            if all(ttl is not None for ttl in reach(ctx, regions, 2.0).values()):
                return
        except Unbound:
            return
        time.sleep(1.0)


@check(disruptive=True)
def nat_idle(ctx: Context, *, hosts: list[str], pods: list[str], nat: dict[str, Any], gateway: str,
             forgets: int, quiet: float = 40.0, within: float = 8.0, recover: float = 90.0) -> Verdict:
    """An idle NATed region stays reachable: with every region's bird frozen (SIGSTOP: no BGP traffic, the
    routes stay in the kernels) for ``quiet`` seconds, the NAT (``gateway``) keeps each UDP mapping the
    hidden region had toward a peer alive the whole time (its connection table, read twice a second), and
    then, bird still frozen, each peer's pod reaches the hidden region's pod within ``within`` seconds
    without the hidden region sending first. Bird is thawed (SIGCONT) however the check ends; then the
    check waits (at most ``recover`` s) for the mesh to reconverge before the next check.

    ``within`` leaves room for one WireGuard handshake retry (REKEY_TIMEOUT, 5 s): with a mapping gone, no
    wait is long enough (rc does not send while it is quiet), and the gaps in the mapping fail it anyway;
    3 s once failed a correct mesh whose first handshake packet was lost under a loaded CI machine."""
    regions = _regions(hosts, pods)
    enforce_nat(ctx, nat)
    hidden, peers = str(nat["hidden"]), [str(p) for p in nat["peers"]]
    pairs = [(p, hidden) for p in peers]
    try:
        before = reach(ctx, regions, 6.0, pairs)
    except Unbound as gone:
        return fail(f"the pod address {gone} is no longer on its region's host - leave the pods' lo addresses")
    if missing := [f"{s}->{d}" for (s, d), ttl in before.items() if ttl is None]:
        return fail(f"before any quiet, these pods get no answer from {hidden}'s pod: {', '.join(missing)} - "
                    f"build the mesh first")
    addresses = {ctx.address(p): p for p in peers}
    frozen: list[tuple[str, int]] = []
    try:
        for host in regions:
            listener = ctx.listener(host, 179)
            if listener is not None and ctx.signal(host, listener.pid, "STOP"):
                frozen.append((host, listener.pid))
        watch = run_json(ctx.observe(gateway, admin=True), NAT_WATCH_SCRIPT, ctx.address(hidden),
                         json.dumps(sorted(addresses)), quiet, 0.5, timeout=quiet + 30)
        samples = watch.get("samples")
        if "error" in watch or not isinstance(samples, list) or not samples:
            raise ObservationError(f"the NAT's connection table could not be read: {str(watch)[:200]}")
        try:
            after = reach(ctx, regions, within, pairs)
        except Unbound as gone:
            return fail(f"the pod address {gone} is no longer on its region's host")
    finally:
        for host, pid in frozen:
            ctx.signal(host, pid, "CONT")
        if frozen:
            settle(ctx, regions, recover)
    if not samples[0][1]:
        raise CannotJudge(f"{hidden}'s pod answered, yet {gateway} held no UDP mapping of {hidden}'s")
    gaps = {addresses[a]: t for a, t in mapping_gaps(samples, sorted(addresses)).items()}
    lost = [f"{s}->{d}" for (s, d), ttl in after.items() if ttl is None]
    if gaps:
        said = ", ".join(f"toward {p} after {t:.0f} s" for p, t in sorted(gaps.items()))
        return fail(f"with the mesh quiet (bird frozen, no BGP traffic) for {quiet:g} s, {gateway} forgot "
                    f"{hidden}'s mapping {said} (it forgets one {forgets} s after its last packet)"
                    + (f"; then {', '.join(lost)} got no answer within {within:g} s" if lost else ""))
    if lost:
        return fail(f"after {quiet:g} s of quiet, {', '.join(lost)} got no answer within {within:g} s, although "
                    f"{gateway} kept {hidden}'s mappings")
    return ok(f"after {quiet:g} s with no BGP traffic, {gateway} still held {hidden}'s mappings and "
              f"{', '.join(peers)} reached {hidden}'s pod at once")
