"""Subnets for lab networks that declare a ``prefix``, picked by the engine so that environments never collide.

An env.yaml cannot name a subnet: two learners' environments of the same spec on one engine would
ask for the same one. It names a prefix length (``prefix: 24``) and per-host *offsets*
(``addresses: {lan: 5}``); when the environment comes up, :func:`create_network` picks a free subnet
of that size from ladderlab's pool, at random, skipping every subnet the engine already has and (on a
local engine) every route of this machine, and creates the network. When another process took the
same subnet in the meantime, Docker refuses with "Pool overlaps": we pick again.

Layout of a subnet of ``2**k`` addresses (see :func:`~ladderlab.environments.spec.usable_offsets`):
offsets ``1 .. 2**k/2 - 1`` are for static addresses; the upper half is Docker's ``ip_range`` for
containers without one (hosts without ``addresses``, the grading sandbox), and its last usable address is
the bridge (the gateway). So a static address never races a dynamic one.

>>> layout(ipaddress.IPv4Network("10.200.7.0/24"))["ip_range"]
'10.200.7.128/25'
"""

from __future__ import annotations

import ipaddress
import os
import random
import socket
import struct
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import docker
from docker.errors import APIError

from ladderlab.environments import hostguard
from ladderlab.errors import EnvError

Say = Callable[[str], None]
#: Where the engine's picks come from; override with ``LADDERLAB_SUBNET_POOL`` (a private IPv4 CIDR).
DEFAULT_POOL = "10.200.0.0/13"
POOL_VARIABLE = "LADDERLAB_SUBNET_POOL"
ATTEMPTS = 12
PROC_ROUTE = Path("/proc/net/route")


def pool(environ: Mapping[str, str] | None = None) -> ipaddress.IPv4Network:
    """The pool to pick subnets from (:data:`DEFAULT_POOL` unless ``LADDERLAB_SUBNET_POOL`` says otherwise)."""
    raw = (environ if environ is not None else os.environ).get(POOL_VARIABLE, "").strip() or DEFAULT_POOL
    try:
        net = ipaddress.ip_network(raw)
    except ValueError:
        raise EnvError(f"{POOL_VARIABLE}={raw!r} is not a network like {DEFAULT_POOL}") from None
    if not isinstance(net, ipaddress.IPv4Network) or not net.is_private:
        raise EnvError(f"{POOL_VARIABLE}={raw!r} must be a private IPv4 network (10/8, 172.16/12, 192.168/16)")
    return net


def engine_subnets(client: docker.DockerClient) -> list[ipaddress.IPv4Network]:
    """Every IPv4 subnet of every network the engine has."""
    out = []
    for net in client.api.networks():
        for cfg in (net.get("IPAM") or {}).get("Config") or []:
            try:
                found = ipaddress.ip_network(str(cfg.get("Subnet", "")), strict=False)
            except ValueError:
                continue
            if isinstance(found, ipaddress.IPv4Network):
                out.append(found)
    return out


def host_routes(path: Path = PROC_ROUTE) -> list[ipaddress.IPv4Network]:
    """The destinations of this machine's IPv4 routes, without the default route: a lab subnet on top of a
    route to a real network (a company LAN on 10.200/16) would take that network away from this machine."""
    out: list[ipaddress.IPv4Network] = []
    try:
        lines = path.read_text().splitlines()[1:]
    except OSError:
        return out
    for line in lines:
        fields = line.split()
        if len(fields) < 8:
            continue
        try:
            dest, mask = (socket.inet_ntoa(struct.pack("<I", int(f, 16))) for f in (fields[1], fields[7]))
            net = ipaddress.IPv4Network(f"{dest}/{mask}", strict=False)
        except (ValueError, struct.error):
            continue
        if net.prefixlen:
            out.append(net)
    return out


def pick(space: ipaddress.IPv4Network, prefix: int, used: Iterable[ipaddress.IPv4Network],
         rng: random.Random | None = None) -> ipaddress.IPv4Network:
    """A subnet of ``prefix`` inside ``space`` that overlaps nothing in ``used``, chosen at random (so that
    concurrent pickers rarely choose the same one). EnvError when the pool is full."""
    if prefix < space.prefixlen:
        raise EnvError(f"a /{prefix} network does not fit in the subnet pool {space} ({POOL_VARIABLE})")
    rng = rng or random.SystemRandom()
    taken = [u for u in used if u.overlaps(space)]
    count = 1 << (prefix - space.prefixlen)
    size = 1 << (32 - prefix)
    base = int(space.network_address)

    def nth(i: int) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network((base + i * size, prefix))

    for _ in range(64):
        candidate = nth(rng.randrange(count))
        if not any(candidate.overlaps(t) for t in taken):
            return candidate
    start = rng.randrange(count)
    for j in range(count):
        candidate = nth((start + j) % count)
        if not any(candidate.overlaps(t) for t in taken):
            return candidate
    raise EnvError(f"no free /{prefix} subnet is left in the pool {space}: remove old environments "
                   f"(ladderlab env reap) or set {POOL_VARIABLE} to a larger private network")


def layout(subnet: ipaddress.IPv4Network) -> dict[str, str]:
    """Docker's IPAM settings for ``subnet``: dynamic addresses in the upper half, the gateway its last
    usable address."""
    upper = list(subnet.subnets(prefixlen_diff=1))[1]
    return {"subnet": str(subnet), "ip_range": str(upper), "gateway": str(subnet.broadcast_address - 1)}


def address(subnet: str, offset: int) -> str:
    """The address at ``offset`` inside ``subnet``."""
    return str(ipaddress.IPv4Network(subnet)[offset])


def create_network(client: docker.DockerClient, name: str, labels: Mapping[str, str], prefix: int, *,
                   local: bool, say: Say | None = None, rng: random.Random | None = None,
                   ) -> tuple[str, ipaddress.IPv4Network]:
    """Create lab network ``name`` on a free subnet of ``prefix``; returns ``(bridge, subnet)``."""
    space = pool()
    for _attempt in range(ATTEMPTS):
        used = engine_subnets(client) + (host_routes() if local else [])
        subnet = pick(space, prefix, used, rng)
        lay = layout(subnet)
        ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(
            subnet=lay["subnet"], iprange=lay["ip_range"], gateway=lay["gateway"])])
        try:
            return hostguard.create_lab_network(client, name, labels, say, ipam=ipam), subnet
        except APIError as exc:
            if "overlap" not in str(exc).lower():
                raise EnvError(f"cannot create network {name}: {exc.explanation or exc}") from None
            continue  # another environment took it between our look and our create: pick again
    raise EnvError(f"cannot create network {name}: {ATTEMPTS} subnets picked from {space} were all taken "
                   "by the time Docker saw them")
