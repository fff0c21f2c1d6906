"""Firewall checks (iptables): reachability seen from other hosts, the ruleset
read with the observer's own iptables inside the target's network namespace,
and the saved rules replayed in an empty scratch namespace."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from graders._net import describe, listen, shaping, states_from, tcp_states
from ladderlab.grading.checks import Context, Verdict, check, fail, ok

BUILTIN = ("INPUT", "FORWARD", "OUTPUT")
_COUNTERS = re.compile(r"^\[\d+:\d+\]\s*")


@dataclass
class Chain:
    policy: str
    rules: list[str] = field(default_factory=list)


def parse_save(text: str, table: str = "filter") -> dict[str, Chain]:
    """The chains of one table in ``iptables-save`` output (counters dropped)."""
    chains: dict[str, Chain] = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            current = line[1:]
            continue
        if current != table:
            continue
        if line.startswith(":"):
            name, _, policy = line[1:].partition(" ")
            chains[name] = Chain(policy.split()[0] if policy else "-")
        elif line.startswith("-A "):
            line = _COUNTERS.sub("", line)
            name, _, rest = line[3:].partition(" ")
            chains.setdefault(name, Chain("-")).rules.append(rest.strip())
        elif line.startswith("[") and "-A " in line:
            rest = _COUNTERS.sub("", line)
            name, _, spec = rest[3:].partition(" ")
            chains.setdefault(name, Chain("-")).rules.append(spec.strip())
    return chains


def drops_by_default(chain: Chain) -> bool:
    """The chain's policy drops, or its last rule drops or rejects everything."""
    if chain.policy == "DROP":
        return True
    if chain.rules:
        last = chain.rules[-1].split()
        return len(last) >= 2 and last[0] == "-j" and last[1] in ("DROP", "REJECT")
    return False


def canonical(chains: dict[str, Chain]) -> dict[str, tuple[str, tuple[str, ...]]]:
    """A comparable form: built-in chains always present, user chains only when they hold rules."""
    out = {}
    for name, chain in chains.items():
        if name in BUILTIN or chain.rules:
            out[name] = (chain.policy, tuple(" ".join(r.split()) for r in chain.rules))
    for name in BUILTIN:
        out.setdefault(name, ("ACCEPT", ()))
    return out


def live_ruleset(ctx: Context, host: str) -> dict[str, Chain]:
    """The live filter table of ``host``, read once per grading with the observer's own iptables-save."""

    def read() -> str:
        result = ctx.observe(host, admin=True).run("iptables-save -t filter", timeout=20)
        if result.failed:
            raise RuntimeError(f"iptables-save in {host}'s namespace exited {result.rc}: "
                               f"{result.stderr.strip()[:200]}")
        return result.stdout

    return parse_save(ctx.cached(f"iptables-save:{host}", read))


def shaped(ctx: Context, host: str) -> Verdict | None:
    """A failed verdict when traffic control on ``host`` could make open ports look closed."""
    found = shaping(ctx.observe(host))
    if not found:
        return None
    return fail(f"{host} has traffic control configured ({', '.join(found)}): delayed answers look like "
                f"closed ports, so closed ports cannot be judged - remove it (tc qdisc del)")


def unfiltered(ctx: Context, host: str) -> Verdict | None:
    """A failed verdict when ``host`` filters nothing inbound (so an "allowed" result proves nothing)."""
    if drops_by_default(live_ruleset(ctx, host).get("INPUT", Chain("ACCEPT"))):
        return None
    return fail(f"{host} filters nothing inbound yet (INPUT accepts by default), so this rule cannot be "
                f"judged - add a default-deny first")


@check
def allowed_through(ctx: Context, *, source: str, target: str, ports: list[int]) -> Verdict:
    """Behind ``target``'s default-deny, every port in ``ports`` accepts connections from ``source``."""
    if (verdict := unfiltered(ctx, target)) is not None:
        return verdict
    states = tcp_states(ctx.observe(source), [(ctx.address(target), p) for p in ports])
    bad = [f"{target}:{p} {describe(s)}" for p, s in zip(ports, states, strict=True) if s != "open"]
    if bad:
        return fail(f"from {source}: {'; '.join(bad)} - these services must stay reachable")
    return ok(f"from {source}: {target} ports {', '.join(map(str, ports))} accept connections")


@check
def default_deny(ctx: Context, *, host: str) -> Verdict:
    """Inbound traffic not explicitly allowed is dropped: INPUT policy DROP or a final catch-all drop."""
    chains = live_ruleset(ctx, host)
    chain = chains.get("INPUT", Chain("ACCEPT"))
    if drops_by_default(chain):
        return ok(f"{host}: INPUT drops what no rule allows (policy {chain.policy})")
    return fail(f"{host}: INPUT policy is {chain.policy} and its last rule does not drop - inbound is "
                f"default-allow (set `iptables -P INPUT DROP` after your allow rules)")


@check
def loopback_allowed(ctx: Context, *, host: str, port: int) -> Verdict:
    """Behind ``host``'s default-deny, connections over the loopback interface still work."""
    if (verdict := unfiltered(ctx, host)) is not None:
        return verdict
    state = tcp_states(ctx.observe(host), [("127.0.0.1", port)])[0]
    if state == "open":
        return ok(f"{host}: 127.0.0.1:{port} accepts connections over loopback")
    return fail(f"inside {host}: 127.0.0.1:{port} {describe(state)} - allow the loopback interface (-i lo)")


@check
def established_allowed(ctx: Context, *, host: str, peer: str, port: int = 18080) -> Verdict:
    """Behind ``host``'s default-deny, replies to connections it opens come back in (stateful firewall)."""
    if (verdict := unfiltered(ctx, host)) is not None:
        return verdict
    listen(ctx.observe(peer), port, 20)
    state = tcp_states(ctx.observe(host), [(ctx.address(peer), port)], timeout=2.0)[0]
    if state == "open":
        return ok(f"{host} can open connections to {peer}: replies are let back in")
    return fail(f"from {host}: a connection to {peer}:{port} {describe(state)} - replies to traffic {host} "
                f"starts are dropped (allow conntrack state ESTABLISHED,RELATED)")


@check
def only_from(ctx: Context, *, target: str, port: int, allowed: list[str], denied: list[str]) -> Verdict:
    """``target:port`` accepts connections from ``allowed`` hosts and from none of ``denied``."""
    with ThreadPoolExecutor(max_workers=1) as pool:  # the shaping guard and the probes at the same time
        guard = pool.submit(shaped, ctx, target)
        states = states_from(ctx, [*allowed, *denied], ctx.address(target), port)
        if (verdict := guard.result()) is not None:
            return verdict
    problems = [f"from {s} it {describe(states[s])} but must accept" for s in allowed if states[s] != "open"]
    problems += [f"from {s} it accepts connections but must not" for s in denied if states[s] == "open"]
    if problems:
        return fail(f"{target}:{port}: {'; '.join(problems)}")
    return ok(f"{target}:{port} answers {', '.join(allowed)} only")


@check
def closed(ctx: Context, *, target: str, port: int, sources: list[str]) -> Verdict:
    """``target:port`` accepts connections from none of ``sources``."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        guard = pool.submit(shaped, ctx, target)
        states = states_from(ctx, sources, ctx.address(target), port)
        if (verdict := guard.result()) is not None:
            return verdict
    open_from = [s for s in sources if states[s] == "open"]
    if open_from:
        return fail(f"{target}:{port} still accepts connections from {', '.join(open_from)} - it must be closed")
    return ok(f"{target}:{port} is closed to {', '.join(sources)}")


@check
def persisted(ctx: Context, *, host: str, path: str = "/etc/iptables/rules.v4") -> Verdict:
    """The saved ruleset at ``path`` restores, in an empty namespace, to exactly the live (default-deny) table."""
    if (verdict := unfiltered(ctx, host)) is not None:
        return verdict
    saved = ctx.read_file(host, path)
    if saved is None:
        return fail(f"{host}: {path} does not exist - save the rules (netfilter-persistent save)")
    scratch = ctx.scratch()
    scratch.put_file("/root/rules.v4", saved)  # in the scratch container, which nothing else shares
    restored = scratch.run("iptables-restore /root/rules.v4 && iptables-save -t filter", timeout=30)
    if restored.failed:
        return fail(f"{host}: {path} does not restore: {restored.stderr.strip()[:160]}")
    want = canonical(live_ruleset(ctx, host))
    got = canonical(parse_save(restored.stdout))
    if got == want:
        return ok(f"{host}: {path} restores to the live ruleset")
    for name in sorted(set(want) | set(got)):
        if want.get(name) != got.get(name):
            live = want.get(name, ("-", ()))
            file = got.get(name, ("-", ()))
            what = "policy" if live[0] != file[0] else f"{len(live[1])} live rules vs {len(file[1])} saved"
            return fail(f"{host}: {path} differs from the live rules in chain {name} ({what}) - "
                        f"save again after your last change")
    return fail(f"{host}: {path} differs from the live rules")
