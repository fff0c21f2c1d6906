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

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import nbformat
from docker.errors import APIError
from nbformat import NotebookNode

from ladderlab.config import Settings
from ladderlab.course.labs import SandboxSpec
from ladderlab.environments import files, hardening
from ladderlab.environments.connection import Connection, HostEntry
from ladderlab.environments.images import tool_image
from ladderlab.environments.runtime import Environment, EnvRecord, client_for, key_path, remove_containers, tar_files
from ladderlab.errors import EnvError

PACKAGE_DIR = Path(__file__).resolve().parents[1]
LEARNER_UID = 1000
ANSWERS_LIMIT = 64 * 1024
PACKAGE_ROOT = ".ladderlab"
WORK_SIZE = 64 << 20  # /work: the package, the notebook, the learner's files (plus twice the output limit)
TMP_SIZE = 64 << 20
MAX_DEPTH = 64  # JSON nesting taken back from the sandbox
#: Hosts the learner's graded code can neither log into nor reach through ladderlab: ``probe`` (the checks'
#: vantage points) and ``fixture`` (trusted dependencies whose counters must stay honest: a pager, a NAT
#: gateway, an update server). Checks may act on a fixture (``LiveContext.restart`` and the others), never
#: on a probe.
PROBE_ROLES = frozenset({"probe", "fixture"})


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
    """One archive for ``/work``: the ``ladderlab`` package's Python sources under ``.ladderlab/`` and
    ``work`` files (the learner's, 0600)."""
    sources = [(f"{PACKAGE_ROOT}/ladderlab/" + path.relative_to(PACKAGE_DIR).as_posix(), path.read_bytes(), 0o644,
                LEARNER_UID) for path in sorted(PACKAGE_DIR.rglob("*.py")) if "__pycache__" not in path.parts]
    return tar_files(sources + _work(work or {}))


def _work(files: dict[str, bytes]) -> list[tuple[str, bytes, int, int]]:
    return [(name, data, 0o600, LEARNER_UID) for name, data in files.items()]


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
        cap = settings.max_cell_timeout  # LADDERLAB_MAX_CELL_TIMEOUT lowers the lab's cell limit, never raises it
        if cap is not None and cap < limits.cell_timeout:
            limits = limits.model_copy(update={"cell_timeout": cap})
        self.limits = limits
        self.name = ""
        self.started = time.monotonic()
        self.outcome = SandboxOutcome(None, {}, None, False, 0.0)

    def create(self, record: EnvRecord, nb: NotebookNode) -> None:
        """Start the runner on the env's first network; its kernel starts while the hosts do.

        Its root file system is read-only; ``/tmp`` is a tmpfs and ``/work`` a ladderlab tmpfs volume,
        both size-capped (nothing it writes reaches the host's disk). The runner waits for ``.ready``
        (the package and the notebook are whole by then), starts its kernel, and waits for ``go``.
        """
        limits = self.limits
        self.client = client_for(self.settings, record, self.client)  # cluster mode: the environment's node
        image = tool_image(self.settings, self.client, "runner")
        self.name = f"ll-{record.id}-sandbox"
        stamp = record.stamp()
        memory = _parse_size(limits.memory)
        runner = ["python3", "-m", "ladderlab.grading.runner", "/work/in.ipynb", "/work/out.ipynb",
                  "--cell-timeout", f"{limits.cell_timeout:g}", "--go", "/work/go",
                  "--go-timeout", f"{max(60.0, limits.timeout):g}"]
        # The container outlives the runner (``sleep``): /work, a tmpfs volume, lives only while it runs.
        wait = "while [ ! -e /work/.ready ]; do sleep 0.01; done; " + " ".join(runner) + "; exec sleep 86400"
        self.started = time.monotonic()
        work_size = WORK_SIZE + 2 * limits.output_limit
        hardening.create_work_volume(self.client, f"{self.name}-work", stamp, work_size, LEARNER_UID)
        hardening.create(self.client, hardening.Plan(
            kind="sandbox", name=self.name, image=image, stamp=stamp, host="sandbox", role="sandbox",
            network=next(iter(record.networks.values())), pids=limits.pids, memory=memory, cpus=limits.cpus,
            cpu_shares=4096,  # its kernel start is grading's critical path: first call on the CPU
            command=["sh", "-c", wait], user=str(LEARNER_UID), working_dir="/work",
            environment={"LADDERLAB_CONNECT": "/work/connect.json", "PYTHONPATH": f"/work/{PACKAGE_ROOT}",
                         "HOME": "/tmp", "PYTHONDONTWRITEBYTECODE": "1"},  # noqa: S108 - its own tmpfs
            read_only=True, tmpfs={"/tmp": f"rw,nosuid,nodev,size={TMP_SIZE}"},  # noqa: S108 - its own /tmp
            work_volume=f"{self.name}-work"))
        hardening.start(self.client, self.name)
        try:
            self.client.api.put_archive(self.name, "/work", package_tar({"in.ipynb": nbformat.writes(nb).encode()}))
            self.client.api.put_archive(self.name, "/work", tar_files(_work({".ready": b""})))
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
        (unless ``remove`` is false: grading leaves it to the environment's teardown, which runs in parallel).

        ``/work`` lives only while the container runs (a tmpfs volume is unmounted when it stops), so the
        results are taken from the running container, frozen first (``pause``): nothing the learner's
        code does after the notebook was written counts, or can change what is read."""
        api = self.client.api
        outcome = self.outcome
        try:
            running = self._wait_for_result(outcome)
            if running:
                self._pause()
            outcome.log = bytes(api.logs(self.name, tail=20)).decode(errors="replace")[-2000:]
            if running:
                outcome.notebook = _take_notebook(self.client, self.name, self.limits.output_limit, outcome)
                outcome.answers = _take_answers(self.client, self.name, outcome)
            elif not outcome.timed_out:
                outcome.problems.append(f"the sandbox stopped before the notebook was written "
                                        f"(exit code {outcome.exit_code}): nothing came back")
        except APIError as exc:
            raise EnvError(f"sandbox {self.name} failed: {exc.explanation or exc}") from None
        finally:
            if remove:
                self.remove()
            else:
                self.outcome.seconds = time.monotonic() - self.started
        return outcome

    def _pause(self, attempts: int = 4, delay: float = 0.5) -> None:
        """Freeze the sandbox. cgroup v1's freezer now and then gives up on a busy container ("unable to
        freeze"): try again a few times before the grading is called incomplete."""
        for attempt in range(1, attempts + 1):
            try:
                self.client.api.pause(self.name)
                return
            except APIError as exc:
                if "freeze" not in str(exc.explanation or exc) or attempt == attempts:
                    raise
                time.sleep(delay)

    def _wait_for_result(self, outcome: SandboxOutcome) -> bool:
        """Until the runner wrote its notebook, the container stopped, or the wall-time limit passed.

        Returns whether the container still runs with a notebook to take. The runner writes the
        executed notebook atomically before its kernel shuts down, and stays up after it.
        """
        api = self.client.api
        deadline = self.started + self.limits.timeout
        # Each poll is two engine calls (inspect, and a stat through the archive API): polled every 20 ms they
        # cost the engine more CPU than the notebook's wait is worth when several gradings run at once.
        delay = 0.05
        while True:
            state = api.inspect_container(self.name)["State"]
            if not state["Running"]:
                outcome.exit_code = int(state["ExitCode"])
                return False
            if files.stat_path(self.client, self.name, "/work/out.ipynb") is not None:
                return True
            if time.monotonic() > deadline:
                outcome.timed_out = True
                outcome.problems.append(f"the notebook ran past {self.limits.timeout:g}s and was stopped")
                api.kill(self.name)
                return False
            time.sleep(delay)
            delay = min(delay * 1.5, 0.2)

    def remove(self) -> None:
        if self.name:
            remove_containers(self.client, [self.name])
        self.outcome.seconds = time.monotonic() - self.started


def load_untrusted_json(raw: bytes, what: str, problems: list[str]) -> Any:
    """JSON that crossed back from the sandbox, parsed with limits: bytes must be UTF-8 JSON no deeper
    than :data:`MAX_DEPTH`; any violation is noted in ``problems`` (the learner's) and gives None."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        problems.append(f"{what} is not UTF-8 text")
        return None
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:  # nesting depth, counted before the parser recurses into it
        if in_string:
            escaped, in_string = (False, True) if escaped else (ch == "\\", ch != '"')
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_DEPTH:
                problems.append(f"{what} nests deeper than {MAX_DEPTH} levels")
                return None
        elif ch in "]}":
            depth -= 1
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        problems.append(f"{what} is not valid JSON: {str(exc)[:200]}")
        return None


def _as_notebook(data: Any, problems: list[str]) -> NotebookNode | None:
    """The executed notebook as the grader uses it: nbformat 4 with a list of cells that are objects.

    Nothing else is assumed (outputs are sanitised one by one when they are merged back)."""
    if not isinstance(data, dict) or data.get("nbformat") != 4 or not isinstance(data.get("cells"), list) \
            or not all(isinstance(c, dict) for c in data["cells"]):
        problems.append("the executed notebook is not an nbformat 4 notebook with a list of cells")
        return None
    nb: NotebookNode = nbformat.from_dict({"nbformat": 4, "nbformat_minor": 5, "metadata": {},
                                           "cells": data["cells"]})
    return nb


def _take_notebook(client: docker.DockerClient, name: str, limit: int, outcome: SandboxOutcome) -> NotebookNode | None:
    try:
        raw = files.read_bytes(client, name, "/work/out.ipynb", limit=limit, follow=False)
    except files.TooLarge as exc:
        outcome.problems.append(f"executed notebook dropped: {exc}")
        return None
    if raw is None:
        outcome.problems.append("the sandbox wrote no executed notebook")
        return None
    data = load_untrusted_json(raw, "the executed notebook", outcome.problems)
    return _as_notebook(data, outcome.problems) if data is not None else None


def _take_answers(client: docker.DockerClient, name: str, outcome: SandboxOutcome) -> dict[str, Any]:
    try:
        raw = files.read_bytes(client, name, "/work/answers.json", limit=ANSWERS_LIMIT, follow=False)
    except files.TooLarge as exc:
        outcome.problems.append(f"answers dropped: {exc}")
        return {}
    if raw is None:
        return {}
    data = load_untrusted_json(raw, "answers.json", outcome.problems)
    if data is not None and not isinstance(data, dict):
        outcome.problems.append("answers.json is not a JSON object")
    return data if isinstance(data, dict) else {}
