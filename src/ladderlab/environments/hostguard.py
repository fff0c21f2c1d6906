"""The host's own firewall against ladderlab's lab networks, and the lab networks themselves.

Lab networks are ``--internal`` Docker bridges. That stops traffic routed *through*
the host (no egress), but not traffic *to* the host: every address of the grading
host (the bridge's gateway, ``docker0``, ``eth0``) answers on the bridge, so a
listener on ``0.0.0.0`` there (a JupyterHub, a PostgreSQL) is reachable from the
sandbox and from hosts whose root is the learner. And with ``br_netfilter`` loaded,
every connection between two lab hosts is tracked in the *host's* conntrack table,
where thousands of entries outlive the environment that made them.

Every lab network is therefore created here (:func:`create_lab_network`): internal,
with a bridge interface named ``llbr-`` plus 10 random hex digits (15 characters, the
kernel's limit), so that one rule set in the host's netfilter covers every ladderlab
bridge and nothing else, for IPv4 and (when the host has it) IPv6:

``filter INPUT -i llbr+ -j LADDERLAB-INPUT`` (first rule)
    ``LADDERLAB-INPUT``: replies to connections the host opened (``ESTABLISHED,RELATED``:
    readiness probes, SSH from a learner's kernel) return; everything else is rejected
    (ICMP administratively prohibited: the kernel rate-limits those, and a client fails at
    once instead of waiting out a timeout). A lab host cannot open a connection to any
    address of the grading host.
``raw PREROUTING -i llbr+ -j LADDERLAB-PREROUTING`` (first rule)
    ``LADDERLAB-PREROUTING``: traffic on a ladderlab bridge that is not addressed to the host
    itself (host to host inside one environment) is ``NOTRACK``: it never enters the host's
    conntrack table. Docker's isolation rules for internal networks are stateless (interface
    and subnet matches), so they do not need it; traffic to the host stays tracked, which is
    what lets replies through ``LADDERLAB-INPUT``.

Lifetime: the rules are installed idempotently (under a file lock, checked with ``-C``)
every time a lab network is created, and by ``ladderlab setup``; they are never removed
automatically. They match only ``llbr+`` interfaces, so they are inert when no lab network
exists, and removing them when "the last" network goes would race with a concurrent ``up``
creating the next one. ``ladderlab setup --remove-host-firewall`` removes them.
Re-installing at every creation also repairs them after a reboot or an ``iptables -F``.

What this cannot do: when the engine's network stack is not this machine's (``DOCKER_HOST``
over tcp/ssh, rootless Docker, a Docker Desktop VM), the bridge is not visible here and no
rule installed here applies to it: a :class:`HostGuardWarning` says so on every network
created, with the rules to install on the engine's host. When not root, rules can be neither
installed nor checked: a warning says so (``sudo ladderlab setup`` installs them). When root
on the engine's host, failing to install them is an error: no network is used unguarded.

>>> bridge = create_lab_network(client, "ll-x-lan", labels={})   # doctest: +SKIP
>>> status().installed                                          # doctest: +SKIP
True
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import secrets
import shutil
import subprocess
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker

from ladderlab.errors import EnvError

Say = Callable[[str], None]

BRIDGE_PREFIX = "llbr-"
BRIDGE_MATCH = "llbr+"  # iptables' interface wildcard: every name starting with "llbr"
BRIDGE_OPTION = "com.docker.network.bridge.name"
INPUT_CHAIN = "LADDERLAB-INPUT"
RAW_CHAIN = "LADDERLAB-PREROUTING"
REJECT_WITH = "{admin-prohibited}"  # per family: icmp-admin-prohibited / icmp6-adm-prohibited
LOCK_PATH = Path("/run/ladderlab-hostguard.lock")
SYS_NET = Path("/sys/class/net")
IFNAMSIZ = 15  # the kernel's limit on interface names (16 with the NUL)


class HostGuardWarning(UserWarning):
    """Lab networks are not (or cannot be shown to be) firewalled from the grading host's addresses."""


@dataclass(frozen=True)
class Table:
    """One chain ladderlab owns in one table, its rules, and the jump to it from a built-in chain."""

    table: str
    chain: str
    parent: str
    rules: tuple[tuple[str, ...], ...]

    @property
    def jump(self) -> tuple[str, ...]:
        return ("-i", BRIDGE_MATCH, "-j", self.chain)

    def rules_for(self, tool: str) -> list[tuple[str, ...]]:
        """The rules as ``tool`` (iptables or ip6tables) spells them."""
        reject = "icmp6-adm-prohibited" if tool == "ip6tables" else "icmp-admin-prohibited"
        return [tuple(reject if a == REJECT_WITH else a for a in r) for r in self.rules]


#: The rule set, the same for ``iptables`` and ``ip6tables``.
TABLES = (
    Table("filter", INPUT_CHAIN, "INPUT", (
        ("-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "RETURN"),
        ("-j", "REJECT", "--reject-with", REJECT_WITH),
    )),
    Table("raw", RAW_CHAIN, "PREROUTING", (
        ("-m", "addrtype", "!", "--dst-type", "LOCAL", "-j", "CT", "--notrack"),
    )),
)


def bridge_name() -> str:
    """A fresh interface name for a lab bridge: ``llbr-`` and 10 random hex digits."""
    name = BRIDGE_PREFIX + secrets.token_hex(5)
    assert len(name) <= IFNAMSIZ
    return name


def create_lab_network(client: docker.DockerClient, name: str, labels: Mapping[str, str], say: Say | None = None,
                       ipam: Any = None) -> str:
    """Create lab network ``name`` (internal bridge ``llbr-…``) and make sure the host firewall covers it.

    Returns the bridge's interface name. Raises :class:`EnvError` when we are root on the
    engine's host and the rules could not be installed (the caller tears the network down).
    """
    bridge = bridge_name()
    client.api.create_network(name, driver="bridge", internal=True, check_duplicate=True, labels=dict(labels),
                              options={BRIDGE_OPTION: bridge}, ipam=ipam)  # ipam: addressing.create_network
    if not (SYS_NET / bridge).exists():
        _warn(say, f"lab network {name} (bridge {bridge}) lives on an engine whose network stack is not this "
                   f"machine's ({os.environ.get('DOCKER_HOST') or 'rootless or VM engine'}): ladderlab cannot "
                   "firewall that host's own addresses from it. On the engine's host, as root, run "
                   "`ladderlab setup --no-images` or install: " + "; ".join(commands()))
        return bridge
    if os.geteuid() != 0:
        _warn(say, f"not root: cannot install or check the host firewall for lab network {name}; unless "
                   "`sudo ladderlab setup` ran since the last boot, services on 0.0.0.0 on this machine are "
                   "reachable from lab hosts")
        return bridge
    install()
    return bridge


def _warn(say: Say | None, message: str) -> None:
    warnings.warn(message, HostGuardWarning, stacklevel=3)
    if say is not None:
        say(f"WARNING: {message}")


def commands() -> list[str]:
    """The rule set as shell commands (for an operator firewalling a remote engine's host by hand)."""
    out = []
    for tool in ("iptables", "ip6tables"):
        for t in TABLES:
            out.append(f"{tool} -t {t.table} -N {t.chain}")
            out += [f"{tool} -t {t.table} -A {t.chain} {' '.join(r)}" for r in t.rules_for(tool)]
            out.append(f"{tool} -t {t.table} -I {t.parent} 1 {' '.join(t.jump)}")
    return out


# --- installing ---------------------------------------------------------------------------------


Runner = Callable[[list[str]], "subprocess.CompletedProcess[str]"]


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def admin_tool(name: str) -> str | None:
    """The path of an administrator's command (iptables, useradd...), also in /usr/sbin and /sbin when the
    caller's PATH lacks them (a service or a hub started without a login PATH); None when not installed."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def tools() -> list[str]:
    """``iptables``, and ``ip6tables`` when the host has IPv6; EnvError if there is no iptables."""
    if shutil.which("iptables") is None:
        raise EnvError("iptables is not installed: lab networks cannot be firewalled from this host's own "
                       "addresses. Fix: apt-get install iptables")
    found = ["iptables"]
    if Path("/proc/net/if_inet6").exists() and shutil.which("ip6tables") is not None:
        found.append("ip6tables")
    return found


@contextmanager
def _locked() -> Iterator[None]:
    """One installer at a time on this machine (iptables' own lock covers single commands only)."""
    fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class _Tool:
    def __init__(self, tool: str, run: Runner) -> None:
        self.tool, self.run = tool, run

    def __call__(self, table: str, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run([self.tool, "-w", "-t", table, *args])

    def must(self, table: str, *args: str) -> None:
        r = self(table, *args)
        if r.returncode != 0:
            raise EnvError(f"host firewall: `{self.tool} -t {table} {' '.join(args)}` exited {r.returncode}: "
                           f"{(r.stderr or r.stdout).strip()[:300]}")


def _chain_ok(ipt: _Tool, t: Table) -> bool:
    listed = ipt(t.table, "-S", t.chain)
    if listed.returncode != 0:
        return False
    body = [line for line in listed.stdout.splitlines() if line.startswith("-A ")]
    rules = t.rules_for(ipt.tool)
    return len(body) == len(rules) and all(ipt(t.table, "-C", t.chain, *r).returncode == 0 for r in rules)


def _jump_first(ipt: _Tool, t: Table) -> bool:
    listed = ipt(t.table, "-S", t.parent)
    rules = [line for line in listed.stdout.splitlines() if line.startswith("-A ")]
    return listed.returncode == 0 and bool(rules) and rules[0].split() == ["-A", t.parent, *t.jump]


def _ensure_table(ipt: _Tool, t: Table) -> bool:
    """Make ``t`` as it should be; True if anything had to change."""
    changed = False
    if not _chain_ok(ipt, t):
        if ipt(t.table, "-S", t.chain).returncode != 0:
            ipt.must(t.table, "-N", t.chain)
        ipt.must(t.table, "-F", t.chain)
        for rule in t.rules_for(ipt.tool):
            ipt.must(t.table, "-A", t.chain, *rule)
        changed = True
    if not _jump_first(ipt, t):
        while ipt(t.table, "-C", t.parent, *t.jump).returncode == 0:
            ipt.must(t.table, "-D", t.parent, *t.jump)
        ipt.must(t.table, "-I", t.parent, "1", *t.jump)
        changed = True
    return changed


def install(run: Runner = _run) -> bool:
    """Install (or repair) the rule set for every IP family the host has; True if anything changed.

    Idempotent and safe to run concurrently. Raises EnvError naming the failing command.
    """
    changed = False
    with _locked():
        for tool in tools():
            ipt = _Tool(tool, run)
            for t in TABLES:
                changed |= _ensure_table(ipt, t)
    return changed


def remove(run: Runner = _run) -> bool:
    """Remove the rule set; True if there was something to remove. Lab networks that still exist
    are unguarded afterwards: the next lab network created installs it again."""
    removed = False
    with _locked():
        for tool in tools():
            ipt = _Tool(tool, run)
            for t in TABLES:
                while ipt(t.table, "-C", t.parent, *t.jump).returncode == 0:
                    ipt.must(t.table, "-D", t.parent, *t.jump)
                    removed = True
                if ipt(t.table, "-S", t.chain).returncode == 0:
                    ipt.must(t.table, "-F", t.chain)
                    ipt.must(t.table, "-X", t.chain)
                    removed = True
    return removed


@dataclass
class Status:
    installed: bool
    detail: str
    families: dict[str, bool] = field(default_factory=dict)


def status(run: Runner = _run) -> Status:
    """Whether the rule set is in place, without changing anything (needs root)."""
    if os.geteuid() != 0:
        return Status(False, "not root: cannot read the host firewall")
    try:
        found = tools()
    except EnvError as exc:
        return Status(False, str(exc))
    fams = {}
    for tool in found:
        ipt = _Tool(tool, run)
        fams[tool] = all(_chain_ok(ipt, t) and _jump_first(ipt, t) for t in TABLES)
    ok = all(fams.values())
    detail = ", ".join(f"{k}: {'in place' if v else 'missing'}" for k, v in fams.items())
    return Status(ok, detail, fams)


def engine_is_here(client: docker.DockerClient) -> bool:
    """Whether the engine's bridges are interfaces of this machine (so rules installed here apply)."""
    bridges = [n for n in client.api.networks() if n.get("Driver") == "bridge"]
    if not bridges:
        return str(client.api.base_url).startswith("http+docker://")
    return any((SYS_NET / ((n.get("Options") or {}).get(BRIDGE_OPTION) or f"br-{n['Id'][:12]}")).exists()
               for n in bridges)


def prepare(client: docker.DockerClient, say: Say) -> None:
    """``ladderlab setup``: install the rule set now if this is the engine's host and we are root; else warn."""
    if not engine_is_here(client):
        _warn(say, "the Docker engine's network stack is not this machine's: firewall lab networks on the "
                   "engine's host (run `ladderlab setup --no-images` there as root, or: " + "; ".join(commands()) + ")")
    elif os.geteuid() != 0:
        _warn(say, "not root: the host firewall for lab networks is not installed (run `sudo ladderlab setup`)")
    else:
        changed = install()
        say(f"host firewall for lab networks ({BRIDGE_MATCH}): {'installed' if changed else 'in place'}")


# --- the host's addresses -----------------------------------------------------------------------


def parse_ip_addr(text: str) -> list[str]:
    """Every address in ``ip -j addr`` output, except loopback and link-local ones (those need an interface
    to be meaningful, and no lab host shares a link with the host's other interfaces)."""
    out: list[str] = []
    for link in json.loads(text or "[]"):
        for info in link.get("addr_info") or []:
            local = info.get("local")
            if not isinstance(local, str):
                continue
            addr = ipaddress.ip_address(local)
            if not (addr.is_loopback or addr.is_link_local):
                out.append(str(addr))
    return out


def gateways(client: docker.DockerClient) -> list[str]:
    """The gateway of every Docker network, where the engine reports one (a fresh dockerd 20.10 does
    not for the default bridge)."""
    out = []
    for net in client.api.networks():
        for cfg in (net.get("IPAM") or {}).get("Config") or []:
            gw = cfg.get("Gateway") if isinstance(cfg, dict) else None
            if gw:
                out.append(str(ipaddress.ip_address(gw.split("/")[0])))
    return out


def host_addresses(client: docker.DockerClient | None = None) -> list[str]:
    """Every IPv4/IPv6 address of this host's interfaces (``ip -j addr``), plus every Docker network's
    gateway when the engine reports one; loopback and link-local left out. Sorted, IPv4 first."""
    raw = subprocess.run(["ip", "-j", "addr"], capture_output=True, text=True, check=True, timeout=10).stdout
    found = set(parse_ip_addr(raw))
    if client is not None:
        found.update(gateways(client))
    return sorted(found, key=lambda a: (ipaddress.ip_address(a).version, ipaddress.ip_address(a)))


def inspect_bridge(client: docker.DockerClient, network: str) -> str:
    """The bridge interface name of a ladderlab network (empty if it has none of ours)."""
    info: dict[str, Any] = client.api.inspect_network(network)
    return str((info.get("Options") or {}).get(BRIDGE_OPTION, ""))
