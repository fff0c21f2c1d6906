"""The one owner of how ladderlab creates a container.

Every container ladderlab runs (lab hosts, observers, tool containers, scratch
containers, the grading sandbox) is created by :func:`create` from a
:class:`Plan`, and nothing else in the code base calls ``create_container``
(a unit test walks the sources to keep it so). The policy, whatever the kind:

* ``cap_drop=ALL``, then only capabilities the kind may have
  (:data:`KIND_CAPABILITIES`; lab hosts: their env.yaml's, within
  :data:`~ladderlab.environments.spec.CAPABILITY_ALLOWLIST`);
* ``no-new-privileges``, the engine's default seccomp profile, never
  privileged, an init process, private IPC and cgroup namespaces;
* pids, memory (swap = memory: no swap on top) and CPU limits;
* json-file logs capped at :data:`LOG_CONFIG`;
* no bind mounts (so never the Docker socket) and no volumes but the
  sandbox's own tmpfs ``/work``; no host
  namespace: networks are ``none``, a ladderlab network, or another
  ladderlab container's namespace; a pid namespace only of a ladderlab host;
* no devices, except that a lab host may have ``/dev/net/tun`` (``rwm``) when its env.yaml asks for
  ``devices: [tun]``; no sysctls, except a lab host's from
  :data:`~ladderlab.environments.spec.SYSCTL_ALLOWLIST` (namespaced ``net.*`` keys only);
* ``io.ladderlab.*`` labels naming the environment, its owner process and the
  container's kind (so teardown and the reaper find it);
* optionally a read-only root file system with size-capped tmpfs mounts
  (the sandbox: read-only root, ``/tmp`` tmpfs, ``/work`` a ladderlab tmpfs
  volume, so nothing it writes lands on the host's disk and all of it is
  capped and charged to its memory limit).

:func:`violations` states the same policy as a check over ``docker inspect``
output; the integration tests run it on every container of a real grading.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import docker
from docker.errors import APIError, ImageNotFound, NotFound
from docker.types import LogConfig

from ladderlab.environments import labels as L
from ladderlab.environments.spec import CAPABILITY_ALLOWLIST, DEVICE_ALLOWLIST, sysctl_problem
from ladderlab.errors import EnvError

LOG_CONFIG = {"max-size": "1m", "max-file": "2"}
KINDS = ("host", "observer", "tools", "scratch", "sandbox", "placement")

#: What each kind of container may add back after dropping every capability.
KIND_CAPABILITIES: dict[str, frozenset[str]] = {
    "host": frozenset(CAPABILITY_ALLOWLIST),
    # An observer reads netfilter state (NET_ADMIN), probes (NET_RAW) and, when it shares a host's pid
    # namespace, identifies the process behind a socket through /proc (SYS_PTRACE, DAC_READ_SEARCH), or
    # signals one of the host's processes for a disruptive check (KILL: ``LiveContext.signal``).
    "observer": frozenset({"NET_RAW", "NET_ADMIN", "SYS_PTRACE", "DAC_READ_SEARCH", "KILL"}),
    "tools": frozenset(),
    "scratch": frozenset({"NET_ADMIN"}),
    "sandbox": frozenset(),
    # Cluster mode's Swarm task that holds an environment's place (environments.fleet): a sleep.
    "placement": frozenset(),
}
MiB = 1 << 20


@dataclass(frozen=True)
class Plan:
    """One container to create, in the terms the policy allows to vary."""

    kind: str
    name: str
    image: str
    stamp: L.Stamp
    host: str  # the name it goes by in the environment (labels)
    role: str = ""
    network: str = "none"  # "none", a ladderlab network's name, or "container:<ladderlab container>"
    aliases: Sequence[str] = ()
    pid_namespace_of: str | None = None  # another ladderlab container whose processes this one sees
    capabilities: Sequence[str] = ()
    pids: int = 128
    memory: int = 256 * MiB
    cpus: float | None = None
    cpu_shares: int | None = None
    command: Sequence[str] | None = None
    entrypoint: Sequence[str] | None = None
    user: str | None = None
    hostname: str | None = None
    working_dir: str | None = None
    environment: Mapping[str, str] = field(default_factory=dict)
    user_labels: Mapping[str, str] = field(default_factory=dict)
    read_only: bool = False
    tmpfs: Mapping[str, str] = field(default_factory=dict)
    work_volume: str | None = None  # sandbox only: a ladderlab tmpfs volume mounted at /work
    ipv4_address: str | None = None  # a static address on ``network`` (a ladderlab network)
    devices: Sequence[str] = ()  # hosts only: names from DEVICE_ALLOWLIST ("tun")
    sysctls: Mapping[str, str] = field(default_factory=dict)  # hosts only: keys from SYSCTL_ALLOWLIST

    def labels(self) -> dict[str, str]:
        out = self.stamp.labels(host=self.host, role=self.role, user=dict(self.user_labels))
        out[L.KIND] = "host" if self.kind == "host" else self.kind
        return out

    def problems(self) -> list[str]:
        """Why this plan breaks the policy (empty when it does not)."""
        out = []
        if self.kind not in KINDS:
            out.append(f"unknown container kind {self.kind!r}")
            return out
        extra = set(self.capabilities) - KIND_CAPABILITIES[self.kind]
        if extra:
            out.append(f"a {self.kind} may not have {', '.join(sorted(extra))}")
        if not (self.network == "none" or self.network.startswith(("ll-", "container:ll-"))):
            out.append(f"network {self.network!r} is not ladderlab's")
        if self.pid_namespace_of is not None and not self.pid_namespace_of.startswith("ll-"):
            out.append(f"pid namespace {self.pid_namespace_of!r} is not a ladderlab host's")
        if not self.name.startswith("ll-"):
            out.append(f"container name {self.name!r} does not start with ll-")
        if self.work_volume is not None and (self.kind != "sandbox" or not self.work_volume.startswith("ll-")):
            out.append("only the sandbox mounts a volume, and only a ladderlab tmpfs volume")
        if self.memory <= 0 or self.pids <= 0:
            out.append("memory and pids limits must be positive")
        if self.devices and self.kind != "host":
            out.append(f"a {self.kind} may have no devices")
        out += [f"device {d!r} is not allowed (only {', '.join(DEVICE_ALLOWLIST)})"
                for d in self.devices if d not in DEVICE_ALLOWLIST]
        if self.sysctls and self.kind != "host":
            out.append(f"a {self.kind} may set no sysctls")
        out += [p for k, v in self.sysctls.items() if (p := sysctl_problem(k, v)) is not None]
        if self.ipv4_address is not None and not self.network.startswith("ll-"):
            out.append("a static address needs a ladderlab network")
        return out


def create(client: docker.DockerClient, plan: Plan) -> str:
    """Create (not start) the container ``plan`` describes; returns its name. EnvError on refusal."""
    problems = plan.problems()
    if problems:
        raise EnvError(f"container {plan.name} refused by ladderlab's policy: {'; '.join(problems)}")
    api = client.api
    options: dict[str, Any] = {}
    if plan.cpus:
        options["nano_cpus"] = int(plan.cpus * 1e9)
    if plan.cpu_shares:
        options["cpu_shares"] = plan.cpu_shares
    if plan.pid_namespace_of:
        options["pid_mode"] = f"container:{plan.pid_namespace_of}"
    if plan.tmpfs:
        options["tmpfs"] = dict(plan.tmpfs)
    if plan.work_volume:
        options["mounts"] = [docker.types.Mount("/work", plan.work_volume, type="volume", no_copy=True)]
    if plan.devices:
        options["devices"] = [f"{DEVICE_ALLOWLIST[d]}:{DEVICE_ALLOWLIST[d]}:rwm" for d in plan.devices]
    if plan.sysctls:
        options["sysctls"] = dict(plan.sysctls)
    host_config = api.create_host_config(
        cap_drop=["ALL"], cap_add=sorted(plan.capabilities) or None, security_opt=["no-new-privileges:true"],
        privileged=False, init=True, pids_limit=plan.pids, mem_limit=plan.memory, memswap_limit=plan.memory,
        ipc_mode="private",
        network_mode=plan.network, read_only=plan.read_only, cgroupns="private",
        log_config=LogConfig(type="json-file", config=LOG_CONFIG), **options)
    networking = None
    if (plan.aliases or plan.ipv4_address) and not plan.network.startswith("container:") and plan.network != "none":
        networking = api.create_networking_config({plan.network: api.create_endpoint_config(
            aliases=list(plan.aliases) or None, ipv4_address=plan.ipv4_address)})
    try:
        api.create_container(
            plan.image, command=list(plan.command) if plan.command is not None else None,
            entrypoint=list(plan.entrypoint) if plan.entrypoint is not None else None, name=plan.name,
            user=plan.user, hostname=plan.hostname, working_dir=plan.working_dir,
            environment=dict(plan.environment) or None, labels=plan.labels(), host_config=host_config,
            networking_config=networking, detach=True)
    except ImageNotFound:
        raise EnvError(f"cannot create {plan.name}: image {plan.image} is missing "
                       f"(Fix: ladderlab images build)") from None
    except (APIError, NotFound) as exc:
        raise EnvError(f"cannot create {plan.name}: {getattr(exc, 'explanation', None) or exc}") from None
    return plan.name


def create_work_volume(client: docker.DockerClient, name: str, stamp: L.Stamp, size: int, uid: int) -> str:
    """A size-capped tmpfs volume (memory-backed, charged to the container that writes it) for a sandbox's
    /work: the sandbox's root is read-only, and the Docker API can still put and take files here."""
    if not name.startswith("ll-"):
        raise EnvError(f"volume {name!r} does not start with ll-")
    labels = stamp.labels()
    labels[L.KIND] = "volume"
    try:
        client.api.create_volume(name, driver="local", labels=labels, driver_opts={
            "type": "tmpfs", "device": "tmpfs", "o": f"size={size},uid={uid},gid={uid},mode=0700,nosuid,nodev"})
    except (APIError, NotFound) as exc:
        raise EnvError(f"cannot create volume {name}: {getattr(exc, 'explanation', None) or exc}") from None
    return name


def start(client: docker.DockerClient, name: str) -> None:
    try:
        client.api.start(name)
    except (APIError, NotFound) as exc:
        raise EnvError(f"cannot start {name}: {getattr(exc, 'explanation', None) or exc}") from None


def violations(inspect: Mapping[str, Any]) -> list[str]:
    """The policy as a check over ``docker inspect`` of a running container (empty list: it holds)."""
    hc = inspect.get("HostConfig") or {}
    cfg = inspect.get("Config") or {}
    labels = cfg.get("Labels") or {}
    name = str(inspect.get("Name", "?")).lstrip("/")
    kind = labels.get(L.KIND, "")
    out = []
    if labels.get(L.MANAGED) != "1" or not labels.get(L.ENV_ID) or not labels.get(L.OWNER):
        out.append("missing io.ladderlab labels")
    if kind not in KINDS:
        out.append(f"unknown kind label {kind!r}")
    if [c.upper().removeprefix("CAP_") for c in hc.get("CapDrop") or []] != ["ALL"]:
        out.append(f"CapDrop is {hc.get('CapDrop')}")
    added = {c.upper().removeprefix("CAP_") for c in hc.get("CapAdd") or []}
    if kind in KIND_CAPABILITIES and added - KIND_CAPABILITIES[kind]:
        out.append(f"CapAdd {sorted(added - KIND_CAPABILITIES[kind])} not allowed for a {kind}")
    if hc.get("Privileged"):
        out.append("privileged")
    # A Swarm task (placement) cannot ask for it on API 1.41: the node's daemon runs with --no-new-privileges,
    # which inspect does not show (tests/integration/test_fleet.py reads NoNewPrivs in every container).
    if "no-new-privileges:true" not in (hc.get("SecurityOpt") or []) and kind != "placement":
        out.append("no no-new-privileges")
    if kind == "placement" and (hc.get("CapAdd") or not hc.get("ReadonlyRootfs")):
        out.append("a placement task must add no capability and have a read-only root")
    if any("seccomp=unconfined" in s or "apparmor=unconfined" in s for s in hc.get("SecurityOpt") or []):
        out.append("seccomp or apparmor unconfined")
    if not hc.get("Init"):
        out.append("no init")
    if not hc.get("PidsLimit") or hc["PidsLimit"] <= 0:
        out.append("no pids limit")
    swap_ok = hc.get("MemorySwap") == hc.get("Memory") or (  # Swarm sets swap to twice the limit (a 32 MiB sleep)
        kind == "placement" and hc.get("MemorySwap") == 2 * (hc.get("Memory") or 0))
    if not hc.get("Memory") or not swap_ok:
        out.append(f"memory {hc.get('Memory')} / swap {hc.get('MemorySwap')}")
    log = hc.get("LogConfig") or {}
    if log.get("Type") != "json-file" or (log.get("Config") or {}) != LOG_CONFIG:
        out.append(f"log config {log}")
    mounts = inspect.get("Mounts") or []
    allowed = kind == "sandbox" and all(
        m.get("Type") == "volume" and str(m.get("Name", "")).startswith("ll-") and m.get("Destination") == "/work"
        for m in mounts)
    if hc.get("Binds") or (mounts and not allowed):
        out.append(f"has mounts {mounts}")
    if kind == "sandbox" and not hc.get("ReadonlyRootfs"):
        out.append("the sandbox's root is writable")
    network = str(hc.get("NetworkMode", ""))
    attached = list((inspect.get("NetworkSettings") or {}).get("Networks") or {})
    if kind == "placement" and network == "default" and attached and all(n.startswith("ll-") for n in attached):
        network = attached[0]  # a Swarm task names its networks in its endpoints only
    if not (network == "none" or network.startswith(("ll-", "container:"))):
        out.append(f"network mode {network!r}")
    if hc.get("PidMode") and not str(hc["PidMode"]).startswith("container:"):
        out.append(f"pid mode {hc['PidMode']!r}")
    if str(hc.get("IpcMode", "")) in ("host", "shareable"):
        out.append(f"ipc mode {hc.get('IpcMode')!r}")
    if hc.get("UTSMode") == "host" or hc.get("UsernsMode") == "host" or hc.get("CgroupnsMode") == "host":
        out.append("a host namespace")
    allowed_devices = [{"PathOnHost": p, "PathInContainer": p, "CgroupPermissions": "rwm"}
                       for p in DEVICE_ALLOWLIST.values()]
    devices = hc.get("Devices") or []
    if devices and (kind != "host" or any(d not in allowed_devices for d in devices)):
        out.append(f"devices {devices}")
    if hc.get("DeviceCgroupRules") or hc.get("DeviceRequests"):
        out.append("device cgroup rules or requests")
    sysctls = hc.get("Sysctls") or {}
    if sysctls and (kind != "host" or any(sysctl_problem(k, str(v)) for k, v in sysctls.items())):
        out.append(f"sysctls {sysctls}")
    if not name.startswith("ll-"):
        out.append("name does not start with ll-")
    return [f"{name}: {problem}" for problem in out]
