"""Cluster mode: environments placed by Docker Swarm across several Docker engines.

Opt-in: ``LADDERLAB_CLUSTER`` names a cluster file (the single local engine stays the default)::

    manager: unix:///run/sw1/docker.sock     # an engine that is a Swarm manager
    nodes:                                   # every node's engine, by its Swarm hostname
      sw1: unix:///run/sw1/docker.sock
      sw2: ssh://lab@10.0.0.12
    constraints: [node.role==worker]         # optional: Swarm placement constraints for every environment
    cpu_reservation: 0.25                    # optional: share of the hosts' CPU limits each environment reserves
    place_timeout: 30                        # optional: seconds to wait for Swarm to place an environment

How an environment is placed (the decision, written down):

- **Swarm chooses, ladderlab does not.** Each environment asks Swarm for a place with a one-task
  *placement service* ``ll-<env id>-place``: restart condition ``none``, ``endpoint_mode=dnsrr``
  (no IPVS here), reservations of the environment's memory limits and a share of its CPU limits,
  the cluster's constraints, and one more: ``node.labels.io.ladderlab.images.<env>==<key>``, which
  only the nodes holding the environment's images (and the grading tools) carry
  (:meth:`Fleet.push` loads them and sets the label). Swarm's spread strategy, its resource
  accounting and its node availability (drained, down) decide; its task is a ``sleep`` that holds
  the reservation while the environment lives.
- **The environment's hosts are plain containers on the node Swarm chose**, created through that
  node's engine with the same hardening as on one engine (:mod:`ladderlab.environments.hardening`):
  Swarm services on API 1.41 cannot express what lab hosts need (devices, sysctls, static
  addresses, no-new-privileges per container, an init) and a Swarm task restarted elsewhere would
  lose the learner's state anyway. The placement task gets no-new-privileges from the node
  daemon's ``--no-new-privileges``; it has no capability and a read-only root.
- **Networks are Swarm overlays**, ``--internal --attachable``, created on the manager: no
  default route, so a lab host cannot reach its node's addresses (the Swarm control ports) nor
  anything outside. Observers, tool containers and the grading sandbox run on the environment's
  node, through that node's engine (exec and file copies cannot go through a manager).
- **Failure**: a node that Swarm marks ``down`` has lost its environments (``lost``); draining a
  node lets its environments run on (they are plain containers) and Swarm places new ones
  elsewhere; a full cluster leaves the placement task pending, and ``place`` refuses with the
  reason Swarm gave. Swarm keeps a down node's attachments to the overlays (their networks stay in
  use) until the node is removed: :meth:`Fleet.forget` (``ladderlab fleet forget NODE``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import requests
import yaml
from docker.errors import APIError, DockerException, NotFound
from docker.types import ContainerSpec, EndpointSpec, Placement, Resources, RestartPolicy, TaskTemplate

from ladderlab.environments import labels as L
from ladderlab.environments.hardening import LOG_CONFIG
from ladderlab.environments.images import exists
from ladderlab.errors import EnvError, ImageError, LadderlabError, UsageError

Say = Callable[[str], None]
CLUSTER_VARIABLE = "LADDERLAB_CLUSTER"
IMAGES_LABEL = "io.ladderlab.images."  # + env name: the key of the image set the node holds
PLACE_SUFFIX = "-place"
DEFAULT_CPU_RESERVATION = 0.25
PLACEMENT_MEMORY = 32 * 1024 * 1024


class ClusterFull(EnvError):
    """Swarm found no node with room (or with the images) for an environment."""


class NodeLost(EnvError):
    """The node an environment was placed on is down or its engine does not answer."""


@dataclass(frozen=True)
class ClusterConfig:
    path: Path
    manager: str
    nodes: dict[str, str]
    constraints: tuple[str, ...] = ()
    cpu_reservation: float = DEFAULT_CPU_RESERVATION
    place_timeout: float = 30.0


def _fail(path: Path, field_name: str, why: str) -> UsageError:
    return UsageError(f"{path}: {field_name}: {why}")


def _engine_url(path: Path, where: str, raw: object) -> str:
    if not isinstance(raw, str) or not raw.startswith(("unix://", "tcp://", "ssh://")):
        raise _fail(path, where, f"expected an engine address (unix://, tcp:// or ssh://), got {raw!r}")
    return raw


def load_config(path: Path) -> ClusterConfig:
    """Read and check a cluster file; every problem names the file and the field."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the cluster file: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: not YAML: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping with manager and nodes")
    unknown = sorted(set(data) - {"manager", "nodes", "constraints", "cpu_reservation", "place_timeout"})
    if unknown:
        raise _fail(path, unknown[0], "unknown field (known: manager, nodes, constraints, cpu_reservation, "
                                      "place_timeout)")
    if "manager" not in data:
        raise _fail(path, "manager", "missing")
    manager = _engine_url(path, "manager", data["manager"])
    nodes_raw = data.get("nodes")
    if not isinstance(nodes_raw, dict) or not nodes_raw:
        raise _fail(path, "nodes", "expected a mapping of Swarm node hostname to engine address")
    nodes = {str(name): _engine_url(path, f"nodes.{name}", url) for name, url in nodes_raw.items()}
    constraints = data.get("constraints") or []
    if not isinstance(constraints, list) or not all(isinstance(c, str) and ("==" in c or "!=" in c)
                                                    for c in constraints):
        raise _fail(path, "constraints", "expected a list of Swarm constraints like node.role==worker")
    try:
        share = float(data.get("cpu_reservation", DEFAULT_CPU_RESERVATION))
        timeout = float(data.get("place_timeout", 30))
    except (TypeError, ValueError):
        raise _fail(path, "cpu_reservation" if "cpu_reservation" in data else "place_timeout",
                    "expected a number") from None
    if not 0 <= share <= 1:
        raise _fail(path, "cpu_reservation", f"expected a share between 0 and 1, got {share}")
    if timeout <= 0:
        raise _fail(path, "place_timeout", f"expected a positive number of seconds, got {timeout}")
    return ClusterConfig(path, manager, nodes, tuple(constraints), share, timeout)


@dataclass
class NodeInfo:
    """One Swarm node as the manager and its own engine see it."""

    name: str
    id: str
    role: str
    state: str  # ready, down, unknown, disconnected
    availability: str  # active, pause, drain
    url: str
    cpus: float
    memory: int
    reserved_cpus: float = 0.0
    reserved_memory: int = 0
    environments: list[str] = field(default_factory=list)
    images: dict[str, str] = field(default_factory=dict)  # env -> image set key
    answers: bool = True

    @property
    def usable(self) -> bool:
        return self.state == "ready" and self.availability == "active" and self.answers


@dataclass(frozen=True)
class Placed:
    node: str
    url: str
    service: str


def images_key(tags: Iterable[str]) -> str:
    """The key of a set of image tags (the tags are content hashes already)."""
    return hashlib.sha256("\n".join(sorted(set(tags))).encode()).hexdigest()[:16]


def _client(url: str, timeout: float) -> docker.DockerClient:
    return docker.DockerClient(base_url=url, timeout=int(timeout), use_ssh_client=url.startswith("ssh://"))


def create_overlay(manager: docker.DockerClient, name: str, labels: dict[str, str], prefix: int | None,
                   ) -> ipaddress.IPv4Network | None:
    """An ``--internal --attachable`` overlay network on the manager; with ``prefix``, on a free subnet of
    ladderlab's pool (so hosts can have static addresses). Returns the subnet picked (None: Docker's)."""
    from ladderlab.environments import addressing

    for _attempt in range(addressing.ATTEMPTS):
        ipam, subnet = None, None
        if prefix is not None:
            subnet = addressing.pick(addressing.pool(), prefix, addressing.engine_subnets(manager))
            lay = addressing.layout(subnet)
            ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(
                subnet=lay["subnet"], iprange=lay["ip_range"], gateway=lay["gateway"])])
        try:
            manager.api.create_network(name, driver="overlay", internal=True, attachable=True,
                                       check_duplicate=True, labels=dict(labels), ipam=ipam)
            return subnet
        except APIError as exc:
            if prefix is None or "overlap" not in str(exc).lower():
                raise EnvError(f"cannot create overlay network {name}: {exc.explanation or exc}") from None
    raise EnvError(f"cannot create overlay network {name}: every subnet picked was taken")


class Fleet:
    """The cluster a cluster file describes: a manager client and one client per node."""

    def __init__(self, config: ClusterConfig, timeout: float = 60) -> None:
        self.config = config
        self.timeout = timeout
        self._clients: dict[str, docker.DockerClient] = {}
        self._lock = threading.Lock()
        #: overlay networks a release could not remove, and why (which node holds them): name -> reason
        self.stuck: dict[str, str] = {}

    # -- clients ------------------------------------------------------------------------------

    def _get(self, url: str) -> docker.DockerClient:
        with self._lock:
            if url not in self._clients:
                self._clients[url] = _client(url, self.timeout)
            return self._clients[url]

    def manager(self) -> docker.DockerClient:
        return self._get(self.config.manager)

    def client(self, node: str) -> docker.DockerClient:
        try:
            return self._get(self.config.nodes[node])
        except KeyError:
            raise UsageError(f"{self.config.path}: nodes: Swarm node {node!r} has no engine address "
                             f"(known: {', '.join(self.config.nodes)})") from None

    def node_of(self, url: str) -> str | None:
        return next((name for name, u in self.config.nodes.items() if u == url), None)

    # -- nodes --------------------------------------------------------------------------------

    def nodes(self) -> list[NodeInfo]:
        """Every Swarm node with its state, capacity, what ladderlab reserved on it and its images."""
        try:
            raw = self.manager().api.nodes()
            tasks = self.manager().api.tasks(filters={"label": f"{L.MANAGED}=1", "desired-state": "running"})
        except (DockerException, requests.exceptions.RequestException) as exc:
            raise EnvError(f"the Swarm manager {self.config.manager} does not answer: {exc}") from None
        out = []
        for n in raw:
            desc, spec = n.get("Description") or {}, n.get("Spec") or {}
            name = str(desc.get("Hostname", n["ID"]))
            res = desc.get("Resources") or {}
            labels = spec.get("Labels") or {}
            info = NodeInfo(
                name=name, id=n["ID"], role=str(spec.get("Role", "")), state=str((n.get("Status") or {}).get("State")),
                availability=str(spec.get("Availability", "")), url=self.config.nodes.get(name, ""),
                cpus=int(res.get("NanoCPUs", 0)) / 1e9, memory=int(res.get("MemoryBytes", 0)),
                images={k[len(IMAGES_LABEL):]: v for k, v in labels.items() if k.startswith(IMAGES_LABEL)})
            for t in tasks:
                if t.get("NodeID") != n["ID"]:
                    continue
                r = ((t.get("Spec") or {}).get("Resources") or {}).get("Reservations") or {}
                info.reserved_cpus += int(r.get("NanoCPUs", 0)) / 1e9
                info.reserved_memory += int(r.get("MemoryBytes", 0))
                env_id = ((t.get("Spec") or {}).get("ContainerSpec") or {}).get("Labels", {}).get(L.ENV_ID)
                if env_id:
                    info.environments.append(env_id)
            info.answers = bool(info.url) and info.state == "ready" and self._answers(info.url)
            out.append(info)
        return sorted(out, key=lambda i: i.name)

    def _answers(self, url: str) -> bool:
        try:
            self._get(url).ping()
        except (DockerException, requests.exceptions.RequestException):
            return False
        return True

    def node_state(self, node: str) -> str:
        """``ready``, ``drain`` (ready, no new environments), ``down`` or ``unknown``."""
        for info in self.nodes():
            if info.name == node:
                if info.state != "ready" or not info.answers:
                    return "down"
                return "drain" if info.availability == "drain" else "ready"
        return "unknown"

    # -- placement ----------------------------------------------------------------------------

    def place(self, *, env_id: str, env: str, key: str, image: str, cpus: float, memory: int,
              labels: dict[str, str], network: str | None, say: Say | None = None) -> Placed:
        """Ask Swarm where environment ``env_id`` goes; wait until its placement task runs there."""
        cfg = self.config
        constraints = [*cfg.constraints, f"node.labels.{IMAGES_LABEL}{env}=={key}"]
        task_labels = {**labels, L.KIND: "placement"}
        template = TaskTemplate(
            ContainerSpec(image, command=["sleep", "infinity"], labels=task_labels, read_only=True, init=True,
                          cap_drop=["ALL"], user="65534:65534", stop_signal="SIGKILL"),
            resources=Resources(cpu_reservation=int(cpus * cfg.cpu_reservation * 1e9), mem_reservation=memory,
                                cpu_limit=int(0.05e9), mem_limit=PLACEMENT_MEMORY),
            restart_policy=RestartPolicy(condition="none"), placement=Placement(constraints=constraints),
            networks=[network] if network else None,
            log_driver={"Name": "json-file", "Options": dict(LOG_CONFIG)})
        template["Resources"]["Limits"]["Pids"] = 16  # the SDK has no field for it; the API 1.41 has
        name = f"ll-{env_id}{PLACE_SUFFIX}"
        manager = self.manager()
        try:
            service = manager.api.create_service(template, name=name, labels=task_labels,
                                                 endpoint_spec=EndpointSpec(mode="dnsrr"))["ID"]
        except (APIError, requests.exceptions.RequestException) as exc:
            raise EnvError(f"Swarm refused the placement of {env_id}: {getattr(exc, 'explanation', None) or exc}"
                           ) from None
        started = time.monotonic()
        deadline = started + cfg.place_timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            tasks = manager.api.tasks(filters={"service": service})
            last = tasks[0] if tasks else {}
            state = (last.get("Status") or {}).get("State", "")
            if state == "running":
                node = str(manager.api.inspect_node(last["NodeID"])["Description"]["Hostname"])
                if node not in cfg.nodes:
                    self._remove_service(service)
                    raise UsageError(f"{cfg.path}: nodes: Swarm placed {env_id} on {node!r}, which has no engine "
                                     "address here")
                if say is not None:
                    say(f"Swarm placed {env_id} on {node}")
                return Placed(node, cfg.nodes[node], service)
            if state in ("rejected", "failed", "shutdown", "orphaned"):
                self._remove_service(service)
                raise EnvError(f"Swarm could not start the placement of {env_id}: "
                               f"{(last.get('Status') or {}).get('Err') or state}")
            err = str((last.get("Status") or {}).get("Err") or "")
            if state == "pending" and "no suitable node" in err and time.monotonic() - started > 3:
                break  # Swarm has decided; more waiting only helps when an environment ends meanwhile
            time.sleep(0.2)
        self._remove_service(service)
        raise self._why_unplaced(env_id, env, key, cpus, memory, str((last.get("Status") or {}).get("Err") or ""))

    def _why_unplaced(self, env_id: str, env: str, key: str, cpus: float, memory: int, err: str) -> LadderlabError:
        nodes = self.nodes()
        holding = [n.name for n in nodes if n.images.get(env) == key]
        if not holding:
            return ImageError(f"no node of the cluster holds environment {env!r}'s images (key {key}); nodes: "
                              + ", ".join(f"{n.name} ({'has another build' if env in n.images else 'none'})"
                                          for n in nodes)
                              + f"\nFix: ladderlab fleet push {env}")
        room = "; ".join(f"{n.name}: {n.state}/{n.availability}, {n.reserved_cpus:g} of {n.cpus:g} CPUs and "
                         f"{n.reserved_memory >> 20} of {n.memory >> 20} MiB reserved" for n in nodes)
        return ClusterFull(f"the cluster has no room for {env_id} now (it reserves "
                           f"{cpus * self.config.cpu_reservation:g} CPUs and {memory >> 20} MiB; Swarm: "
                           f"{err or 'no node chosen'}). Nodes: {room}. Try again when an environment ends, "
                           "or add a node.")

    def _remove_service(self, service: str) -> None:
        try:
            self.manager().api.remove_service(service)
        except NotFound:
            pass
        except (APIError, requests.exceptions.RequestException):
            pass  # the reaper removes placement services whose environment is gone

    def release(self, env_id: str) -> int:
        """Remove the placement service and the overlay networks of ``env_id`` (on the manager)."""
        manager = self.manager()
        n = 0
        flt = {"label": [f"{L.MANAGED}=1", f"{L.ENV_ID}={env_id}"]}
        for svc in manager.api.services(filters=flt):
            self._remove_service(svc["ID"])
            n += 1
        for net in manager.api.networks(filters=flt):
            if self._remove_network(net["Id"], net.get("Name", net["Id"])):
                n += 1
        return n

    def _remove_network(self, net_id: str, name: str, tries: int = 20) -> bool:
        """Remove an overlay network on the manager, retrying while a node lets go of its last endpoint.
        Still busy after ``tries`` (5 s): recorded in :attr:`stuck` with the nodes that hold it (Swarm
        keeps the attachments of a node that went down until the node is removed: ``fleet forget``)."""
        for _attempt in range(tries):
            try:
                self.manager().api.remove_network(net_id)
                self.stuck.pop(name, None)
                return True
            except NotFound:
                return True
            except APIError as exc:
                last = str(exc.explanation or exc)
                time.sleep(0.25)
        holders = self.holders(net_id)
        down = [node for node, state in holders.items() if state != "ready"]
        held = ", ".join(f"{node} ({state})" for node, state in holders.items())
        if down:
            self.stuck[name] = (f"held by {held}: once {down[0]} is down for good, `ladderlab fleet forget "
                                f"{down[0]}` frees it")
        else:
            self.stuck[name] = f"held by {held} (a container there is still attached): {last}" if holders \
                else f"busy: {last}"
        return False

    def holders(self, net_id: str) -> dict[str, str]:
        """The nodes whose containers Swarm still counts on network ``net_id`` (its attachment tasks): node
        name -> state (``ready``, ``down``, ...). Empty when the manager does not say."""
        try:
            manager = self.manager()
            tasks = manager.api.tasks(filters={"runtime": "attachment"})
            names = {n["ID"]: (str((n.get("Description") or {}).get("Hostname", n["ID"])),
                               str((n.get("Status") or {}).get("State", "unknown"))) for n in manager.api.nodes()}
        except (DockerException, requests.exceptions.RequestException):
            return {}
        out: dict[str, str] = {}
        for t in tasks:
            nets = [a.get("Target") for a in (t.get("Spec") or {}).get("Networks") or []]
            if net_id in nets and (t.get("Status") or {}).get("State") in ("new", "pending", "assigned", "accepted",
                                                                          "preparing", "starting", "running"):
                name, state = names.get(t.get("NodeID", ""), (t.get("NodeID", "?"), "removed"))
                out[name] = state
        return out

    def forget(self, node: str) -> list[str]:
        """Remove ``node``, down for good, from the swarm (``docker node rm --force``), then what ladderlab
        had there: the placement services and overlay networks of the environments placed on it (Swarm
        lets go of a removed node's network attachments). Refused for a node that is not down. Returns the
        ids of the environments released."""
        manager = self.manager()
        try:
            info = manager.api.inspect_node(node)
        except NotFound:
            raise UsageError(f"no Swarm node {node!r} (see: ladderlab fleet nodes)") from None
        except (DockerException, requests.exceptions.RequestException) as exc:
            raise EnvError(f"the Swarm manager {self.config.manager} does not answer: {exc}") from None
        state = str((info.get("Status") or {}).get("State", "unknown"))
        if state != "down":
            raise UsageError(f"node {node} is {state}, not down: only a node that is gone is forgotten (to stop "
                             f"placing environments there, drain it: docker node update --availability drain "
                             f"{node})")
        node_id = info["ID"]
        envs: set[str] = set()
        nets: set[str] = set()
        for t in manager.api.tasks(filters={"node": node_id}):  # placement tasks carry their env's labels
            envs.add(((t.get("Spec") or {}).get("ContainerSpec") or {}).get("Labels", {}).get(L.ENV_ID, ""))
        for t in manager.api.tasks(filters={"node": node_id, "runtime": "attachment"}):
            nets.update(a.get("Target", "") for a in (t.get("Spec") or {}).get("Networks") or [])
        for net in manager.api.networks(filters={"label": f"{L.MANAGED}=1"}):
            if net["Id"] in nets:
                envs.add((net.get("Labels") or {}).get(L.ENV_ID, ""))
        manager.api.remove_node(node_id, force=True)
        released = sorted(e for e in envs if e)
        for env_id in released:
            self.release(env_id)
        return released

    def teardown(self, env_id: str, teardown_node: Callable[[docker.DockerClient, str], int]) -> int:
        """Remove ``env_id`` from every node that answers, then its placement and networks."""
        n = 0
        for url in dict.fromkeys(self.config.nodes.values()):
            try:
                client = self._get(url)
                client.ping()
            except (DockerException, requests.exceptions.RequestException):
                continue  # a lost node: its containers went with it
            n += teardown_node(client, env_id)
        return n + self.release(env_id)

    # -- images -------------------------------------------------------------------------------

    def push(self, source: docker.DockerClient, env: str, tags: list[str], *, nodes: list[str] | None = None,
             say: Say = print) -> dict[str, str]:
        """Load ``tags`` (env's images and the grading tools) from ``source`` into each node that lacks one,
        then label the node as holding env's image set. Returns node -> "loaded" | "had them"."""
        key = images_key(tags)
        manager = self.manager()

        def load(name: str) -> str:
            client = self.client(name)
            missing = [t for t in tags if not exists(client, t)]
            if not missing:
                return "had them"
            say(f"{name}: loading {len(missing)} image(s) for {env}")
            copy_images(engine_url(source), self.config.nodes[name], missing)
            still = [t for t in missing if not exists(client, t)]
            if still:
                raise ImageError(f"{name}: images still missing after loading: {', '.join(still)}")
            return "loaded"

        targets = nodes or list(self.config.nodes)
        with ThreadPoolExecutor(max_workers=max(1, len(targets))) as pool:  # one stream per node
            result = dict(zip(targets, pool.map(load, targets), strict=True))
        for name in targets:
            node = next((n for n in manager.api.nodes() if (n.get("Description") or {}).get("Hostname") == name),
                        None)
            if node is None:
                raise UsageError(f"{self.config.path}: nodes.{name}: no Swarm node has this hostname")
            spec = dict(node["Spec"])
            spec["Labels"] = {**(spec.get("Labels") or {}), f"{IMAGES_LABEL}{env}": key}
            manager.api.update_node(node["ID"], node["Version"]["Index"], spec)
        return result


def engine_url(client: docker.DockerClient) -> str:
    """The address the docker CLI needs for ``client``'s engine."""
    base = str(client.api.base_url)
    return "unix:///var/run/docker.sock" if base.startswith("http+docker://") else base


def copy_images(source: str, target: str, tags: list[str]) -> None:
    """``docker save`` on engine ``source`` streamed into ``docker load`` on engine ``target``."""
    saver = subprocess.Popen(["docker", "-H", source, "save", *tags], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL)
    loader = subprocess.run(["docker", "-H", target, "load", "-q"], stdin=saver.stdout, capture_output=True,
                            check=False)
    assert saver.stdout is not None
    saver.stdout.close()
    if saver.wait() != 0 or loader.returncode != 0:
        raise ImageError(f"copying {len(tags)} image(s) from {source} to {target} failed (save exit "
                         f"{saver.returncode}): {loader.stderr.decode(errors='replace').strip()[-500:]}")


_fleets: dict[Path, Fleet] = {}
_fleets_lock = threading.Lock()


def configured() -> Path | None:
    raw = os.environ.get(CLUSTER_VARIABLE, "").strip()
    return Path(raw) if raw else None


def get(path: Path | None = None) -> Fleet | None:
    """The fleet ``LADDERLAB_CLUSTER`` names (one per process), or None on a single engine."""
    path = path or configured()
    if path is None:
        return None
    with _fleets_lock:
        if path not in _fleets:
            _fleets[path] = Fleet(load_config(path))
        return _fleets[path]
