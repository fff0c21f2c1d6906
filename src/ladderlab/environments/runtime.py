"""Bringing environments up and down on a Docker engine.

>>> env = up(settings, "firewall", learner="ada")         # doctest: +SKIP
>>> env.host("target").run("iptables -S").stdout          # doctest: +SKIP
>>> env.down()                                             # doctest: +SKIP

Every environment gets its own ``--internal`` networks and hardened hosts
(``cap_drop=ALL`` plus the env's allowlisted capabilities, no-new-privileges,
default seccomp, pids/memory/CPU limits, bounded logs, never privileged, no
host namespaces, no Docker socket). Hosts start in dependency waves, in
parallel within a wave. A failed ``up`` removes what it made. A successful one
writes ``<cache>/state/envs/<id>/env.json``: the reaper treats an environment
without that record, whose owner process is gone, as an orphan.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import secrets
import shlex
import shutil
import tarfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import docker
import requests
from docker.errors import APIError, NotFound

from ladderlab.config import Settings
from ladderlab.course.seeds import apply_overrides, check_learner, check_seed, course_secret, derive_seed, render_params
from ladderlab.environments import addressing, files, fleet, guardian, hardening, hostguard, quota
from ladderlab.environments import labels as L
from ladderlab.environments.images import TOOL_IMAGES, exists, image_tags, tool_image
from ladderlab.environments.readiness import CommandSucceeds, LogContains, PortOpen, Strategy, wait_ready
from ladderlab.environments.spec import (
    CommandReady,
    EnvSpec,
    HostSpec,
    LogReady,
    address_param,
    discover,
    load_env_spec,
    subnet_param,
)
from ladderlab.environments.transports import CommandResult, DockerTransport, SSHTransport, Transport, generate_key
from ladderlab.errors import EnvError, ImageError, UsageError

Say = Callable[[str], None]
LOG_CONFIG = hardening.LOG_CONFIG
SETUP_DONE = "/run/ladderlab/setup.done"
DEFAULT_COURSE = "ladderlab"


def _quiet(_: str) -> None:
    return None


@dataclass
class HostInfo:
    name: str
    role: str
    image: str
    container: str
    addresses: dict[str, str] = field(default_factory=dict)
    ssh: bool = True
    ssh_host_key: str | None = None
    ready_seconds: float = 0.0

    @property
    def address(self) -> str:
        return next(iter(self.addresses.values()), "")


@dataclass
class EnvRecord:
    """What ``env up`` knows about an environment; persisted as JSON in the state dir."""

    id: str
    env: str
    lab: str
    learner: str
    seed: str
    params: dict[str, str | int]
    created: float
    expires: float
    networks: dict[str, str]
    hosts: dict[str, HostInfo]
    docker_host: str = ""
    secret_params: list[str] = field(default_factory=list)
    bound: bool = False  # a grading environment: removed as soon as the process that made it is gone
    subnets: dict[str, str] = field(default_factory=dict)  # network -> subnet the engine picked (prefix: N)
    #: What the engine assigned, as parameters: ``net_<net>_subnet`` and ``addr_<host>_<net>``
    #: (see EnvSpec.derived_params). Kept apart from ``params`` (the seeded ones, which re-create a variant).
    addressing: dict[str, str] = field(default_factory=dict)
    #: Cluster mode: the Swarm node the environment was placed on ("" on a single engine).
    node: str = ""

    def stamp(self) -> L.Stamp:
        """The labels' stamp for another container of this environment (owned by the calling process)."""
        return L.Stamp(self.id, self.env, self.lab, self.learner, self.expires, self.created, L.owner_token(),
                       self.bound)

    def learner_params(self) -> dict[str, str | int]:
        """The parameters a learner may see (secret ones, like an injected fault, left out)."""
        return {**{k: v for k, v in self.params.items() if k not in self.secret_params}, **self.addressing}

    def all_params(self) -> dict[str, str | int]:
        """Seeded parameters and the engine's addressing (what templates, checks and the learner use)."""
        return {**self.params, **self.addressing}

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EnvRecord:
        hosts = {k: HostInfo(**v) for k, v in data["hosts"].items()}
        return cls(**{**data, "hosts": hosts})


class Host:
    """One host of a running environment, reached through one transport."""

    def __init__(self, info: HostInfo, transport: Transport) -> None:
        self.info = info
        self.transport = transport

    @property
    def name(self) -> str:
        return self.info.name

    def run(self, command: str, *args: object, timeout: float | None = None) -> CommandResult:
        return self.transport.run(command, *args, timeout=timeout)

    def __repr__(self) -> str:
        return f"<host {self.info.name} via {self.transport.name}>"


class Environment:
    """A running environment: its record, and hosts to run commands on."""

    def __init__(self, record: EnvRecord, client: docker.DockerClient, settings: Settings) -> None:
        self.record = record
        self.client = client
        self.settings = settings
        self._transports: list[Transport] = []

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def params(self) -> dict[str, str | int]:
        return self.record.all_params()

    def __repr__(self) -> str:
        return f"<environment {self.record.id} ({self.record.env}, {len(self.record.hosts)} hosts)>"

    def host(self, name: str, transport: str = "docker") -> Host:
        try:
            info = self.record.hosts[name]
        except KeyError:
            raise UsageError(f"environment {self.id} has no host {name!r} "
                             f"(hosts: {', '.join(self.record.hosts)})") from None
        t: Transport
        if transport == "docker":
            t = DockerTransport(self.client, info.container)
        elif transport == "ssh":
            if not info.ssh:
                raise UsageError(f"host {name!r} does not run sshd (ssh: false in its env.yaml)")
            t = SSHTransport(info.address, private_key=key_path(self.settings, self.id).read_text(),
                             host_key=info.ssh_host_key)
        else:
            raise UsageError(f"unknown transport {transport!r} (expected docker or ssh)")
        self._transports.append(t)
        return Host(info, t)

    def down(self) -> int:
        for t in self._transports:
            t.close()
        return down(self.settings, self.id, self.client)

    def __enter__(self) -> Environment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()


# --- state files -----------------------------------------------------------------------------


def env_dir(settings: Settings, env_id: str) -> Path:
    return settings.state_dir / "envs" / env_id


def key_path(settings: Settings, env_id: str) -> Path:
    return env_dir(settings, env_id) / "id_ed25519"


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def _save_record(settings: Settings, record: EnvRecord) -> None:
    path = env_dir(settings, record.id) / "env.json"
    tmp = path.with_suffix(".tmp")
    _write_private(tmp, json.dumps(record.to_json(), indent=2, sort_keys=True))
    tmp.replace(path)


def load_record(settings: Settings, env_id: str) -> EnvRecord | None:
    path = env_dir(settings, env_id) / "env.json"
    try:
        return EnvRecord.from_json(json.loads(path.read_text()))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (ValueError, TypeError, KeyError):
        return None


def attach(settings: Settings, env_id: str, client: docker.DockerClient) -> Environment:
    record = load_record(settings, env_id)
    if record is None:
        raise UsageError(f"no environment {env_id!r} is recorded here (see `ladderlab env ls`)")
    return Environment(record, client_for(settings, record, client), settings)


# --- bring up ---------------------------------------------------------------------------------


def _strategies(spec: HostSpec, params: dict[str, str | int]) -> list[Strategy]:
    out: list[Strategy] = []
    for r in spec.ready:
        if isinstance(r, CommandReady):
            out.append(CommandSucceeds(_render_setup(r.command, params)))
        elif isinstance(r, LogReady):
            out.append(LogContains(r.log))
        else:
            port = r.port if isinstance(r.port, int) else r.port.format_map(params)
            try:
                out.append(PortOpen(int(port)))
            except ValueError:
                raise EnvError(f"ready port {r.port!r} rendered to {port!r}, which is not a port") from None
    return out


def _render_setup(command: str, params: dict[str, str | int]) -> str:
    return command.format_map({k: shlex.quote(str(v)) for k, v in params.items()})


def tar_files(files: Iterable[tuple[str, bytes, int, int]]) -> bytes:
    """A tar of ``(name, data, mode, uid)`` files for ``put_archive`` (directories on the way are implied)."""
    buf = io.BytesIO()
    now = int(time.time())
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data, mode, uid in files:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime, info.uid, info.gid = len(data), mode, now, uid, uid
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class _HostProbe:
    def __init__(self, client: docker.DockerClient, container: str, address: str, direct: bool) -> None:
        self.client = client
        self.container = container
        self.address = address
        self.direct = direct
        self.transport: Transport = DockerTransport(client, container)

    def logs(self) -> str:
        try:
            return bytes(self.client.api.logs(self.container, tail=40)).decode(errors="replace")
        except APIError:
            return "(logs unavailable)"

    def running(self) -> bool:
        try:
            return bool(self.client.api.inspect_container(self.container)["State"]["Running"])
        except NotFound:
            return False


def is_local_engine(client: docker.DockerClient) -> bool:
    """Whether this process may open TCP connections to the engine's containers. Not for an engine over TCP, nor
    for one whose unix socket is served from another network namespace (a grader in a namespace of its own that
    reaches the engine's socket, as ``tests/integration/test_remote_grader.py`` runs one, does not share its
    bridges): readiness is then probed from inside the hosts. When that cannot be told (an ``ssh://`` engine, a
    socket whose server this process may not inspect), as before: yes."""
    if not str(client.api.base_url).startswith("http+docker://"):
        return False
    path = getattr(getattr(client.api, "_custom_adapter", None), "socket_path", None)
    return not isinstance(path, str) or _same_network_namespace(path)


@functools.lru_cache(maxsize=8)
def _same_network_namespace(socket_path: str) -> bool:
    """Whether the process serving ``socket_path`` (its peer credentials) is in this process's network namespace;
    True when that cannot be told (the engine's own socket, as before)."""
    import socket as sock
    import struct

    try:
        with sock.socket(sock.AF_UNIX, sock.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(socket_path)
            pid = struct.unpack("3i", s.getsockopt(sock.SOL_SOCKET, sock.SO_PEERCRED, struct.calcsize("3i")))[0]
        theirs, ours = os.stat(f"/proc/{pid}/ns/net"), os.stat("/proc/self/ns/net")
        return (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)
    except OSError:
        return True


class _Bringup:
    def __init__(self, settings: Settings, client: docker.DockerClient, spec: EnvSpec, record: EnvRecord,
                 stamp: L.Stamp, public_key: str | None, tags: dict[str, str], say: Say,
                 lockout_roles: frozenset[str] = frozenset(), manager: docker.DockerClient | None = None) -> None:
        self.settings, self.client, self.spec, self.record = settings, client, spec, record
        self.manager = manager  # cluster mode: networks are Swarm overlays, made on the manager
        self.stamp, self.public_key, self.tags, self.say = stamp, public_key, tags, say
        self.lockout_roles = lockout_roles
        # Hosts in a locked-out role trust a key nobody keeps: sshd runs, no one logs in.
        self.lockout_key = generate_key()[1] if lockout_roles else None
        self.direct = is_local_engine(client) and manager is None

    def create_networks(self) -> None:
        for net in self.spec.networks:
            name = f"ll-{self.record.id}-{net.name}"
            if self.manager is not None:
                subnet = fleet.create_overlay(self.manager, name, self.stamp.labels(), net.prefix)
                if net.prefix is not None:
                    self.record.subnets[net.name] = str(subnet)
                    self.record.addressing[subnet_param(net.name)] = str(subnet)
                self.record.networks[net.name] = name
                continue
            # Internal, on an llbr-* bridge the host firewall covers (hostguard: no route to the host's addresses).
            if net.prefix is None:
                hostguard.create_lab_network(self.client, name, self.stamp.labels(), self.say)
            else:  # a free subnet from ladderlab's pool, so that hosts can have static addresses
                _, subnet = addressing.create_network(self.client, name, self.stamp.labels(), net.prefix,
                                                      local=self.direct, say=self.say)
                self.record.subnets[net.name] = str(subnet)
                self.record.addressing[subnet_param(net.name)] = str(subnet)
            self.record.networks[net.name] = name
        for host, spec in self.spec.hosts.items():
            for on, offset in spec.addresses.items():
                self.record.addressing[address_param(host, on)] = addressing.address(self.record.subnets[on], offset)

    def start_host(self, name: str) -> HostInfo:
        spec = self.spec.hosts[name]
        api = self.client.api
        params = self.record.all_params()
        image = self.tags[spec.image]
        container = f"ll-{self.record.id}-{name}"
        nets = self.spec.host_networks(name)
        env = {k: v.format_map(params) for k, v in spec.environment.items()}
        env["LADDERLAB_AWAIT_SETUP"] = "1" if spec.setup else "0"
        static = {net: self.record.addressing[address_param(name, net)] for net in spec.addresses}
        hardening.create(self.client, hardening.Plan(
            kind="host", name=container, image=image, stamp=self.stamp, host=name, role=spec.role,
            network=self.record.networks[nets[0]], aliases=[name], capabilities=sorted(spec.capabilities),
            pids=spec.resources.pids, memory=spec.resources.memory_bytes, cpus=spec.resources.cpus,
            command=spec.command, hostname=name, environment=env, user_labels=spec.labels,
            ipv4_address=static.get(nets[0]), devices=list(spec.devices), sysctls={
                k: str(v) for k, v in spec.sysctls.items()}))
        for net in nets[1:]:  # connected before the start, so eth1.. exist when the sysctls are written
            api.connect_container_to_network(container, self.record.networks[net], aliases=[name],
                                             ipv4_address=static.get(net))
        key = self.lockout_key if spec.role in self.lockout_roles else self.public_key
        if spec.ssh and key:
            api.put_archive(container, "/root/.ssh", tar_files([("authorized_keys", key.encode(), 0o600, 0)]))
        hardening.start(self.client, container)
        inspect = api.inspect_container(container)
        addresses = {net: inspect["NetworkSettings"]["Networks"][self.record.networks[net]]["IPAddress"]
                     for net in nets}
        info = HostInfo(name=name, role=spec.role, image=image, container=container, addresses=addresses,
                        ssh=spec.ssh)
        transport = DockerTransport(self.client, container)
        for command in spec.setup:
            result = transport.run(_render_setup(command, params), timeout=120)
            if result.failed:
                raise EnvError(f"setup of host {name!r} failed: {result.command!r} exited {result.rc}: "
                               f"{(result.stderr or result.stdout).strip()[:500]}")
        if spec.setup:
            transport.check_output("mkdir -p /run/ladderlab && touch %s", SETUP_DONE)
        probe = _HostProbe(self.client, container, info.address, self.direct)
        timeout = spec.ready_timeout or self.settings.ready_timeout
        info.ready_seconds = round(wait_ready(self.record.id, name, probe, _strategies(spec, params), timeout), 3)
        if spec.ssh:
            host_key = files.read_bytes(self.client, container, "/etc/ssh/ssh_host_ed25519_key.pub", follow=False)
            info.ssh_host_key = host_key.decode() if host_key is not None else None
        self.say(f"  {name} ready ({info.address})")
        return info

    def place(self, fl: fleet.Fleet, image_set: list[str], placeholder: str) -> None:
        """Cluster mode: Swarm picks the node; everything after this is made through that node's engine."""
        hosts = self.spec.hosts.values()
        placed = fl.place(env_id=self.record.id, env=self.spec.name, key=fleet.images_key(image_set),
                          image=placeholder, cpus=sum(h.resources.cpus for h in hosts),
                          memory=sum(h.resources.memory_bytes for h in hosts), labels=self.stamp.labels(),
                          network=next(iter(self.record.networks.values()), None), say=self.say)
        self.client = fl.client(placed.node)
        self.record.node, self.record.docker_host = placed.node, placed.url

    def run(self, on_networks: Callable[[EnvRecord], None] | None = None,
            placement: tuple[fleet.Fleet, list[str], str] | None = None) -> None:
        self.create_networks()
        if placement is not None:
            self.place(*placement)
        if on_networks is not None:
            on_networks(self.record)
        waves = self.spec.start_waves()
        with ThreadPoolExecutor(max_workers=min(8, len(self.spec.hosts))) as pool:
            for wave in waves:
                for info in pool.map(self.start_host, wave):
                    self.record.hosts[info.name] = info


def check_images(settings: Settings, client: docker.DockerClient, spec: EnvSpec) -> dict[str, str]:
    tags = image_tags(settings, client, spec.name, {h.image for h in spec.hosts.values()})
    missing = sorted(t for t in set(tags.values()) if not exists(client, t))
    if missing:
        raise ImageError(f"images of environment {spec.name!r} are not built: {', '.join(missing)}\n"
                         f"Fix: ladderlab images build {spec.name}")
    return tags


def image_set(settings: Settings, client: docker.DockerClient, spec: EnvSpec) -> list[str]:
    """Every image a node needs to run and grade ``spec``'s environments: the Debian base (tags are computed
    from its id), the environment's images and the grading tools."""
    tags = image_tags(settings, client, spec.name, {h.image for h in spec.hosts.values()})
    return sorted({settings.base_image, *tags.values(), *(tool_image(settings, client, t) for t in TOOL_IMAGES)})


def client_for(settings: Settings, record: EnvRecord, client: docker.DockerClient) -> docker.DockerClient:
    """The engine ``record``'s environment lives on: its node's in cluster mode, else ``client``."""
    fl = fleet.get()
    if fl is None or not record.node:
        return client
    return fl.client(record.node)


def teardown_everywhere(client: docker.DockerClient, env_id: str) -> int:
    """:func:`teardown` on this engine, or in cluster mode on every node that answers, then the
    environment's placement and overlay networks on the manager."""
    fl = fleet.get()
    if fl is None:
        return teardown(client, env_id)
    return fl.teardown(env_id, teardown)


def load_spec(settings: Settings, env: str) -> EnvSpec:
    found = discover(settings.environments_dir)
    if env not in found:
        raise UsageError(f"unknown environment {env!r} (known: {', '.join(sorted(found)) or 'none'})")
    return load_env_spec(found[env])


def up(settings: Settings, env: str, *, client: docker.DockerClient, learner: str = "local",
       lab: str = "", seed: str | None = None, course_id: str = DEFAULT_COURSE,
       ttl_minutes: float | None = None, overrides: dict[str, str] | None = None, reuse: bool = False,
       lockout_roles: frozenset[str] = frozenset(), on_networks: Callable[[EnvRecord], None] | None = None,
       bound: bool = False, say: Say = _quiet) -> Environment:
    """Bring up environment ``env`` for ``learner``; tear it down again if anything fails.

    With ``reuse``, an existing healthy environment with the same env, lab, learner,
    seed and parameters is returned instead (so repeating ``up`` is idempotent).
    Grading never reuses: it always asks for a fresh one, and passes
    ``lockout_roles={"probe"}`` so that the environment's key (which the
    sandbox holds) does not open the hosts checks observe from.
    ``on_networks(record)`` is called once the networks exist, before any
    host starts (grading starts its sandbox there, to overlap start-up).
    With ``bound`` (grading) the environment lives only as long as this
    process: its guardian removes it the moment the process is gone.
    """
    spec = load_spec(settings, env)
    check_learner(learner)
    key = course_secret(settings)  # seeds and secret parameters are keyed: see ladderlab.course.seeds
    seed = check_seed(seed) if seed else derive_seed(course_id, learner, lab or env, secret=key)
    params = apply_overrides(spec.params, render_params(spec.params, seed, secret=key), overrides or {})
    if reuse:
        existing = find_reusable(settings, client, env=env, lab=lab, learner=learner, seed=seed, params=params,
                                 say=say)
        if existing is not None:
            say(f"reusing {existing.id}")
            return existing
    tags = check_images(settings, client, spec)
    fl = fleet.get()
    placement = None
    if fl is not None:  # the images were built here and pushed to the nodes (`ladderlab fleet push`)
        placement = (fl, image_set(settings, client, spec), tool_image(settings, client, "probe"))
    env_id = f"{env}-{secrets.token_hex(4)}"
    stamp = L.Stamp.new(env_id, env, lab, learner, ttl_minutes or settings.ttl_minutes, bound)
    record = EnvRecord(id=env_id, env=env, lab=lab, learner=learner, seed=seed, params=params,
                       created=stamp.created, expires=stamp.expires, networks={}, hosts={},
                       docker_host=str(client.api.base_url),
                       secret_params=[n for n, p in spec.params.items() if p.secret], bound=bound)
    public = None
    bringup = _Bringup(settings, client, spec, record, stamp, public, tags, say, lockout_roles,
                       manager=fl.manager() if fl is not None else None)
    with contextlib.nullcontext() if bound else quota.slot(settings, client, env_id=env_id, learner=learner,
                                                            lab=lab, env=env):
        return _bring_up(settings, client, bringup, record, spec, on_networks, placement, say)


def _bring_up(settings: Settings, client: docker.DockerClient, bringup: _Bringup, record: EnvRecord,
              spec: EnvSpec, on_networks: Callable[[EnvRecord], None] | None, placement: Any,
              say: Say) -> Environment:
    env_id, bound = record.id, record.bound
    if bound:
        guardian.get(settings.state_dir, settings.cache_dir / "guardian.log").bind(env_id)
    try:
        if any(h.ssh for h in spec.hosts.values()):
            private, public = generate_key()
            _write_private(key_path(settings, env_id), private)
            bringup.public_key = public
        say(f"starting {env_id} ({len(spec.hosts)} hosts)")
        bringup.run(on_networks, placement)
        _save_record(settings, record)
    except BaseException:
        teardown_everywhere(client, env_id)
        shutil.rmtree(env_dir(settings, env_id), ignore_errors=True)
        guardian.release(env_id)
        raise
    return Environment(record, bringup.client, settings)


def find_reusable(settings: Settings, client: docker.DockerClient, *, env: str, lab: str, learner: str,
                  seed: str, params: dict[str, str | int], say: Say = _quiet) -> Environment | None:
    """A recorded, unexpired environment matching these inputs whose hosts all run."""
    records = settings.state_dir / "envs"
    if not records.is_dir():
        return None
    for d in sorted(records.iterdir()):
        record = load_record(settings, d.name)
        if record is None or (record.env, record.lab, record.learner, record.seed, record.params) != \
                (env, lab, learner, seed, params) or record.expires <= time.time():
            continue
        node = client_for(settings, record, client)
        try:
            running = node.api.containers(filters={"label": [f"{L.MANAGED}=1", f"{L.ENV_ID}={record.id}",
                                                             f"{L.KIND}=host"]})
        except (requests.exceptions.ConnectionError, APIError) as exc:
            if not record.node:
                raise
            say(f"{record.id} was on node {record.node}, which does not answer ({type(exc).__name__}): "
                "it is lost; starting a new one elsewhere")
            _forget_lost(settings, record)
            continue
        if len(running) == len(record.hosts):
            return Environment(record, node, settings)
    return None


def _forget_lost(settings: Settings, record: EnvRecord) -> None:
    fl = fleet.get()
    if fl is not None:
        with contextlib.suppress(EnvError, APIError, requests.exceptions.RequestException):
            fl.release(record.id)
    shutil.rmtree(env_dir(settings, record.id), ignore_errors=True)


# --- tear down --------------------------------------------------------------------------------


def _retry(action: Callable[[], Any], attempts: int = 8) -> None:
    """Run ``action``; not-found is success; transient daemon errors (and a daemon briefly unreachable)
    are retried with a doubling pause (about 25 s in all)."""
    delay = 0.1
    for attempt in range(attempts):
        try:
            action()
            return
        except NotFound:
            return
        except requests.exceptions.ConnectionError as exc:
            if attempt == attempts - 1:
                raise EnvError(f"the Docker engine did not answer: {exc}") from None
            time.sleep(delay)
            delay *= 2
        except APIError as exc:
            transient = exc.status_code in (409, 500, 502, 503) or "in progress" in str(exc)
            if not transient or attempt == attempts - 1:
                raise EnvError(f"docker refused: {exc.explanation or exc}") from None
            time.sleep(delay)
            delay *= 2


def remove_containers(client: docker.DockerClient, ids: Iterable[str]) -> int:
    ids = list(ids)
    if not ids:
        return 0
    def remove(container: str) -> None:
        _retry(partial(client.api.remove_container, container, force=True, v=True))

    with ThreadPoolExecutor(max_workers=min(8, len(ids))) as pool:
        list(pool.map(remove, ids))
    return len(ids)


def remove_networks(client: docker.DockerClient, ids: Iterable[str]) -> int:
    n = 0
    for net in ids:
        _retry(partial(client.api.remove_network, net))
        n += 1
    return n


def labelled(client: docker.DockerClient, **match: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Containers and networks carrying ladderlab's managed label (and ``match``)."""
    keys = {"env_id": L.ENV_ID}
    filters = [f"{L.MANAGED}=1", *(f"{keys[k]}={v}" for k, v in match.items())]
    containers = client.api.containers(all=True, filters={"label": filters})
    networks = client.api.networks(filters={"label": filters})
    return containers, networks


def teardown(client: docker.DockerClient, env_id: str) -> int:
    """Remove every container, network and volume labelled with ``env_id``. Idempotent."""
    found: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]] = []
    _retry(lambda: found.append(labelled(client, env_id=env_id)))
    containers, networks = found[-1] if found else ([], [])
    n = remove_containers(client, [c["Id"] for c in containers])
    # Swarm overlays (cluster mode) are the manager's to remove: fleet.release.
    n += remove_networks(client, [net["Id"] for net in networks if net.get("Scope") != "swarm"])
    volumes = client.api.volumes(filters={"label": [f"{L.MANAGED}=1", f"{L.ENV_ID}={env_id}"]}).get("Volumes") or []
    for volume in volumes:
        _retry(partial(client.api.remove_volume, volume["Name"], force=True))
    return n + len(volumes)


def down(settings: Settings, env_id: str, client: docker.DockerClient) -> int:
    """Tear down ``env_id`` and forget it; returns how many resources were removed."""
    removed = teardown_everywhere(client, env_id)
    shutil.rmtree(env_dir(settings, env_id), ignore_errors=True)
    guardian.release(env_id)
    return removed


# --- listing ----------------------------------------------------------------------------------


@dataclass
class EnvSummary:
    id: str
    env: str
    lab: str
    learner: str
    hosts: list[str]
    networks: int
    created: float
    expires: float
    owner: str
    recorded: bool
    bound: bool = False
    node: str = ""  # cluster mode: the Swarm node it was placed on
    lost: bool = False  # cluster mode: that node is down or its engine does not answer

    @property
    def status(self) -> str:
        if self.lost:
            return "lost"
        if self.expires and self.expires < time.time():
            return "expired"
        if self.recorded:
            return "ready"
        alive = L.owner_alive(self.owner) if self.owner else None
        return "starting" if alive else "orphaned"


def _cluster_inventory(settings: Settings) -> tuple[list[dict[str, Any]], list[dict[str, Any]],
                                                      list[dict[str, Any]], dict[str, str], set[str]]:
    """Cluster mode: containers and volumes from every node that answers, networks and placement services
    from the manager; the node of each container; the nodes that do not answer."""
    fl = fleet.get()
    assert fl is not None
    containers: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = []
    where: dict[str, str] = {}
    silent = set()
    flt = {"label": [f"{L.MANAGED}=1"]}
    for node, _url in fl.config.nodes.items():
        try:
            c = fl.client(node)
            found = c.api.containers(all=True, filters=flt)
            volumes += c.api.volumes(filters=flt).get("Volumes") or []
        except (requests.exceptions.RequestException, docker.errors.DockerException):
            silent.add(node)
            continue
        containers += found
        for x in found:
            where[(x.get("Labels") or {}).get(L.ENV_ID, "?")] = node
    manager = fl.manager()
    networks = manager.api.networks(filters=flt) + [
        {"Labels": svc.get("Spec", {}).get("Labels") or {}} for svc in manager.api.services(filters=flt)]
    return containers, networks, volumes, where, silent


def list_envs(settings: Settings, client: docker.DockerClient) -> list[EnvSummary]:
    """Every labelled environment on the engine (in cluster mode: on every node), from the labels (the
    source of truth); in cluster mode also those recorded here whose node is gone (``lost``)."""
    where: dict[str, str] = {}
    silent: set[str] = set()
    if fleet.get() is None:
        containers, networks = labelled(client)
        volumes = client.api.volumes(filters={"label": [f"{L.MANAGED}=1"]}).get("Volumes") or []
    else:
        containers, networks, volumes, where, silent = _cluster_inventory(settings)
    found: dict[str, EnvSummary] = {}

    def summary(lbl: dict[str, str]) -> EnvSummary:
        env_id = lbl.get(L.ENV_ID, "?")
        if env_id not in found:
            record = load_record(settings, env_id)
            created = _num(lbl.get(L.CREATED))
            expires = L.effective_expiry(_num(lbl.get(L.EXPIRES)), created, record.expires if record else None)
            found[env_id] = EnvSummary(
                id=env_id, env=lbl.get(L.ENV, ""), lab=lbl.get(L.LAB, ""), learner=lbl.get(L.LEARNER, ""),
                hosts=[], networks=0, created=created, expires=expires,  # lab.extend: see labels.effective_expiry
                owner=lbl.get(L.OWNER, ""), recorded=record is not None)
        return found[env_id]

    for c in containers:
        lbl = c.get("Labels") or {}
        entry = summary(lbl)
        entry.bound = entry.bound or lbl.get(L.BOUND) == "1"
        if lbl.get(L.KIND, "host") == "host":
            entry.hosts.append(lbl.get(L.HOST, "?"))
    for n in networks:
        summary(n.get("Labels") or {}).networks += 1
    for v in volumes:
        summary(v.get("Labels") or {})  # a sandbox's /work left alone is still an environment to reap
    for entry in found.values():
        entry.node = where.get(entry.id, "")
    if silent:  # recorded here, placed on a node that no longer answers
        records = settings.state_dir / "envs"
        for d in sorted(records.iterdir()) if records.is_dir() else []:
            record = load_record(settings, d.name)
            if record is not None and record.node in silent:
                entry = found.get(record.id) or EnvSummary(
                    id=record.id, env=record.env, lab=record.lab, learner=record.learner, hosts=[], networks=0,
                    created=record.created, expires=record.expires, owner="", recorded=True, bound=record.bound)
                entry.node, entry.lost = record.node, True
                found[record.id] = entry
    return sorted(found.values(), key=lambda s: (s.created, s.id))


def _num(raw: str | None) -> float:
    try:
        return float(raw or 0)
    except ValueError:
        return 0.0
