"""Firewall checks (iptables): reachability seen from other hosts, the ruleset
read with the observer's own iptables inside the target's network namespace,
and the saved rules replayed in an empty scratch namespace.

Learner-chosen text reaches the ruleset's text form: a rule comment may hold
quotes, newlines and escape sequences (iptables accepts them and
``iptables-save`` prints them raw inside a quoted string), and a newline there
once forged a whole ``:INPUT DROP`` line. So the parser splits lines only
outside quoted strings and refuses (the learner's failure, one line of
feedback) any control character anywhere, any quoted string that spans lines,
and any table or chain declared twice.

Reachability is judged the way real clients connect (``_net.REAL_CLIENT``: SYN
retransmits and a second attempt), and a port whose rules depend on timing,
history or chance (``-m recent``, ``limit``, ``statistic``... or a userspace
queue) is refused rather than judged closed: such a rule can drop exactly the
probes a grader sends while real clients get through.

UDP: the firewall lab's services are all TCP (ssh, http, the metrics endpoint,
the internal line-protocol service), so their reachability is probed over TCP.
What a rule set must do for every protocol is probed over UDP as well as TCP,
with services the checks start themselves: the default-deny must drop a new
TCP or UDP port nobody opened, and replies to UDP that the host sends (DNS)
must come back in as TCP replies do.
"""

from __future__ import annotations

import re
import secrets
import shlex
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from graders._net import ObservationError, control_free, describe, listen, shaping, states_from, tcp_states, udp_states
from ladderlab.errors import LearnerState
from ladderlab.grading.checks import Context, Runner, Verdict, check, fail, ok

BUILTIN = ("INPUT", "FORWARD", "OUTPUT")

#: Matches whose verdict depends on timing, history or chance, and arbitrary packet matchers that can tell
#: one client's packets from another's: a port behind them cannot be judged closed from a few probes.
HISTORY_MATCHES = frozenset({"recent", "limit", "hashlimit", "connlimit", "statistic", "time", "quota", "connbytes",
                             "rateest", "u32", "bpf", "osf", "nfacct", "nth", "random"})
#: Targets that hand the verdict to something else (a userspace queue, a dynamically filled ipset).
HISTORY_TARGETS = frozenset({"NFQUEUE", "QUEUE", "SET", "TARPIT"})
_PORT_OPTIONS = ("--dport", "--destination-port", "--dports", "--destination-ports", "--ports")
_LEGACY_WARNING = "iptables-legacy tables present"
#: iptables-nft-save's comments for a table it does not print in full: rules in native nft expressions
#: (the table is left out) or extra nft base chains (left out of the table, yet they filter).
_HIDDEN_TABLE = re.compile(r"^# Table `(\w+)' (?:is incompatible|contains incompatible base-chains)", re.M)


@dataclass
class Chain:
    policy: str
    rules: list[str] = field(default_factory=list)


def _lines(text: str) -> list[str]:
    """Lines of ``iptables-save`` output; :class:`LearnerState` when learner text could forge one."""
    control_free(text, "the ruleset (a rule comment or name)", allow="\n")
    lines = text.split("\n")
    for line in lines:
        quoted = escaped = False
        for ch in line:
            if escaped:
                escaped = False
            elif quoted and ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = not quoted
        if quoted:
            raise LearnerState("a rule's quoted text (a comment) spans several lines, so the ruleset cannot be "
                               "judged - remove newlines from rule comments")
    return lines


def parse_tables(text: str) -> dict[str, dict[str, Chain]]:
    """Every table in ``iptables-save`` output: table -> chain -> policy and rules (counters dropped)."""
    tables: dict[str, dict[str, Chain]] = {}
    current: dict[str, Chain] | None = None
    name = ""
    ruled = False
    for raw in _lines(text):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            if current is not None or line[1:] in tables:
                raise LearnerState(f"table {line[1:]!r} appears twice in the ruleset, so it cannot be judged")
            name, current, ruled = line[1:], {}, False
            tables[name] = current
        elif line == "COMMIT":
            if current is None:
                raise ObservationError("iptables-save printed COMMIT outside a table")
            current = None
        elif current is None:
            raise ObservationError(f"iptables-save printed {line[:60]!r} outside a table")
        elif line.startswith(":"):
            chain, _, policy = line[1:].partition(" ")
            if ruled or chain in current:
                raise LearnerState(f"chain {chain!r} of table {name} is declared twice or after a rule, "
                                   f"so the ruleset cannot be judged")
            current[chain] = Chain(policy.split()[0] if policy else "-")
        else:
            if line.startswith("[") and "] " in line:  # iptables-save -c: "[packets:bytes] -A ..."
                line = line.split("] ", 1)[1].lstrip()
            if not line.startswith("-A "):
                raise ObservationError(f"iptables-save printed an unexpected line {line[:60]!r}")
            ruled = True
            chain, _, rest = line[3:].partition(" ")
            current.setdefault(chain, Chain("-")).rules.append(rest.strip())
    if current is not None:
        raise LearnerState(f"table {name} is not committed in the ruleset")
    return tables


def parse_save(text: str, table: str = "filter") -> dict[str, Chain]:
    """The chains of one table in ``iptables-save`` output (counters dropped)."""
    return parse_tables(text).get(table, {})


def tokens(rule: str) -> list[str]:
    """A rule's words as iptables meant them (quoted comments kept whole)."""
    try:
        return shlex.split(rule)
    except ValueError:
        raise LearnerState(f"a rule cannot be read ({rule[:60]!r})") from None


def drops_by_default(chain: Chain) -> bool:
    """The chain's policy drops, or its last rule drops or rejects everything."""
    if chain.policy == "DROP":
        return True
    if chain.rules:
        last = tokens(chain.rules[-1])
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


#: How many times the ruleset is read, at most, until two reads in a row agree.
SAVE_READS = 4


def _save_once(observer: Runner, host: str) -> str:
    """One ``iptables-save`` in ``host``'s namespace.

    iptables-nft-save 1.8.9 ignores a failed netlink dump and prints what it fetched, exit 0 (its cache
    code drops every error but EINTR): a table missing from one read may be the tool's failure, not yet
    the learner's state. It also leaves out, with only a comment and exit 0, a table it cannot show."""
    result = observer.run("iptables-save", timeout=20)
    said = (result.stderr + result.stdout).strip()
    if result.failed and "incompatible" not in said:
        raise ObservationError(f"iptables-save in {host}'s namespace exited {result.rc}: {said[:200]}")
    # the tool's own comment lines only: a rule's comment (learner text) may say "incompatible" too
    hidden = sorted({m.group(1) for m in _HIDDEN_TABLE.finditer(result.stdout)})
    if hidden or result.failed:
        raise LearnerState(f"{host} holds nftables rules iptables cannot show (table {', '.join(hidden) or '?'}"
                           f"), so its ruleset cannot be judged - the grader reads iptables: use iptables "
                           f"(not nft) for this lab")
    return result.stdout


def live_tables(ctx: Context, host: str) -> dict[str, dict[str, Chain]]:
    """Every live iptables table of ``host``, read with the observer's own iptables-save, once per grading.

    The learner's ruleset is static once their notebook has run, so it is read until two reads in a row
    agree (see :func:`_save_once` for why one read is not enough); one that never settles is the learner's
    (something of theirs keeps changing it). The observer's tool failing is ours to fix (:class:`CannotJudge`
    via ObservationError); a table iptables cannot show is the learner's state (a failure)."""

    def read() -> str:
        admin = ctx.observe(host, admin=True)
        previous = parse_tables(_save_once(admin, host))
        for _ in range(SAVE_READS - 1):
            text = _save_once(admin, host)
            tables = parse_tables(text)
            if tables == previous:  # chain counters and comments aside
                return text
            previous = tables
        raise LearnerState(f"{host}'s ruleset changed between each of {SAVE_READS} reads, so it cannot be judged "
                           f"- leave the rules as they are once your notebook has run")

    text = ctx.cached(f"iptables-save:{host}", read)
    if _LEGACY_WARNING in text:
        raise LearnerState(f"{host} has rules in the legacy iptables backend (iptables-legacy), which the live "
                           f"nftables-based ruleset does not show - use iptables (nft) only")
    return parse_tables(text)


def live_ruleset(ctx: Context, host: str) -> dict[str, Chain]:
    """The live filter table of ``host``."""
    return live_tables(ctx, host).get("filter", {})


def _port_sets(words: list[str]) -> list[tuple[bool, list[tuple[int, int]] | None]]:
    """(negated, ranges) for each destination-port option of a rule (ranges None: unreadable)."""
    out: list[tuple[bool, list[tuple[int, int]] | None]] = []
    for i, word in enumerate(words):
        if word not in _PORT_OPTIONS or i + 1 >= len(words):
            continue
        ranges: list[tuple[int, int]] | None = []
        for part in words[i + 1].split(","):
            low, _, high = part.partition(":")
            if not low.isdigit() or (high and not high.isdigit()):
                ranges = None
                break
            assert ranges is not None
            ranges.append((int(low), int(high or low)))
        out.append((i > 0 and words[i - 1] == "!", ranges))
    return out


def applies_to(rule: str, port: int, proto: str = "tcp") -> bool:
    """Whether ``rule`` may match packets to ``proto`` port ``port`` (when unsure: yes)."""
    words = tokens(rule)
    if "-p" in words:
        i = words.index("-p")
        negated = i > 0 and words[i - 1] == "!"
        if i + 1 < len(words) and not negated and words[i + 1].lower() not in (proto, "all", "0"):
            return False
    for negated, ranges in _port_sets(words):
        if negated or ranges is None:
            continue
        if not any(low <= port <= high for low, high in ranges):
            return False
    return True


def history_dependent(rule: str) -> str | None:
    """What makes ``rule``'s verdict depend on timing, history or chance (``-m recent``), or None."""
    words = tokens(rule)
    for i, word in enumerate(words[:-1]):
        if word in ("-m", "--match") and words[i + 1] in HISTORY_MATCHES:
            return f"-m {words[i + 1]}"
        if word in ("-j", "--jump", "-g", "--goto") and words[i + 1] in HISTORY_TARGETS:
            return f"-j {words[i + 1]}"
    return None


def untestable(ctx: Context, host: str, port: int) -> Verdict | None:
    """A failed verdict when a rule of any table on ``host`` that may apply to ``port`` depends on timing,
    history or chance: the port could drop a grader's probes and let real clients in."""
    for table, chains in live_tables(ctx, host).items():
        for name, chain in chains.items():
            for rule in chain.rules:
                why = history_dependent(rule)
                if why is not None and applies_to(rule, port):
                    return fail(f"{host}: a rule in {table}/{name} uses {why}, so whether port {port} answers "
                                f"depends on timing, history or chance and cannot be judged closed - use plain "
                                f"ACCEPT/DROP rules for it")
    return None


def shaped(ctx: Context, host: str) -> Verdict | None:
    """A failed verdict when traffic control on ``host`` could make open ports look closed."""
    found = shaping(ctx.observe(host))
    if not found:
        return None
    return fail(f"{host} has traffic control configured ({', '.join(found)}): delayed answers look like "
                f"closed ports, so closed ports cannot be judged - remove it (tc qdisc del)")


def guarded(ctx: Context, host: str, port: int) -> Verdict | None:
    """The first reason ``host:port`` cannot be judged closed (traffic control, history-dependent rules)."""
    return shaped(ctx, host) or untestable(ctx, host, port)


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


def unused_port() -> int:
    """A port for a service a check starts itself: random per grading, away from every port a lab seeds."""
    return 20000 + secrets.randbelow(10000)


def _served(ctx: Context, host: str, port: int, seconds: float) -> str:
    """Start a TCP listener and a UDP echo on ``port`` in ``host``'s namespace; ``host``'s address."""
    observer = ctx.observe(host)
    listen(observer, port, seconds)
    listen(observer, port, seconds, udp=True)
    return ctx.address(host)


@check
def default_deny(ctx: Context, *, host: str, source: str | None = None) -> Verdict:
    """Inbound traffic not explicitly allowed is dropped: INPUT policy DROP or a final catch-all drop, and (with
    ``source``) a new TCP and UDP service on a port no rule should open is unreachable from ``source``."""
    chains = live_ruleset(ctx, host)
    chain = chains.get("INPUT", Chain("ACCEPT"))
    if not drops_by_default(chain):
        return fail(f"{host}: INPUT policy is {chain.policy} and its last rule does not drop - inbound is "
                    f"default-allow (set `iptables -P INPUT DROP` after your allow rules)")
    if source is not None:
        port = unused_port()
        address = _served(ctx, host, port, 25)
        with ThreadPoolExecutor(max_workers=1) as pool:
            udp = pool.submit(udp_states, ctx.observe(source), [(address, port)])
            tcp = tcp_states(ctx.observe(source), [(address, port)])[0]
            reached = [proto for proto, state in (("TCP", tcp), ("UDP", udp.result()[0])) if state == "open"]
        if reached:
            return fail(f"{host}: a new {' and '.join(reached)} service on a port no rule should open is reachable "
                        f"from {source} - accept only what must be reachable, for every protocol, and let the "
                        f"policy drop the rest")
    return ok(f"{host}: INPUT drops what no rule allows (policy {chain.policy})")


@check
def loopback_allowed(ctx: Context, *, host: str, port: int | None = None) -> Verdict:
    """Behind ``host``'s default-deny, connections over the loopback interface still work: to 127.0.0.1 and to
    the host's own address (both travel over ``lo``). Without ``port``, to a listener the check starts itself."""
    if (verdict := unfiltered(ctx, host)) is not None:
        return verdict
    if port is None:
        port = unused_port()
        listen(ctx.observe(host), port, 20)
    own = ctx.address(host)
    states = tcp_states(ctx.observe(host), [("127.0.0.1", port), (own, port)])
    bad = [f"{addr}:{port} {describe(state)}" for addr, state in zip(("127.0.0.1", own), states, strict=True)
           if state != "open"]
    if not bad:
        return ok(f"{host}: connections over loopback work (127.0.0.1 and its own address)")
    return fail(f"inside {host}: {'; '.join(bad)} - allow all traffic on the loopback interface (-i lo), "
                f"not just some source addresses")


@check
def established_allowed(ctx: Context, *, host: str, peer: str, port: int = 18080) -> Verdict:
    """Behind ``host``'s default-deny, replies to connections it opens come back in (stateful firewall)."""
    if (verdict := unfiltered(ctx, host)) is not None:
        return verdict
    listen(ctx.observe(peer), port, 20)
    listen(ctx.observe(peer), port, 20, udp=True)
    with ThreadPoolExecutor(max_workers=1) as pool:
        udp = pool.submit(udp_states, ctx.observe(host), [(ctx.address(peer), port)])
        tcp = tcp_states(ctx.observe(host), [(ctx.address(peer), port)])[0]
        udp_state = udp.result()[0]
    if tcp == "open" and udp_state == "open":
        return ok(f"{host} can open TCP connections and UDP exchanges with {peer}: replies are let back in")
    bad = ([f"a TCP connection to {peer}:{port} {describe(tcp)}"] if tcp != "open" else []) + \
          ([f"UDP datagrams to {peer}:{port} get no answer back"] if udp_state != "open" else [])
    return fail(f"from {host}: {'; '.join(bad)} - replies to traffic {host} starts are dropped (allow conntrack "
                f"state ESTABLISHED,RELATED for every protocol)")


@check
def only_from(ctx: Context, *, target: str, port: int, allowed: list[str], denied: list[str]) -> Verdict:
    """``target:port`` accepts connections from ``allowed`` hosts and from none of ``denied``."""
    with ThreadPoolExecutor(max_workers=1) as pool:  # the guards and the probes at the same time
        guard = pool.submit(guarded, ctx, target, port)
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
    """``target:port`` accepts connections from none of ``sources``, tried the way real clients try."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        guard = pool.submit(guarded, ctx, target, port)
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
