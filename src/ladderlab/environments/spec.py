"""``environments/<env>/env.yaml``: hosts, networks and seeded parameters.

>>> spec = load_env_spec(Path("environments/firewall"))   # doctest: +SKIP
>>> sorted(spec.hosts)                                    # doctest: +SKIP
['monitor', 'outsider', 'target']

Placeholders ``{name}`` in ``environment``, ``setup`` and ``ready`` refer to the
environment's ``params``; a placeholder naming no parameter is an error at load
time, not at ``env up``.
"""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from ladderlab.course.loading import CROSS_REF_SEP, load_model
from ladderlab.errors import ConfigError

#: Capabilities an env.yaml may add back after ``cap_drop=ALL``. Anything that
#: reaches past the container (SYS_ADMIN, SYS_MODULE, NET_BROADCAST, ...) is refused.
CAPABILITY_ALLOWLIST = frozenset({
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "NET_ADMIN",
    "NET_BIND_SERVICE", "NET_RAW", "SETGID", "SETUID", "SYS_CHROOT", "SYS_PTRACE",
})
#: What OpenSSH's privilege-separated sshd needs (measured: it fails without any one of them).
SSHD_CAPABILITIES = frozenset({"SETUID", "SETGID", "SYS_CHROOT"})
#: Label prefix that only ladderlab sets; env.yaml may not use it.
RESERVED_LABEL_PREFIX = "io.ladderlab."
#: Devices a host may ask for by name, and the one device node each maps to (``rwm``). Nothing else from
#: the engine's /dev: a tun device is a network interface inside the host's own namespace (wireguard-go,
#: strongSwan's kernel-libipsec); creating one needs NET_ADMIN as well (measured: docs/environments.md).
DEVICE_ALLOWLIST: dict[str, str] = {"tun": "/dev/net/tun"}
#: Interfaces a per-interface sysctl may name. The key must exist when the container starts, so only
#: the interfaces the engine makes (``eth<N>``: the host's N-th network) and ``all``/``default``/``lo``;
#: a ``wg0`` made later by the learner has no sysctl at start (measured: runc fails the start).
_IFACE = r"(?:all|default|lo|eth(?P<eth>[0-9]|1[0-5]))"
_BOOL = frozenset({"0", "1"})
#: The namespaced ``net.*`` sysctls a host may set (a container's /proc/sys is read-only, so the lab's
#: kernel settings are declared here), each with the values it accepts. Anything else is refused.
SYSCTL_ALLOWLIST: tuple[tuple[re.Pattern[str], frozenset[str] | range], ...] = (
    (re.compile(r"net\.ipv4\.ip_forward"), _BOOL),
    (re.compile(rf"net\.ipv4\.conf\.{_IFACE}\.rp_filter"), frozenset({"0", "1", "2"})),
    (re.compile(rf"net\.ipv4\.conf\.{_IFACE}\.(?:accept_redirects|send_redirects|forwarding|proxy_arp|"
                r"log_martians|accept_source_route)"), _BOOL),
    (re.compile(rf"net\.ipv4\.conf\.{_IFACE}\.arp_ignore"), frozenset({"0", "1", "2", "3", "8"})),
    (re.compile(rf"net\.ipv4\.conf\.{_IFACE}\.arp_announce"), frozenset({"0", "1", "2"})),
    (re.compile(rf"net\.ipv6\.conf\.{_IFACE}\.(?:forwarding|disable_ipv6)"), _BOOL),
    (re.compile(r"net\.ipv4\.tcp_syncookies"), frozenset({"0", "1", "2"})),
    (re.compile(r"net\.netfilter\.nf_conntrack_udp_timeout(?:_stream)?"), range(1, 3601)),
)
#: Prefix lengths a network may ask for (``prefix``): the engine picks a free subnet of that size.
PREFIX_RANGE = (16, 29)


def sysctl_problem(key: str, value: str, networks: int | None = None) -> str | None:
    """Why ``key=value`` may not be set on a host (None when it may). ``networks``: how many networks the
    host joins (its interfaces are eth0..eth<networks-1>); None skips that check."""
    for pattern, allowed in SYSCTL_ALLOWLIST:
        m = pattern.fullmatch(key)
        if not m:
            continue
        eth = m.groupdict().get("eth")
        if eth is not None and networks is not None and int(eth) >= networks:
            return (f"{key}: the host has {networks} network(s), so its interfaces are eth0"
                    f"{f'..eth{networks - 1}' if networks > 1 else ''}")
        if isinstance(allowed, range):
            if not (value.isdigit() and int(value) in allowed):
                return f"{key} must be an integer {allowed.start}-{allowed.stop - 1}, got {value!r}"
        elif value not in allowed:
            return f"{key} must be one of {', '.join(sorted(allowed))}, got {value!r}"
        return None
    return (f"sysctl {key!r} is not allowed; allowed: net.ipv4.ip_forward, "
            "net.ipv4.conf.{all,default,lo,ethN}.{rp_filter,accept_redirects,send_redirects,forwarding,"
            "proxy_arp,log_martians,accept_source_route,arp_ignore,arp_announce}, "
            "net.ipv6.conf.{all,default,lo,ethN}.{forwarding,disable_ipv6}, net.ipv4.tcp_syncookies, "
            "net.netfilter.nf_conntrack_udp_timeout[_stream]")


def address_param(host: str, network: str) -> str:
    """The parameter that holds ``host``'s static address on ``network`` (``addr_<host>_<network>``)."""
    return f"addr_{host}_{network}".replace("-", "_")


def subnet_param(network: str) -> str:
    """The parameter that holds the subnet the engine chose for ``network`` (``net_<network>_subnet``)."""
    return f"net_{network}_subnet".replace("-", "_")


def usable_offsets(prefix: int) -> range:
    """Offsets a host may declare on a network of ``prefix``: the lower half of the subnet, without the
    network address. The upper half is Docker's for hosts without a static address (and other containers
    that join, like the grading sandbox); its last usable address is the engine's bridge (the gateway)."""
    return range(1, (1 << (32 - prefix)) // 2)

NAME = r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$"
Name = Annotated[str, StringConstraints(pattern=NAME, max_length=32)]
MEMORY = re.compile(r"^(?P<n>[1-9][0-9]*)(?P<unit>[km])$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def placeholders(text: str) -> set[str]:
    """Names used as ``{name}`` in ``text``; raises ValueError on a malformed template."""
    names = set()
    for _, field, spec, conv in string.Formatter().parse(text):
        if field is None:
            continue
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", field) or spec or conv:
            raise ValueError(f"placeholder {{{field}}} must be a plain parameter name like {{zone}}")
        names.add(field)
    return names


class _ParamBase(_Model):
    #: A secret parameter (which fault was injected) is never shown to the learner's code: not in
    #: ``lab.params``, the status panel or the sandbox's connection file. Checks still see it.
    secret: bool = False


class IntParam(_ParamBase):
    type: Literal["int"]
    min: int = Field(ge=0, le=65535)
    max: int = Field(ge=0, le=65535)

    @model_validator(mode="after")
    def _range(self) -> IntParam:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class ChoiceParam(_ParamBase):
    type: Literal["choice"]
    values: list[Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._/-]+$", max_length=64)]] = Field(
        min_length=1)


class HexParam(_ParamBase):
    type: Literal["hex"]
    length: int = Field(ge=1, le=32)
    prefix: Annotated[str, StringConstraints(pattern=r"^[a-z0-9.-]*$", max_length=32)] = ""
    suffix: Annotated[str, StringConstraints(pattern=r"^[a-z0-9.-]*$", max_length=64)] = ""


Param = Annotated[IntParam | ChoiceParam | HexParam, Field(discriminator="type")]


class PortReady(_Model):
    """Ready when a TCP connection to ``port`` on the host succeeds."""

    port: int | str


class CommandReady(_Model):
    """Ready when ``command`` exits 0 inside the host (``{param}`` placeholders rendered shell-quoted, as in
    ``setup``)."""

    command: Annotated[str, StringConstraints(min_length=1, max_length=1000)]


class LogReady(_Model):
    """Ready when the host's log contains ``log``."""

    log: Annotated[str, StringConstraints(min_length=1, max_length=200)]


Ready = PortReady | CommandReady | LogReady


class Resources(_Model):
    memory: Annotated[str, StringConstraints(max_length=16)] = "256m"
    cpus: float = Field(default=0.5, gt=0, le=2)
    pids: int = Field(default=256, ge=16, le=2048)
    #: Bytes the host may write to its own filesystem (its writable layer); a watchdog stops it past that.
    disk: Annotated[str, StringConstraints(max_length=16)] = "1024m"

    @field_validator("disk")
    @classmethod
    def _disk_cap(cls, v: str) -> str:
        if not 16 * 1024 * 1024 <= _size(v) <= 16 * 1024**3:
            raise ValueError("disk must be between 16m and 16384m")
        return v

    @property
    def disk_bytes(self) -> int:
        return _size(self.disk)

    @field_validator("memory")
    @classmethod
    def _memory_cap(cls, v: str) -> str:
        if not 16 * 1024 * 1024 <= _size(v) <= 2 * 1024**3:
            raise ValueError("memory must be between 16m and 2048m")
        return v

    @property
    def memory_bytes(self) -> int:
        return _size(self.memory)


def _size(text: str) -> int:
    """Bytes in a size like ``256m`` or ``65536k``."""
    m = MEMORY.match(text)
    if not m:
        raise ValueError(f"expected a size like 256m or 65536k, got {text!r}")
    return int(m["n"]) * (1024 if m["unit"] == "k" else 1024 * 1024)


class HostSpec(_Model):
    image: Name
    role: Literal["target", "probe", "client", "service", "fixture"]
    description: str = ""
    capabilities: list[str] = Field(default_factory=list)
    environment: dict[Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9_]*$")], str] = Field(
        default_factory=dict)
    command: list[str] | None = None
    setup: list[Annotated[str, StringConstraints(min_length=1, max_length=2000)]] = Field(default_factory=list)
    ready: list[Ready] = Field(default_factory=list)
    ready_timeout: float | None = Field(default=None, gt=0, le=600)
    depends_on: list[Name] = Field(default_factory=list)
    networks: list[Name] | None = None
    resources: Resources = Resources()
    ssh: bool = True
    labels: dict[str, Annotated[str, StringConstraints(max_length=200)]] = Field(default_factory=dict)
    #: Static addresses: network name -> offset inside the subnet the engine picks for that network
    #: (the network must declare ``prefix``). Offset 5 on a /24 chosen as 10.200.7.0/24 is 10.200.7.5.
    addresses: dict[Name, int] = Field(default_factory=dict)
    #: Namespaced kernel settings from :data:`SYSCTL_ALLOWLIST` (values as strings or integers).
    sysctls: dict[str, str | int] = Field(default_factory=dict)
    #: Device names from :data:`DEVICE_ALLOWLIST` (only ``tun``).
    devices: list[str] = Field(default_factory=list)

    @field_validator("sysctls")
    @classmethod
    def _sysctls_allowlisted(cls, v: dict[str, str | int]) -> dict[str, str | int]:
        problems = [p for key, value in v.items() if (p := sysctl_problem(key, str(value).strip())) is not None]
        if problems:
            raise ValueError("; ".join(problems))
        return {key: str(value).strip() for key, value in v.items()}

    @field_validator("devices")
    @classmethod
    def _devices_allowlisted(cls, v: list[str]) -> list[str]:
        bad = [d for d in v if d not in DEVICE_ALLOWLIST]
        if bad:
            raise ValueError(f"devices {', '.join(map(repr, bad))} are not allowed; allowed: "
                             f"{', '.join(sorted(DEVICE_ALLOWLIST))} (which is {DEVICE_ALLOWLIST['tun']}, "
                             "nothing else from /dev)")
        if len(set(v)) != len(v):
            raise ValueError("devices are listed twice")
        return v

    @field_validator("capabilities")
    @classmethod
    def _allowlisted(cls, v: list[str]) -> list[str]:
        bad = [c for c in v if c not in CAPABILITY_ALLOWLIST]
        if bad:
            raise ValueError(
                f"capabilities {', '.join(bad)} are not allowed; allowed: {', '.join(sorted(CAPABILITY_ALLOWLIST))}")
        if len(set(v)) != len(v):
            raise ValueError("capabilities are listed twice")
        return v

    @field_validator("labels")
    @classmethod
    def _no_reserved(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if key.lower().startswith(RESERVED_LABEL_PREFIX) or not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,62}", key):
                raise ValueError(f"label {key!r} is reserved or malformed (labels under "
                                 f"{RESERVED_LABEL_PREFIX} are set by ladderlab only)")
        return v

    @model_validator(mode="after")
    def _sshd_needs(self) -> HostSpec:
        missing = SSHD_CAPABILITIES - set(self.capabilities)
        if self.ssh and missing:
            raise ValueError(f"ssh: true runs sshd, which needs the capabilities {', '.join(sorted(missing))}; "
                             "add them to capabilities or set ssh: false")
        return self


class NetworkSpec(_Model):
    name: Name
    description: str = ""
    #: Ask for a subnet of this prefix length (16-29). The engine picks a free one from its pool for
    #: every environment (two environments of one spec never collide), so hosts can have static
    #: ``addresses`` (offsets); the choice is in the parameter ``net_<name>_subnet``. Without
    #: ``prefix`` Docker picks the subnet and every address.
    prefix: int | None = Field(default=None, ge=PREFIX_RANGE[0], le=PREFIX_RANGE[1])


class EnvSpec(_Model):
    """A validated env.yaml. ``path`` is the environment's directory."""

    name: Name
    description: str = ""
    networks: list[NetworkSpec] = Field(default_factory=lambda: [NetworkSpec(name="lan")], min_length=1)
    hosts: dict[Name, HostSpec] = Field(min_length=1, max_length=12)
    params: dict[Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_]*$")], Param] = Field(
        default_factory=dict)

    @model_validator(mode="after")
    def _references(self) -> EnvSpec:
        problems: list[str] = []
        nets = [n.name for n in self.networks]
        if len(set(nets)) != len(nets):
            problems.append("networks: network names must be unique")
        prefixes = {n.name: n.prefix for n in self.networks}
        taken: dict[tuple[str, int], str] = {}
        derived_list = self.derived_params()
        derived = set(derived_list)
        for twice in sorted({d for d in derived_list if derived_list.count(d) > 1}):
            problems.append(f"hosts: two static addresses would both be the parameter {twice} (rename a host "
                            "or network: '-' and '_' are the same in parameter names)")
        for clash in sorted(derived & set(self.params)):
            problems.append(f"params.{clash}: this name is reserved for the address the engine assigns")
        for name, host in self.hosts.items():
            where = f"hosts.{name}"
            for net in host.networks or []:
                if net not in nets:
                    problems.append(f"{where}.networks: unknown network {net!r} (declared: {', '.join(nets)})")
            joined = self.host_networks(name) if all(n in nets for n in host.networks or []) else []
            for net, offset in host.addresses.items():
                prefix = prefixes.get(net)
                if net not in joined:
                    problems.append(f"{where}.addresses.{net}: the host is not on network {net!r}")
                elif prefix is None:
                    problems.append(f"{where}.addresses.{net}: network {net!r} declares no prefix, so the "
                                    "engine picks its addresses (add prefix: 24 to the network)")
                elif offset not in usable_offsets(prefix):
                    span = usable_offsets(prefix)
                    problems.append(f"{where}.addresses.{net}: offset {offset} is outside {span.start}-"
                                    f"{span.stop - 1} (the lower half of a /{prefix}; the upper half is the "
                                    "engine's)")
                elif (net, offset) in taken:
                    problems.append(f"{where}.addresses.{net}: offset {offset} is already host "
                                    f"{taken[net, offset]!r}'s")
                else:
                    taken[net, offset] = name
            for key, value in host.sysctls.items():
                problem = sysctl_problem(key, str(value), len(joined) or None)
                if problem:
                    problems.append(f"{where}.sysctls: {problem}")
            for dep in host.depends_on:
                if dep not in self.hosts or dep == name:
                    problems.append(f"{where}.depends_on: {dep!r} is not another host of this environment")
            templated: list[tuple[str, str]] = [(f"{where}.environment.{k}", v) for k, v in host.environment.items()]
            templated += [(f"{where}.setup[{i}]", c) for i, c in enumerate(host.setup)]
            templated += [(f"{where}.ready[{i}].port", r.port) for i, r in enumerate(host.ready)
                          if isinstance(r, PortReady) and isinstance(r.port, str)]
            templated += [(f"{where}.ready[{i}].command", r.command) for i, r in enumerate(host.ready)
                          if isinstance(r, CommandReady)]
            for field, text in templated:
                try:
                    unknown = placeholders(text) - set(self.params) - derived
                except ValueError as exc:
                    problems.append(f"{field}: {exc}")
                    continue
                if unknown:
                    problems.append(f"{field}: unknown parameter {', '.join(sorted(unknown))} "
                                    f"(declared: {', '.join(sorted([*self.params, *derived])) or 'none'})")
        cycle = _find_cycle({n: h.depends_on for n, h in self.hosts.items()})
        if cycle:
            problems.append(f"hosts: depends_on forms a cycle: {' -> '.join(cycle)}")
        if problems:
            raise ValueError(CROSS_REF_SEP.join(problems) + CROSS_REF_SEP)
        return self

    def derived_params(self) -> list[str]:
        """Parameters the engine fills in when it brings the environment up: ``net_<net>_subnet`` for each
        network with a ``prefix`` and ``addr_<host>_<net>`` for each static address. Usable as
        ``{placeholders}`` like the seeded ones; checks and the learner's ``lab.params`` see them."""
        out = [subnet_param(n.name) for n in self.networks if n.prefix is not None]
        out += [address_param(h, net) for h, host in self.hosts.items() for net in host.addresses]
        return out

    def host_networks(self, host: str) -> list[str]:
        chosen = self.hosts[host].networks
        return list(chosen) if chosen else [n.name for n in self.networks]

    def start_waves(self) -> list[list[str]]:
        """Hosts grouped so that each group depends only on earlier groups."""
        done: set[str] = set()
        waves: list[list[str]] = []
        while len(done) < len(self.hosts):
            wave = sorted(n for n, h in self.hosts.items() if n not in done and set(h.depends_on) <= done)
            waves.append(wave)
            done.update(wave)
        return waves


def _find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in graph.get(node, []):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt in graph and state.get(nxt) is None:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if state.get(node) is None:
            found = visit(node)
            if found:
                return found
    return None


def load_env_spec(env_dir: Path) -> EnvSpec:
    """Load ``<env_dir>/env.yaml``. The directory name must equal ``name``."""
    display = f"environments/{env_dir.name}/env.yaml"
    spec = load_model(env_dir / "env.yaml", EnvSpec, display)
    if spec.name != env_dir.name:
        raise ConfigError(display, [("name", f"must equal the directory name {env_dir.name!r}, got {spec.name!r}")])
    return spec


def discover(environments_dir: Path) -> dict[str, Path]:
    """Environment names -> directories (every folder with an env.yaml)."""
    return {p.parent.name: p.parent for p in sorted(environments_dir.glob("*/env.yaml"))}

