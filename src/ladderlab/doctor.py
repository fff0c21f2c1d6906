"""``ladderlab doctor``: what this machine has, what is missing, and the fix for each."""

from __future__ import annotations

import os
import shutil
import stat
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import docker
from docker.errors import DockerException

from ladderlab.config import Settings
from ladderlab.environments.images import base_image_id, exists, plan
from ladderlab.errors import LadderlabError

MIN_FREE_GB = 5.0
TUN = Path("/dev/net/tun")
BRIDGE_NF = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")


@dataclass(frozen=True)
class Finding:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def _engine() -> tuple[docker.DockerClient | None, Finding]:
    try:
        client = docker.from_env(timeout=10)
        version = client.version()
    except DockerException as exc:
        can = os.geteuid() == 0 and shutil.which("apt-get") is not None
        fix = ("run `ladderlab setup` (as root it installs docker.io and starts dockerd)" if can else
               "install Docker (Debian: sudo apt-get install docker.io), start it, and add your user "
               "to the docker group; or set DOCKER_HOST")
        return None, Finding("docker engine", False, f"no engine answers ({str(exc).splitlines()[0][:120]})", fix)
    return client, Finding("docker engine", True,
                           f"Docker {version.get('Version')} (API {version.get('ApiVersion')})")


def network_findings(tun: Path = TUN, bridge_nf: Path = BRIDGE_NF) -> list[Finding]:
    """What this machine's kernel allows lab networks (docs/environments.md, "What the network allows here").

    Both are facts about the engine's host: on a remote engine they describe this machine only."""
    try:
        mode = tun.stat().st_mode
        has_tun = stat.S_ISCHR(mode)
    except OSError:
        has_tun = False
    found = [Finding("/dev/net/tun", has_tun, f"{tun} is {'a character device' if has_tun else 'missing'} "
                     "(hosts with devices: [tun] need it: wireguard-go, kernel-libipsec)",
                     "load the tun driver (modprobe tun) or use a kernel with CONFIG_TUN")]
    try:
        value = bridge_nf.read_text().strip()
    except OSError:
        value = ""
    if value == "1":
        detail = ("1: traffic between lab hosts whose source or destination is off the network's subnet is "
                  "dropped (Docker's --internal rules); route inside one subnet or through a tunnel")
    elif value == "0":
        detail = "0: bridged frames between lab hosts skip iptables (off-subnet addresses pass on one network)"
    else:
        detail = "br_netfilter not loaded: bridged frames between lab hosts skip iptables"
    found.append(Finding("bridge-nf-call-iptables", True, detail))  # a fact labs are designed around, not a fault
    return found


def cluster_findings() -> list[Finding]:
    """Cluster mode (``LADDERLAB_CLUSTER``): the manager, then each Swarm node: state, availability,
    capacity, what ladderlab reserved on it, and which environments' images it holds."""
    from ladderlab.environments import fleet

    try:
        fl = fleet.get()
    except LadderlabError as exc:
        return [Finding("cluster", False, str(exc), "fix the cluster file named above")]
    if fl is None:
        return []
    try:
        nodes = fl.nodes()
    except LadderlabError as exc:
        return [Finding("cluster manager", False, str(exc), f"start the manager, or fix manager in {fl.config.path}")]
    found = [Finding("cluster manager", True, f"{fl.config.manager} ({len(nodes)} nodes)")]
    for n in nodes:
        detail = (f"{n.state}, {n.availability}, {n.role}; {n.reserved_cpus:g}/{n.cpus:g} CPUs and "
                  f"{n.reserved_memory >> 20}/{n.memory >> 20} MiB reserved by {len(n.environments)} environment(s); "
                  f"images: {', '.join(sorted(n.images)) or 'none'}")
        if not n.url:
            found.append(Finding(f"node {n.name}", False, detail + "; no engine address",
                                 f"add nodes.{n.name} to {fl.config.path}"))
        elif not n.answers:
            found.append(Finding(f"node {n.name}", False, detail + f"; {n.url} does not answer",
                                 "start the node's engine, or drain it (docker node update --availability drain)"))
        else:
            found.append(Finding(f"node {n.name}", True, detail))
    return found


def diagnose(settings: Settings) -> list[Finding]:
    found = [Finding("python", sys.version_info >= (3, 11), sys.version.split()[0], "use Python 3.11 or newer")]
    client, engine = _engine()
    found.append(engine)
    free = shutil.disk_usage(settings.cache_dir if settings.cache_dir.exists() else settings.root).free / 1e9
    found.append(Finding("disk (cache)", free >= MIN_FREE_GB, f"{free:.1f} GB free under {settings.root}",
                         f"free at least {MIN_FREE_GB:.0f} GB"))
    found.append(Finding("CA bundle for builds", True,
                         str(settings.ca_bundle) if settings.ca_bundle else "none (LADDERLAB_CA_BUNDLE=none)"))
    found += network_findings()
    found += cluster_findings()
    if client is None:
        return found
    info = client.info()
    root = info.get("DockerRootDir", "/var/lib/docker")
    if os.path.isdir(root):
        dfree = shutil.disk_usage(root).free / 1e9
        found.append(Finding("disk (docker)", dfree >= MIN_FREE_GB, f"{dfree:.1f} GB free under {root}",
                             f"free at least {MIN_FREE_GB:.0f} GB, or `docker image prune`"))
    debian = base_image_id(client, settings)
    if debian:
        found.append(Finding("base image", True, f"{settings.base_image} present"))
    else:
        how = ("`ladderlab images build` pulls it or bootstraps it with debootstrap"
               + ("" if os.geteuid() == 0 else " (bootstrapping needs root)"))
        found.append(Finding("base image", False, f"{settings.base_image} missing", how))
    try:
        refs = plan(settings, None, debian or "missing")
    except LadderlabError as exc:
        found.append(Finding("environments", False, str(exc), "fix the file named above"))
        return found
    missing = [r.tag for r in refs if not exists(client, r.tag)]
    found.append(Finding("lab images", not missing,
                         f"{len(refs) - len(missing)}/{len(refs)} built" + (f"; missing: {', '.join(missing)}"
                                                                            if missing else ""),
                         "ladderlab images build"))
    return found


def as_json(findings: list[Finding]) -> list[dict[str, object]]:
    return [asdict(f) for f in findings]
