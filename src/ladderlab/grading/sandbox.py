"""The sandbox: a throwaway runner container that executes a learner's notebook.

It sits on the lab network (so the learner's code reaches the lab hosts over
SSH, as the learner's kernel did) and nowhere else: the network is
``--internal`` and host services bind 127.0.0.1. It gets no Docker socket,
no gradebook, no hidden checks, no signing key; it runs as an unprivileged
user with every capability dropped, no-new-privileges, and limits on pids,
memory, CPU and wall time. What it receives: the learner API (plain source),
the notebook with its check cells removed, and a connection file whose key
opens only the learner-facing hosts. What comes back is data: the executed
notebook and the answers JSON, each read through the Docker API up to a size
limit and parsed by the trusted side.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import nbformat
from docker.errors import APIError, NotFound
from nbformat import NotebookNode

from ladderlab.config import Settings
from ladderlab.environments import labels as L
from ladderlab.environments.images import tool_image
from ladderlab.environments.runtime import (
    LOG_CONFIG,
    Environment,
    EnvRecord,
    key_path,
    remove_containers,
    tar_files,
)
from ladderlab.errors import EnvError
from ladderlab.lab.connect import Connection, HostEntry
from ladderlab.labs import SandboxSpec

PACKAGE_DIR = Path(__file__).resolve().parents[1]
LEARNER_UID = 1000
ANSWERS_LIMIT = 64 * 1024
PROBE_ROLES = frozenset({"probe"})


@dataclass
class SandboxOutcome:
    notebook: NotebookNode | None
    answers: dict[str, Any]
    exit_code: int | None
    timed_out: bool
    seconds: float
    problems: list[str] = field(default_factory=list)
    log: str = ""


def _parse_size(text: str) -> int:
    return int(text[:-1]) * {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[text[-1]]


def package_tar(work: dict[str, bytes] | None = None) -> bytes:
    """One archive for ``/``: the ``ladderlab`` package's Python sources under ``opt/ladderlab`` (root's,
    read-only to the learner) and ``work`` files (the learner's, 0600)."""
    sources = [("opt/ladderlab/ladderlab/" + path.relative_to(PACKAGE_DIR).as_posix(), path.read_bytes(), 0o644, 0)
               for path in sorted(PACKAGE_DIR.rglob("*.py")) if "__pycache__" not in path.parts]
    return tar_files(sources + _work(work or {}))


def _work(files: dict[str, bytes]) -> list[tuple[str, bytes, int, int]]:
    return [(name, data, 0o600, LEARNER_UID) for name, data in files.items()]


def read_limited(client: docker.DockerClient, container: str, path: str, limit: int) -> bytes | None:
    """One regular file from a container, or None if absent; EnvError when it is over ``limit``."""
    try:
        stream, stat = client.api.get_archive(container, path)
    except NotFound:
        return None
    if int(stat.get("size", 0)) > limit:
        raise EnvError(f"{path} is {stat.get('size')} bytes, over the limit of {limit}")
    raw = bytearray()
    for chunk in stream:
        raw += chunk
        if len(raw) > limit + 64 * 1024:
            raise EnvError(f"{path} is over the limit of {limit} bytes")
    with tarfile.open(fileobj=io.BytesIO(bytes(raw))) as tar:
        member = tar.next()
        if member is None or not member.isfile():
            return None
        fh = tar.extractfile(member)
        return fh.read(limit + 1) if fh else None


def connection_for(settings: Settings, env: Environment, lab_id: str) -> Connection:
    rec = env.record
    hosts = {n: HostEntry(h.address, h.role, h.ssh_host_key, reachable=h.role not in PROBE_ROLES and h.ssh)
             for n, h in rec.hosts.items()}
    return Connection(lab=lab_id, env_id=rec.id, learner=rec.learner, params=rec.learner_params(),
                      expires=rec.expires, hosts=hosts, private_key=key_path(settings, rec.id).read_text(),
                      answers_path="/work/answers.json", grading=True)


class Sandbox:
    """One runner container for one notebook: :meth:`create` early, :meth:`go` when the env is ready,
    :meth:`finish` to collect the results; :meth:`remove` always (``finish`` calls it)."""

    def __init__(self, settings: Settings, client: docker.DockerClient, limits: SandboxSpec) -> None:
        self.settings = settings
        self.client = client
        self.limits = limits
        self.name = ""
        self.started = time.monotonic()
        self.outcome = SandboxOutcome(None, {}, None, False, 0.0)

    def create(self, record: EnvRecord, nb: NotebookNode) -> None:
        """Start the runner on the env's first network; its kernel starts while the hosts do."""
        api = self.client.api
        limits = self.limits
        image = tool_image(self.settings, self.client, "runner")
        self.name = f"ll-{record.id}-sandbox"
        stamp = L.Stamp(record.id, record.env, record.lab, record.learner, record.expires, record.created,
                        L.owner_token())
        labels = stamp.labels(host="sandbox", role="sandbox")
        labels[L.KIND] = "sandbox"
        memory = _parse_size(limits.memory)
        host_config = api.create_host_config(
            cap_drop=["ALL"], security_opt=["no-new-privileges:true"], privileged=False, init=True,
            pids_limit=limits.pids, mem_limit=memory, memswap_limit=memory, nano_cpus=int(limits.cpus * 1e9),
            ipc_mode="private", network_mode=next(iter(record.networks.values())),
            cpu_shares=4096,  # its kernel start is grading's critical path: first call on the CPU
            log_config=docker.types.LogConfig(type="json-file", config=LOG_CONFIG),
            tmpfs={"/tmp": "rw,nosuid,nodev,size=64m"})  # noqa: S108 - the container's own /tmp
        command = ["python3", "-m", "ladderlab.grading.runner", "/work/in.ipynb", "/work/out.ipynb",
                   "--cell-timeout", f"{limits.cell_timeout:g}", "--go", "/work/go",
                   "--go-timeout", f"{max(60.0, limits.timeout):g}"]
        self.started = time.monotonic()
        try:
            api.create_container(image, command=command, name=self.name, user=str(LEARNER_UID), labels=labels,
                                 environment={"LADDERLAB_CONNECT": "/work/connect.json",
                                              "PYTHONPATH": "/opt/ladderlab"},
                                 working_dir="/work", host_config=host_config, detach=True)
            api.put_archive(self.name, "/", package_tar({"work/in.ipynb": nbformat.writes(nb).encode()}))
            api.start(self.name)
        except APIError as exc:
            raise EnvError(f"sandbox {self.name} failed to start: {exc.explanation or exc}") from None

    def go(self, conn: Connection) -> None:
        """Hand over the connection file, then the go signal (two archives: the file is whole first)."""
        api = self.client.api
        try:
            api.put_archive(self.name, "/work", tar_files(_work({"connect.json": conn.to_json().encode()})))
            api.put_archive(self.name, "/work", tar_files(_work({"go": b""})))
        except APIError as exc:
            raise EnvError(f"sandbox {self.name}: {exc.explanation or exc}") from None

    def finish(self, remove: bool = True) -> SandboxOutcome:
        """Wait (up to the wall-time limit), take back the notebook and answers, then remove the container
        (unless ``remove`` is false: grading leaves it to the environment's teardown, which runs in parallel)."""
        api = self.client.api
        outcome = self.outcome
        try:
            self._wait_for_result(outcome)
            outcome.log = bytes(api.logs(self.name, tail=20)).decode(errors="replace")[-2000:]
            outcome.notebook = _take_notebook(self.client, self.name, self.limits.output_limit, outcome)
            outcome.answers = _take_answers(self.client, self.name, outcome)
        except APIError as exc:
            raise EnvError(f"sandbox {self.name} failed: {exc.explanation or exc}") from None
        finally:
            if remove:
                self.remove()
            else:
                self.outcome.seconds = time.monotonic() - self.started
        return outcome

    def _wait_for_result(self, outcome: SandboxOutcome) -> None:
        """Until the runner wrote its notebook or exited, within the wall-time limit; then stop it.

        The runner writes the executed notebook atomically before its kernel shuts down, so the
        grader can take it at once. Nothing the learner's code does after that counts.
        """
        api = self.client.api
        deadline = self.started + self.limits.timeout
        while True:
            state = api.inspect_container(self.name)["State"]
            if not state["Running"]:
                outcome.exit_code = int(state["ExitCode"])
                return
            try:
                api.get_archive(self.name, "/work/out.ipynb")[0].close()
            except NotFound:
                pass
            else:
                api.kill(self.name)
                return
            if time.monotonic() > deadline:
                outcome.timed_out = True
                outcome.problems.append(f"the notebook ran past {self.limits.timeout:g}s and was stopped")
                api.kill(self.name)
                return
            time.sleep(0.02)

    def remove(self) -> None:
        if self.name:
            remove_containers(self.client, [self.name])
        self.outcome.seconds = time.monotonic() - self.started


def _take_notebook(client: docker.DockerClient, name: str, limit: int, outcome: SandboxOutcome) -> NotebookNode | None:
    try:
        raw = read_limited(client, name, "/work/out.ipynb", limit)
    except EnvError as exc:
        outcome.problems.append(f"executed notebook dropped: {exc}")
        return None
    if raw is None:
        outcome.problems.append("the sandbox wrote no executed notebook")
        return None
    try:
        nb: NotebookNode = nbformat.reads(raw.decode("utf-8"), as_version=4)
    except (UnicodeDecodeError, ValueError) as exc:
        outcome.problems.append(f"executed notebook unreadable: {str(exc)[:200]}")
        return None
    return nb


def _take_answers(client: docker.DockerClient, name: str, outcome: SandboxOutcome) -> dict[str, Any]:
    try:
        raw = read_limited(client, name, "/work/answers.json", ANSWERS_LIMIT)
    except EnvError as exc:
        outcome.problems.append(f"answers dropped: {exc}")
        return {}
    if raw is None:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        outcome.problems.append("answers.json is not JSON")
        return {}
    return data if isinstance(data, dict) else {}
