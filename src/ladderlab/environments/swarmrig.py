"""A Docker Swarm of three engines in network namespaces on this machine: cluster mode's test rig.

>>> with SwarmRig(Path("/tmp/rig")) as rig:                       # doctest: +SKIP
...     os.environ["LADDERLAB_CLUSTER"] = str(rig.cluster_file)
...     ...                                                          # a manager and two workers

Each node is a ``dockerd`` (with its own containerd, data root, exec root and iptables) in a
network namespace of its own, on a bridge that lives in a fourth namespace; the host's engine, its
iptables rules and its sysctls are not touched (``../shared/swarm-rig.md`` measured this). Two
things the measured recipe did not cover, found here:

- libnetwork keeps the namespaces of overlay networks at the fixed path ``/var/run/docker/netns``:
  three engines sharing it would unlink one another's mount points. Each node bind-mounts a
  directory of its own there, inside its own mount namespace.
- Killing a node (:meth:`kill`) must also kill what its engine started: the containers' processes
  are found through the node's cgroups (``--cgroup-parent /<node>``), the engine's own helpers
  through its network namespace.

Root only (network namespaces, mounts); :meth:`stop` removes every trace (namespaces, cgroups,
data roots) and is safe to call twice.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import docker
import yaml
from docker.errors import DockerException

WRAPPER = """#!/bin/sh
# Runs inside `ip netns exec`: /sys was remounted, so the cgroup v1 hierarchies are mounted again.
set -e
node=$1
mount -t tmpfs -o mode=755 cgroup_root /sys/fs/cgroup
for c in cpu cpuacct cpuset memory devices freezer blkio pids; do
  mkdir -p /sys/fs/cgroup/$c; mount -t cgroup -o $c cgroup /sys/fs/cgroup/$c
done
mkdir -p /sys/fs/cgroup/systemd; mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd
mkdir -p /sys/fs/cgroup/unified; mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified || true
mkdir -p /run/$node/netns /var/run/docker/netns
mount --bind /run/$node/netns /var/run/docker/netns
hostname $node
export DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1
exec dockerd --data-root /var/lib/$node --exec-root /run/$node/exec --pidfile /run/$node/docker.pid \\
  -H unix:///run/$node/docker.sock --iptables=true --cgroup-parent /$node --label io.ladderlab.node=$node \\
  --no-new-privileges --default-cgroupns-mode private --default-ipc-mode private --log-driver json-file
"""


def available() -> str | None:
    """Why the rig cannot run here (None when it can)."""
    if os.geteuid() != 0:
        return "the swarm rig needs root (network namespaces and mounts)"
    for tool in ("ip", "unshare", "setsid", "dockerd", "docker"):
        if shutil.which(tool) is None:
            return f"the swarm rig needs {tool}"
    return None


def _sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, check=check)


@dataclass
class SwarmRig:
    """``nodes`` engines (the first is the manager, the others workers) on ``10.<net>.0.0/24``."""

    workdir: Path
    prefix: str = "llsw"
    nodes: int = 3
    net: int = 79
    constraints: list[str] = field(default_factory=lambda: ["node.role==worker"])
    cpu_reservation: float | None = None  # the cluster file's (None: fleet's default)
    started: bool = False

    @property
    def names(self) -> list[str]:
        return [f"{self.prefix}{i}" for i in range(1, self.nodes + 1)]

    @property
    def hub(self) -> str:
        return f"{self.prefix}hub"

    @property
    def cluster_file(self) -> Path:
        return self.workdir / "cluster.yaml"

    def url(self, node: str) -> str:
        return f"unix:///run/{node}/docker.sock"

    def address(self, node: str) -> str:
        return f"10.{self.net}.0.{self.names.index(node) + 1}"

    def client(self, node: str) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.url(node), timeout=30)

    # -- life cycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 60) -> SwarmRig:
        why = available()
        if why:
            raise RuntimeError(why)
        self.stop()  # what a killed earlier run left
        self.workdir.mkdir(parents=True, exist_ok=True)
        wrapper = self.workdir / "node.sh"
        wrapper.write_text(WRAPPER)
        wrapper.chmod(0o755)
        self.started = True
        for ns in [*self.names, self.hub]:
            _sh("ip", "netns", "add", ns)
        _sh("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
        _sh("ip", "-n", self.hub, "link", "set", "br0", "up")
        _sh("ip", "-n", self.hub, "link", "set", "lo", "up")
        for i, node in enumerate(self.names, 1):
            veth = f"{self.prefix}v{i}"
            _sh("ip", "-n", self.hub, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", node)
            _sh("ip", "-n", self.hub, "link", "set", veth, "master", "br0", "up")
            _sh("ip", "-n", node, "addr", "add", f"{self.address(node)}/24", "dev", "eth0")
            _sh("ip", "-n", node, "link", "set", "eth0", "up")
            _sh("ip", "-n", node, "link", "set", "lo", "up")
            log = (self.workdir / f"{node}.log").open("ab")
            subprocess.Popen(["unshare", "--uts", "ip", "netns", "exec", node, str(wrapper), node], stdout=log,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            log.close()
        deadline = time.monotonic() + timeout
        for node in self.names:
            while True:
                try:
                    self.client(node).ping()
                    break
                except DockerException:
                    if time.monotonic() > deadline:
                        tail = (self.workdir / f"{node}.log").read_text(errors="replace")[-2000:]
                        raise RuntimeError(f"swarm rig: {node}'s engine did not answer in {timeout:g}s:\n{tail}"
                                           ) from None
                    time.sleep(0.2)
        manager, *workers = self.names
        first = self.address(manager)
        self.client(manager).swarm.init(advertise_addr=first, listen_addr=f"{first}:2377")
        token = self.client(manager).swarm.attrs["JoinTokens"]["Worker"]
        for node in workers:
            self.client(node).swarm.join([f"{self.address(manager)}:2377"], token,
                                         advertise_addr=self.address(node), listen_addr=f"{self.address(node)}:2377")
        self.write_cluster_file()
        return self

    def write_cluster_file(self) -> Path:
        self.cluster_file.write_text(yaml.safe_dump({
            "manager": self.url(self.names[0]), "nodes": {n: self.url(n) for n in self.names},
            "constraints": self.constraints, "place_timeout": 20,
            **({"cpu_reservation": self.cpu_reservation} if self.cpu_reservation is not None else {})}))
        return self.cluster_file

    def load_images(self, tags: list[str], nodes: list[str] | None = None) -> None:
        """Copy ``tags`` from the host's engine into each node (in parallel)."""
        from concurrent.futures import ThreadPoolExecutor

        from ladderlab.environments.fleet import copy_images

        targets = nodes or self.names
        with ThreadPoolExecutor(max_workers=len(targets)) as pool:
            list(pool.map(lambda node: copy_images("unix:///var/run/docker.sock", self.url(node), tags), targets))

    def _pids(self, node: str) -> set[int]:
        pids: set[int] = set()
        found = _sh("ip", "netns", "pids", node, check=False)
        pids |= {int(p) for p in found.stdout.split() if p.isdigit()}
        top = Path("/sys/fs/cgroup/pids") / node
        if top.is_dir():
            for procs in top.rglob("cgroup.procs"):
                try:
                    pids |= {int(p) for p in procs.read_text().split()}
                except OSError:
                    continue
        pidfile = Path(f"/run/{node}/docker.pid")
        if pidfile.is_file():
            with contextlib.suppress(ValueError):
                pids.add(int(pidfile.read_text().strip()))
        return pids - {os.getpid()}

    def kill(self, node: str) -> None:
        """Kill node ``node`` as a power cut would: its engine and everything it started, at once."""
        for _ in range(5):
            pids = self._pids(node)
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.3)

    def stop(self) -> None:
        """Remove every trace of the rig. Idempotent."""
        for node in self.names:
            self.kill(node)
        for ns in [*self.names, self.hub]:
            _sh("ip", "netns", "del", ns, check=False)
        for node in self.names:
            for hierarchy in Path("/sys/fs/cgroup").glob(f"*/{node}"):
                for d in sorted((p for p in hierarchy.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                    with contextlib.suppress(OSError):
                        d.rmdir()
                with contextlib.suppress(OSError):
                    hierarchy.rmdir()
            for path in (Path(f"/var/lib/{node}"), Path(f"/run/{node}")):
                shutil.rmtree(path, ignore_errors=True)
        self.started = False

    def leftovers(self) -> list[str]:
        """What the rig left on this machine (empty after :meth:`stop`)."""
        out = []
        names = set(_sh("ip", "netns", "list", check=False).stdout.split())
        out += [f"netns {n}" for n in [*self.names, self.hub] if n in names]
        for node in self.names:
            out += [f"process {p}" for p in self._pids(node)]
            out += [str(p) for p in (Path(f"/var/lib/{node}"), Path(f"/run/{node}")) if p.exists()]
            out += [str(p) for p in Path("/sys/fs/cgroup").glob(f"*/{node}")]
        return out

    def __enter__(self) -> SwarmRig:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
