"""The tamper corpus: malicious submissions handed in through the product's real hand-in path.

Each ``corpus/<name>.yaml`` is one submission: a lab's source notebook (the honest solution) or its
released notebook (no work), some answer cells replaced, learner cells appended, and edits of the
notebook's structure (check cells deleted, duplicated, retyped, metadata, forged outputs); ``cell_timeout``
lowers the grading's per-cell time limit for that entry, as an operator does (``LADDERLAB_MAX_CELL_TIMEOUT``).
Each goes through :func:`ladderlab.service.handin.submit`: nbgrader releases the lab, the notebook is handed in
through nbgrader's exchange, the grading service grades it (fresh environment, sandbox, trusted checks),
writes nbgrader's gradebook and the ladder's evidence, and releases feedback. All of it in a private
cache (the machine's course keys copied in, so seeds are the course's).

For every entry the test asserts:

* the ledger says ``graded`` with exactly the checks the entry ``expect``s to fail failing (``all``, a
  list, or none): the score it honestly earned, never more and never less;
* nbgrader's gradebook holds one submission for that learner with exactly that score, one grade per check
  cell of the lab (no forged cell, no duplicate), each scored as the ledger says, nothing manual;
* the evidence record holds exactly one entry for that learner, with that score, and still verifies;
* the graded notebook shows what the entry expects the learner's cells printed, and no key material;
* the machine is unharmed: no container, network or volume with the learner's label and no container at
  all that was not there before, Docker still answers, the host firewall's ladderlab chains are as they
  were, the course keys unchanged, a host service listening on every address saw no connection, no
  sandbox process (uid 1000) left, and, where the entry says so, the host's disk space back.

A last test hands in the honest solution as another learner: it grades 10/10 as it always does.

Real Docker, real nbgrader, real service; run under the shared lock:
``flock /tmp/ladderlab-docker.lock .venv/bin/pytest tests/tamper/test_corpus.py``.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
import yaml
from nbformat.v4 import new_code_cell

from ladderlab.config import Settings
from ladderlab.course.labs import is_check_cell, nbg
from ladderlab.environments import labels as L
from ladderlab.testing import private_cache

CORPUS = Path(__file__).parent / "corpus"
ENTRIES = sorted(p.stem for p in CORPUS.glob("*.yaml"))

#: What the issue asks the corpus to cover; every entry names the items it covers.
ITEMS = {
    "check-cells": "edited, deleted, duplicated or retyped check cells",
    "metadata-and-tags": "cell and notebook metadata and tags",
    "fake-error-output": "faked or suppressed error output",
    "redefined-names": "redefined names the checks use",
    "fake-pass-lines": "printed fake pass lines",
    "answers-file": "a forged or oversized named-answers file",
    "read-secrets": "reading the hidden checks, gradebook or signing key from the sandbox",
    "host-services": "reaching host services or the Docker API from the sandbox or a lab host",
    "special-files": "symlinks, FIFOs and endless files at paths the checks read",
    "replaced-binaries": "binaries inside a lab host replaced to lie to a naive check",
    "fork-bomb": "fork bomb",
    "memory-bomb": "memory bomb",
    "disk-filling": "disk filling",
    "output-flood": "output flood",
    "kernel-kill": "killing the kernel",
    "infinite-loop": "infinite loop",
}
MACHINE = {"canary-untouched", "no-sandbox-processes", "host-disk-kept"}
EDIT_OPS = {"delete", "duplicate", "set_source", "retype", "set_metadata", "set_outputs", "insert",
            "set_notebook_metadata"}
SANDBOX_UID = 1000
DISK_SLACK = 512 << 20


def load_entry(name: str) -> dict[str, Any]:
    """One corpus entry, its shape checked (a typo in the corpus fails loudly, never tests nothing)."""
    data = yaml.safe_load((CORPUS / f"{name}.yaml").read_text())
    allowed = {"lab", "description", "covers", "base", "cells", "append", "notebook_edits", "expect", "machine",
               "cell_timeout"}
    assert isinstance(data, dict) and not set(data) - allowed, f"{name}: unknown keys {set(data) - allowed}"
    assert isinstance(data.get("lab"), str) and isinstance(data.get("description"), str), name
    assert data.get("base") in ("solution", "untouched"), f"{name}: base must be solution or untouched"
    assert data["covers"] and set(data["covers"]) <= set(ITEMS), f"{name}: covers {data['covers']}"
    assert all(e.get("op") in EDIT_OPS for e in data.get("notebook_edits", [])), name
    assert set(data.get("machine", [])) <= MACHINE, name
    assert isinstance(data.get("cell_timeout", 1), int) and data.get("cell_timeout", 1) >= 1, name
    expect = data["expect"]
    assert set(expect) <= {"failed", "outputs", "log"}, name
    assert expect["failed"] == "all" or isinstance(expect["failed"], list), name
    return data


# --- the corpus itself (no Docker) -------------------------------------------------------------------


def test_the_corpus_covers_every_item_of_the_issue(settings):
    from ladderlab.course import load_course
    from ladderlab.course.labs import load_lab
    from ladderlab.grading.checks import load_graders

    assert len(ENTRIES) >= 15, ENTRIES
    entries = {name: load_entry(name) for name in ENTRIES}
    covered = {item for e in entries.values() for item in e["covers"]}
    assert covered == set(ITEMS), f"not covered: {set(ITEMS) - covered}"
    course = load_course(settings.course_file)
    registry = load_graders(settings.root)
    for name, entry in entries.items():  # every name an entry uses exists in its lab
        lab = load_lab(settings, course, entry["lab"], registry=registry)
        ids = {c.id for c in lab.checks}
        grade_ids = {nbg(c).get("grade_id") for c in lab.source.cells}
        assert set(entry.get("cells", {})) <= grade_ids, name
        if isinstance(entry["expect"]["failed"], list):
            assert set(entry["expect"]["failed"]) <= ids, name
        if "cell_timeout" in entry:  # it lowers the lab's own cell limit (a cap that changed nothing misleads)
            assert entry["cell_timeout"] < lab.spec.sandbox.cell_timeout, name
        for edit in entry.get("notebook_edits", []):
            if isinstance(edit.get("cells"), list):
                assert set(edit["cells"]) <= grade_ids, (name, edit)


# --- building a submission ---------------------------------------------------------------------------


def _targets(nb: nbformat.NotebookNode, which: Any) -> list[nbformat.NotebookNode]:
    if which == "checks":
        return [c for c in nb.cells if is_check_cell(c)]
    return [c for c in nb.cells if nbg(c).get("grade_id") in which]


def _merge(into: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)


def apply_edit(nb: nbformat.NotebookNode, edit: dict[str, Any]) -> None:
    op = edit["op"]
    if op == "set_notebook_metadata":
        _merge(nb.metadata, edit["metadata"])
        return
    if op == "insert":
        cell = nbformat.from_dict({"metadata": {}, "source": "", **edit["cell"]})
        if cell.cell_type == "code":
            cell.setdefault("outputs", [])
            cell.setdefault("execution_count", None)
        cell["id"] = f"forged-{uuid.uuid4().hex[:8]}"
        nb.cells.insert(edit["at"], cell)
        return
    targets = _targets(nb, edit["cells"])
    assert targets, f"edit {edit} matches no cell"
    for cell in targets:
        if op == "delete":
            nb.cells.remove(cell)
        elif op == "duplicate":
            at = nb.cells.index(cell)
            for n in range(edit.get("times", 1)):
                twin = copy.deepcopy(cell)
                twin["id"] = f"{cell.get('id', 'cell')}-twin{n}"
                nb.cells.insert(at + 1, twin)
        elif op == "set_source":
            cell.source = edit["source"]
        elif op == "retype":
            cell.cell_type = edit["cell_type"]
            if cell.cell_type != "code":
                cell.pop("outputs", None)
                cell.pop("execution_count", None)
        elif op == "set_metadata":
            _merge(cell.metadata, edit["metadata"])
        elif op == "set_outputs":
            cell.cell_type = "code"
            cell["outputs"] = [nbformat.from_dict(o) for o in edit["outputs"]]
            cell["execution_count"] = 1


def build(lab: Any, entry: dict[str, Any], canary_port: int) -> dict[str, Any]:
    """The submitted notebook as JSON (written as is: the hostile parts need not validate)."""
    from ladderlab.grading.selftest import released, with_cells

    def fill(code: str) -> str:
        return code.replace("@CANARY_PORT@", str(canary_port))

    nb = with_cells(lab, {}) if entry["base"] == "solution" else released(lab)
    for cell in nb.cells:
        gid = nbg(cell).get("grade_id")
        if gid in entry.get("cells", {}):
            cell.source = fill(entry["cells"][gid])
    for code in entry.get("append", []):
        nb.cells.append(new_code_cell(fill(code)))
    for edit in entry.get("notebook_edits", []):
        apply_edit(nb, edit)
    return json.loads(json.dumps(nb))


# --- the machine ---------------------------------------------------------------------------------------


class Canary:
    """A host service on every address of the grading host: it counts who connects."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("0.0.0.0", 0))  # noqa: S104 - the point: a service a lab network could reach
        self.sock.listen(16)
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.peers: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.peers.append(peer[0])
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


def _chains() -> dict[str, str]:
    """The host firewall's ladderlab chains as iptables prints them (IPv4; IPv6 when the host has it)."""
    out = {}
    for tool in ("iptables", "ip6tables"):
        if shutil.which(tool) is None:
            continue
        for table, chain in (("filter", "LADDERLAB-INPUT"), ("raw", "LADDERLAB-PREROUTING")):
            r = subprocess.run([tool, "-w", "-t", table, "-S", chain], capture_output=True, text=True)
            out[f"{tool} {table} {chain}"] = r.stdout if r.returncode == 0 else f"missing: {r.stderr.strip()}"
        r = subprocess.run([tool, "-w", "-S", "INPUT"], capture_output=True, text=True)
        out[f"{tool} INPUT jump"] = str([line for line in r.stdout.splitlines() if "LADDERLAB" in line])
    return out


def _uid_processes(uid: int) -> set[int]:
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    pids.add(int(entry.name))
            except OSError:
                continue
    return pids


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""


def _docker_free(client: Any) -> int:
    root = client.info().get("DockerRootDir") or "/var/lib/docker"
    return shutil.disk_usage(root).free


@dataclasses.dataclass
class Home:
    settings: Settings
    paths: Any
    canary: Canary
    chains: dict[str, str]
    containers: set[str]
    sandbox_pids: set[int]
    keys: dict[str, str]
    course_keys: dict[str, str]
    secrets: list[str]
    learners: list[str]  # every learner handed in so far
    recorded: list[str]  # those whose grading was recorded (graded)


@pytest.fixture(scope="module")
def home(tmp_path_factory, settings, images, client) -> Iterator[Home]:
    """A private cache and workspace for the module's gradings, and the machine as it was before."""
    from ladderlab.service.paths import ServicePaths

    tmp = tmp_path_factory.mktemp("tamper-corpus")
    cache, workspace = tmp / "cache", tmp / "workspace"
    private_cache(settings, cache)  # the course's seed and signing keys, so seeds are the course's
    real_keys = settings.cache_dir / "keys"
    mp = pytest.MonkeyPatch()
    # nbgrader's steps (LadderlabExecute, RecordEvidence) find the cache from the environment, as in production
    mp.setenv("LADDERLAB_CACHE_DIR", str(cache))
    mp.setenv("LADDERLAB_WORKSPACE", str(workspace))
    for name in ("LADDERLAB_LADDER_URL", "LADDERLAB_QUEUE_URL", "LADDERLAB_LEARNER"):
        mp.delenv(name, raising=False)
    mine = Settings.from_env(settings.root)
    assert mine.cache_dir == cache.resolve()
    course_keys = {p.name: _digest(p) for p in sorted(real_keys.glob("course-*"))} if real_keys.is_dir() else {}
    secrets = [line for p in real_keys.glob("course-*") for line in p.read_text(errors="replace").splitlines()
               if len(line) >= 16 and "-----" not in line] if real_keys.is_dir() else []
    canary = Canary()
    try:
        yield Home(mine, ServicePaths.of(mine, workspace), canary, _chains(),
                   {c["Id"] for c in client.api.containers(all=True)}, _uid_processes(SANDBOX_UID),
                   {p.name: _digest(p) for p in (cache / "keys").iterdir()}, course_keys, secrets, [], [])
    finally:
        canary.close()
        mp.undo()


def _labs(settings: Settings) -> dict[str, Any]:
    from ladderlab.course import load_course
    from ladderlab.course.labs import load_lab
    from ladderlab.grading.checks import load_graders

    course = load_course(settings.course_file)
    registry = load_graders(settings.root)
    return {lab_id: load_lab(settings, course, lab_id, registry=registry)
            for lab_id in {load_entry(n)["lab"] for n in ENTRIES}}


@pytest.fixture(scope="module")
def labs(home) -> dict[str, Any]:
    return _labs(home.settings)


def hand_in(home: Home, lab: Any, notebook: dict[str, Any], learner: str, cell_timeout: int | None = None) -> Any:
    """Hand ``notebook`` in and wait for its grading; ``cell_timeout``: the grading's per-cell limit lowered to
    that many seconds, as an operator lowers it (``LADDERLAB_MAX_CELL_TIMEOUT``)."""
    from ladderlab.service.handin import submit

    path = home.paths.base.parent / "handin" / learner / f"{lab.id}.ipynb"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(notebook))
    home.learners.append(learner)
    with pytest.MonkeyPatch.context() as mp:
        settings = home.settings
        if cell_timeout is not None:
            mp.setenv("LADDERLAB_MAX_CELL_TIMEOUT", str(cell_timeout))
            settings = Settings.from_env(home.settings.root)
            assert settings == dataclasses.replace(home.settings, max_cell_timeout=float(cell_timeout))
        sub = submit(settings, lab.id, path, learner, paths=home.paths, timeout=1200)
    if sub.status == "graded":
        home.recorded.append(learner)
    return sub


# --- what was recorded ---------------------------------------------------------------------------------


def assert_recorded(home: Home, lab: Any, learner: str, sub: Any, failed: set[str]) -> None:
    from nbgrader.api import Gradebook

    from ladderlab.ladder.store import Store

    points = {c.id: c.spec.points for c in lab.checks}
    want = {c.id: (0.0 if c.id in failed else points[c.id]) for c in lab.checks}
    score = sum(want.values())
    log = Path(sub.log).read_text() if sub.log else ""
    assert sub.status == "graded", f"{sub.status}: {sub.error}\n{log[-3000:]}"
    got = {c["id"]: c["status"] for c in sub.checks}
    assert got == {c: ("failed" if c in failed else "passed") for c in points}, f"{got}\n{log[-3000:]}"
    assert (sub.score, sub.max_score) == (score, lab.max_score)
    assert {c["id"]: c["points"] for c in sub.checks} == want

    # nbgrader's gradebook: one submission, one grade per check cell of the lab, nothing else
    with Gradebook(f"sqlite:///{home.paths.course_root / 'gradebook.db'}") as gb:
        student = gb.find_student(learner)
        assert [s.assignment.name for s in student.submissions] == [lab.id]
        submission = gb.find_submission(lab.id, learner)
        assert (submission.score, submission.max_score) == (score, lab.max_score)
        assert [n.name for n in submission.notebooks] == [lab.id]
        grades = {g.name: (g.auto_score, g.manual_score, g.max_score, g.extra_credit)
                  for g in submission.notebooks[0].grades}
        assert grades == {c.grade_id: (want[c.id], None, points[c.id], None) for c in lab.checks}, grades
        assert sorted(s.id for s in gb.students) == sorted(set(home.learners))

    # the evidence record: exactly one entry for this learner, with this score; the chain still verifies
    store = Store.open(home.settings)
    entries = store.entries(learner=learner)
    assert len(entries) == 1, entries
    evidence = entries[0].evidence
    assert (evidence.lab, evidence.score, evidence.max_score) == (lab.id, score, lab.max_score)
    assert {c.id: c.points for c in evidence.checks} == want
    assert evidence.passed == (score >= lab.threshold * lab.max_score - 1e-9)
    everyone = [e.evidence.learner for e in store.entries()]  # one entry per recorded grading, nothing else
    assert sorted(everyone) == sorted(home.recorded)
    assert store.verify().ok


def graded_text(home: Home, lab: Any, learner: str) -> str:
    """Everything the graded notebook that nbgrader keeps (``autograded/``) shows of its cells' outputs."""
    path = home.paths.course_root / "autograded" / learner / lab.id / f"{lab.id}.ipynb"
    nb = json.loads(path.read_text())
    parts = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            text = out.get("text", "")
            parts.append("".join(text) if isinstance(text, list) else str(text))
            plain = out.get("data", {}).get("text/plain", "")
            parts.append("".join(plain) if isinstance(plain, list) else str(plain))
            parts += [str(out.get("evalue", ""))] + [str(t) for t in out.get("traceback", [])]
    return "\n".join(parts)


def assert_machine_unharmed(home: Home, client: Any, learner: str, checks: set[str], disk_before: int) -> None:
    flt = {"label": [f"{L.LEARNER}={learner}"]}
    deadline = time.monotonic() + 90  # the service's teardown is detached: wait for it
    while True:
        left = (client.api.containers(all=True, filters=flt) + client.api.networks(filters=flt)
                + (client.api.volumes(filters=flt).get("Volumes") or []))
        strangers = {c["Id"] for c in client.api.containers(all=True)} - home.containers
        if (not left and not strangers) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert not left, f"left behind: {[x.get('Name') or x.get('Names') for x in left]}"
    assert not strangers, f"containers that were not there before: {strangers}"
    assert client.ping()
    assert _chains() == home.chains, "the host firewall's ladderlab chains changed"
    assert not home.canary.peers, f"a host service saw connections from {home.canary.peers}"
    real = home.settings.root / ".cache" / "keys"
    if home.course_keys:
        assert {p.name: _digest(p) for p in sorted(real.glob("course-*"))} == home.course_keys
    mine = {p.name: _digest(p) for p in (home.settings.cache_dir / "keys").iterdir()}
    assert {k: v for k, v in mine.items() if not k.startswith("ladder-head-")} == \
        {k: v for k, v in home.keys.items() if not k.startswith("ladder-head-")}
    deadline = time.monotonic() + 30
    while (extra := _uid_processes(SANDBOX_UID) - home.sandbox_pids) and time.monotonic() < deadline:
        time.sleep(1)
    assert not extra, f"processes of the sandbox's uid still run on the host: {sorted(extra)[:20]}"
    if "host-disk-kept" in checks:
        assert _docker_free(client) > disk_before - DISK_SLACK, "the host's disk did not get its space back"


# --- the corpus, through the real hand-in path ---------------------------------------------------------


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize("name", ENTRIES)
def test_a_malicious_submission_scores_what_it_earned_and_nothing_else(name, home, labs, client):
    entry = load_entry(name)
    lab = labs[entry["lab"]]
    learner = f"tamper-{name[:40]}-{uuid.uuid4().hex[:6]}"
    notebook = build(lab, entry, home.canary.port)
    disk_before = _docker_free(client)

    sub = hand_in(home, lab, notebook, learner, entry.get("cell_timeout"))

    expect = entry["expect"]
    failed = {c.id for c in lab.checks} if expect["failed"] == "all" else set(expect["failed"])
    assert_recorded(home, lab, learner, sub, failed)
    shown = graded_text(home, lab, learner)
    for text in expect.get("outputs", []):
        assert text in shown, f"{text!r} not in the graded notebook's outputs:\n{shown[-3000:]}"
    for secret in home.secrets:
        assert secret not in shown, "key material in the graded notebook"
    log = Path(sub.log).read_text()
    for text in expect.get("log", []):
        assert text in log, f"{text!r} not in the grading's log:\n{log[-3000:]}"
    assert_machine_unharmed(home, client, learner, set(entry.get("machine", [])), disk_before)


@pytest.mark.docker
@pytest.mark.slow
def test_after_the_corpus_an_honest_submission_grades_normally(home, labs, client):
    from ladderlab.grading.selftest import with_cells

    lab = labs["sec-1-iptables-hardening"]
    learner = f"honest-{uuid.uuid4().hex[:6]}"
    sub = hand_in(home, lab, json.loads(json.dumps(with_cells(lab, {}))), learner)
    assert_recorded(home, lab, learner, sub, failed=set())
    assert sub.passed
    assert_machine_unharmed(home, client, learner, set(), _docker_free(client))
