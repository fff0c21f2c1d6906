"""The learners' firewall on a hub (docs/hub-design.md, 4): a learner's processes reach their own practice
environment's hosts and nothing else off this machine.

Every packet a process of the group ``ladderlab-learners`` sends goes through one chain, from the first rule of
``filter OUTPUT`` (``-m owner --gid-owner <gid> -j LADDERLAB-LEARNERS``)::

    -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN     replies (a server answering the proxy)
    -o lo -j RETURN                                          loopback: hub, proxy, service, kernels (each
                                                             authenticates its callers)
    -m owner --uid-owner <uid> -d <subnet> -j RETURN         one per learner per environment they may reach
    -j REJECT                                                everything else, at once

The chain is rewritten whole, in one transaction (``iptables-restore --noflush``): there is no moment in which it
is empty, which would let every packet through. IPv6 gets the same chain, with no subnet rules (lab networks
are IPv4): a learner reaches nothing over IPv6 but loopback.
"""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Callable, Mapping, Sequence

from ladderlab.environments.hostguard import admin_tool
from ladderlab.errors import LadderlabError

CHAIN = "LADDERLAB-LEARNERS"
Runner = Callable[[list[str], str | None], subprocess.CompletedProcess[str]]


class GuardError(LadderlabError, RuntimeError):
    exit_code = 4


def _run(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False, timeout=60)


def _tool(name: str) -> str:
    found = admin_tool(name)
    if not found:
        raise GuardError(f"{name} is not installed: the learners' firewall needs it (apt-get install iptables)")
    return found


def ruleset(allowed: Mapping[int, Sequence[str]], v6: bool = False) -> str:
    """The chain's rules (iptables-restore input for ``filter``) for ``allowed``: uid -> subnets."""
    lines = ["*filter", f":{CHAIN} - [0:0]",
             f"-A {CHAIN} -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN",
             f"-A {CHAIN} -o lo -j RETURN"]
    if not v6:
        for uid in sorted(allowed):
            if not isinstance(uid, int) or uid <= 0:
                raise GuardError(f"uid {uid!r}: a learner's uid is a positive integer")
            nets = set()
            for subnet in allowed[uid]:
                try:
                    net = ipaddress.ip_network(subnet, strict=False)
                except ValueError as exc:
                    raise GuardError(f"subnet {subnet!r}: {exc}") from exc
                if net.version != 4:
                    raise GuardError(f"subnet {subnet!r}: lab networks are IPv4")
                nets.add(net)
            for net in sorted(nets):
                lines.append(f"-A {CHAIN} -m owner --uid-owner {uid} -d {net} -j RETURN")
    lines += [f"-A {CHAIN} -j REJECT", "COMMIT", ""]
    return "\n".join(lines)


def apply(gid: int, allowed: Mapping[int, Sequence[str]], run: Runner = _run) -> None:
    """Make the chain say ``allowed`` (one transaction per family), and make sure the learners' group jumps to it
    first in OUTPUT. Idempotent."""
    for save, restore, v6 in (("iptables", "iptables-restore", False), ("ip6tables", "ip6tables-restore", True)):
        try:
            ipt, ipt_restore = _tool(save), _tool(restore)
        except GuardError:
            if v6:
                continue  # no IPv6 tools: no IPv6 to guard
            raise
        result = run([ipt_restore, "--noflush"], ruleset(allowed, v6))
        if result.returncode != 0:
            raise GuardError(f"{restore} refused the learners' chain: {result.stderr.strip()[:300]}")
        jump = ["OUTPUT", "-m", "owner", "--gid-owner", str(gid), "-j", CHAIN]
        if run([ipt, "-w", "-C", *jump], None).returncode != 0:
            result = run([ipt, "-w", "-I", *jump[:1], "1", *jump[1:]], None)
            if result.returncode != 0:
                raise GuardError(f"{save} could not send the learners' traffic to {CHAIN}: "
                                 f"{result.stderr.strip()[:300]}")


def remove(gid: int, run: Runner = _run) -> None:
    """Take the chain out (the learners' traffic is no longer filtered: only when the hub stops)."""
    for save in ("iptables", "ip6tables"):
        try:
            ipt = _tool(save)
        except GuardError:
            continue
        jump = ["OUTPUT", "-m", "owner", "--gid-owner", str(gid), "-j", CHAIN]
        while run([ipt, "-w", "-D", *jump], None).returncode == 0:
            pass
        run([ipt, "-w", "-F", CHAIN], None)
        run([ipt, "-w", "-X", CHAIN], None)
