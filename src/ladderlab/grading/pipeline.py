"""Grading one notebook: fresh environment -> sandbox -> trusted checks -> teardown.

>>> report, graded = grade(settings, client, lab, notebook, "ada")     # doctest: +SKIP
>>> report.to_json()["score"]                                          # doctest: +SKIP

Trust rules (DESIGN.md, "Trust boundaries"):

* check cells come from the instructor's source, matched by ``grade_id``; a
  check cell the learner deleted is put back, a cell claiming to be a grade
  cell that the source does not have loses that claim;
* learner cells run in the sandbox, which never sees a check cell;
* only outputs of learner cells come back from the sandbox, sanitised (plain
  text and images; no HTML or scripts that a trainer's browser would run);
* every check is evaluated here, against the live environment, and its
  verdict is written as the check cell's output, in the form nbgrader scores
  (an error output for a failure, the points as the result otherwise).
"""

from __future__ import annotations

import copy
import hashlib
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import docker
import nbformat
from nbformat import NotebookNode
from nbformat.v4 import new_output

from ladderlab.config import Settings
from ladderlab.environments import runtime
from ladderlab.environments.images import tool_image
from ladderlab.grading.checks import Verdict, evaluate, render_args
from ladderlab.grading.context import LiveContext
from ladderlab.grading.sandbox import PROBE_ROLES, Sandbox, SandboxOutcome, connection_for
from ladderlab.lab import FAIL, PASS
from ladderlab.labs import AnswerSpec, Check, LabDef, is_check_cell, load_lab, nbg

Say = Callable[[str], None]
KEEP_MIME = ("text/plain", "image/png", "image/jpeg")
OUTPUT_TEXT_LIMIT = 64 * 1024


def _quiet(_: str) -> None:
    return None


@dataclass
class CheckOutcome:
    id: str
    points: float
    max_points: float
    passed: bool
    feedback: str

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "points": self.points, "max_points": self.max_points, "passed": self.passed,
                "feedback": self.feedback}


@dataclass
class GradeReport:
    lab: str
    student: str
    score: float
    max_score: float
    passed: bool
    checks: list[CheckOutcome]
    env_id: str = ""
    seed: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    threshold: float = 0.0
    submission_hash: str = ""
    image_digests: dict[str, str] = field(default_factory=dict)
    check_suite_hash: str = ""

    def to_json(self) -> dict[str, Any]:
        """The documented, stable form (see README, "ladderlab grade")."""
        return {"lab": self.lab, "student": self.student, "score": self.score, "max_score": self.max_score,
                "passed": self.passed, "checks": [c.to_json() for c in self.checks]}

    def failed(self) -> list[str]:
        return [c.id for c in self.checks if not c.passed]


# --- what a grading was made of (for the evidence record) ----------------------------------------


def submission_hash(nb: NotebookNode) -> str:
    """sha256 of the submitted notebook as nbformat serialises it (stable key order)."""
    return hashlib.sha256(nbformat.writes(nb).encode()).hexdigest()


def image_digests(client: docker.DockerClient, env: runtime.Environment) -> dict[str, str]:
    """The image id each host ran (content-addressed), by host name."""
    out = {}
    for name, info in env.record.hosts.items():
        try:
            out[name] = str(client.images.get(info.image).id)
        except docker.errors.DockerException:
            out[name] = info.image
    return out


# --- preparing the notebook -----------------------------------------------------------------------


def prepare(lab: LabDef, submitted: NotebookNode) -> NotebookNode:
    """The notebook as it will be graded: trusted check cells, learner cells as the learner left them."""
    nb = copy.deepcopy(submitted)
    checks = lab.check_by_grade_id()
    source_meta = {str(nbg(c)["grade_id"]): c for c in lab.source.cells if nbg(c).get("grade_id")}
    placed: set[str] = set()
    cells = []
    for cell in nb.cells:
        gid = nbg(cell).get("grade_id")
        if isinstance(gid, str) and gid in checks and gid not in placed:
            trusted = lab.source_cell(gid)
            checksum = nbg(cell).get("checksum")  # nbgrader's own (restored from its gradebook), kept as is
            if isinstance(checksum, str):
                trusted["metadata"]["nbgrader"]["checksum"] = checksum
            cells.append(trusted)
            placed.add(gid)
            continue
        cell.setdefault("metadata", {})
        if isinstance(gid, str) and gid in source_meta and gid not in checks and gid not in placed:
            # A learner's answer cell: keep its code, restore what the instructor set about it.
            cell["metadata"]["nbgrader"] = copy.deepcopy(source_meta[gid]["metadata"]["nbgrader"])
            placed.add(gid)
        else:
            cell["metadata"].pop("nbgrader", None)
        cells.append(cell)
    for check in lab.checks:  # deleted (or renamed) check cells come back, at the end
        if check.grade_id not in placed:
            cells.append(lab.source_cell(check.grade_id))
    nb.cells = cells
    for cell in nb.cells:
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    return nb


def learner_part(nb: NotebookNode) -> tuple[NotebookNode, list[int]]:
    """The notebook the sandbox gets (no check cell at all) and where its cells sit in ``nb``."""
    out = copy.deepcopy(nb)
    keep = [i for i, c in enumerate(nb.cells) if not is_check_cell(c)]
    out.cells = [out.cells[i] for i in keep]
    return out, keep


def _text(value: Any) -> str:
    text = "".join(value) if isinstance(value, list) else str(value)
    return text if len(text) <= OUTPUT_TEXT_LIMIT else text[:OUTPUT_TEXT_LIMIT] + "\n[output truncated]\n"


def sanitize_outputs(outputs: Any) -> list[NotebookNode]:
    """Only inert output kinds, size-limited; anything malformed is dropped."""
    clean: list[NotebookNode] = []
    if not isinstance(outputs, list):
        return clean
    for out in outputs[:200]:
        if not isinstance(out, dict):
            continue
        kind = out.get("output_type")
        if kind == "stream" and out.get("name") in ("stdout", "stderr"):
            clean.append(new_output("stream", name=out["name"], text=_text(out.get("text", ""))))
        elif kind in ("execute_result", "display_data") and isinstance(out.get("data"), dict):
            data = {k: _text(v) for k, v in out["data"].items() if k in KEEP_MIME and isinstance(v, str | list)}
            if data:
                extra = {"execution_count": None} if kind == "execute_result" else {}
                clean.append(new_output(kind, data=data, **extra))
        elif kind == "error":
            tb = out.get("traceback")
            tb = [_text(t)[:4000] for t in tb[:100] if isinstance(t, str)] if isinstance(tb, list) else []
            clean.append(new_output("error", ename=_text(out.get("ename", ""))[:200],
                                    evalue=_text(out.get("evalue", ""))[:2000], traceback=tb))
    return clean


def merge_outputs(nb: NotebookNode, positions: list[int], executed: NotebookNode | None) -> None:
    """Copy outputs of learner cells back from the sandbox's notebook, by position, and nothing else."""
    if executed is None or not isinstance(getattr(executed, "cells", None), list):
        return
    if len(executed.cells) != len(positions):
        return
    for pos, cell in zip(positions, executed.cells, strict=True):
        target = nb.cells[pos]
        if target.get("cell_type") != "code" or not isinstance(cell, dict):
            continue
        target["outputs"] = sanitize_outputs(cell.get("outputs"))
        count = cell.get("execution_count")
        target["execution_count"] = count if isinstance(count, int) and not isinstance(count, bool) else None


def clean_answers(raw: Mapping[str, Any], declared: Mapping[str, AnswerSpec]) -> dict[str, Any]:
    """Only the answers the lab declares, each of its declared type; the rest is dropped."""
    out: dict[str, Any] = {}
    for name, spec in declared.items():
        value = raw.get(name)
        if isinstance(value, bool):
            continue
        if (spec.type == "int" and isinstance(value, int)) \
                or (spec.type == "text" and isinstance(value, str) and len(value) <= spec.max_length) \
                or (spec.type == "choice" and isinstance(value, str) and value in spec.choices):
            out[name] = value
    return out


# --- judging --------------------------------------------------------------------------------------


def judge(ctx: Any, lab: LabDef, params: Mapping[str, str | int], only: list[str] | None = None,
          workers: int = 8) -> list[tuple[Check, Verdict]]:
    """Evaluate the lab's checks (in parallel: each only observes)."""
    checks = [c for c in lab.checks if not only or c.id in only]

    def one(check: Check) -> tuple[Check, Verdict]:
        return check, evaluate(ctx, check.fn, render_args(check.spec.args, params))

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(checks)))) as pool:
        return list(pool.map(one, checks))


def outcome(check: Check, verdict: Verdict) -> CheckOutcome:
    """Points from a verdict (``evaluate`` already gave failed all-or-nothing verdicts a fraction of 0)."""
    return CheckOutcome(check.id, round(check.spec.points * verdict.fraction, 3), check.spec.points,
                        verdict.passed, verdict.feedback)


def write_verdict(cell: NotebookNode, result: CheckOutcome) -> None:
    """The check cell's outputs, in the form nbgrader's ``determine_grade`` reads."""
    line = f"{PASS if result.passed else FAIL} {result.id}: {result.feedback}\n"
    cell["execution_count"] = None
    if result.passed or result.points > 0:
        cell["outputs"] = [new_output("stream", name="stdout", text=line),
                           new_output("execute_result", data={"text/plain": f"{result.points:g}"},
                                      execution_count=None)]
    else:
        cell["outputs"] = [new_output("error", ename="CheckFailed", evalue=result.feedback,
                                      traceback=[f"CheckFailed: {result.feedback}"])]


def grade(settings: Settings, client: docker.DockerClient, lab: LabDef, submitted: NotebookNode, student: str,
          *, say: Say = _quiet, detach_teardown: bool = False) -> tuple[GradeReport, NotebookNode]:
    """Grade one submitted notebook against a fresh environment with the student's seed.

    The environment is torn down in ``finally`` whatever happened. With ``detach_teardown``
    (bulk grading: nbgrader) the teardown starts there but runs on a non-daemon thread, so the
    next notebook's work overlaps it; the process cannot exit before it is done.
    """
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    nb = prepare(lab, submitted)
    sandbox_nb, positions = learner_part(nb)
    probe = tool_image(settings, client, "probe")
    box = Sandbox(settings, client, lab.spec.sandbox)
    say(f"{lab.id}/{student}: starting a fresh {lab.environment} environment and the sandbox")
    problems: list[str] = []
    env = None
    try:
        # The sandbox starts first, once the networks exist: its kernel start-up is the critical path
        # and overlaps the hosts' (container starts serialise in the engine).
        env = runtime.up(settings, lab.environment, client=client, learner=student, lab=lab.id,
                         course_id=lab.course.id, reuse=False, lockout_roles=PROBE_ROLES,
                         on_networks=lambda record: box.create(record, sandbox_nb))
        timings["env_up"] = time.monotonic() - t0
        images = image_digests(client, env)
        say(f"{lab.id}/{student}: running the notebook in the sandbox ({env.id})")
        box.go(connection_for(settings, env, lab.id))
        ctx = LiveContext(env, probe)
        with ThreadPoolExecutor(max_workers=1) as warmer:
            warming = warmer.submit(ctx.warm)  # observers start while the notebook runs
            run: SandboxOutcome = box.finish(remove=False)
            warming.result()
        timings["sandbox"] = time.monotonic() - t0 - timings["env_up"]
        problems += run.problems
        merge_outputs(nb, positions, run.notebook)
        answers = clean_answers(run.answers, lab.spec.answers)
        say(f"{lab.id}/{student}: checking the environment")
        t1 = time.monotonic()
        ctx.set_answers(answers)
        verdicts = judge(ctx, lab, env.params)
        timings["checks"] = time.monotonic() - t1
    finally:
        t2 = time.monotonic()
        if env is not None:
            # env.down removes the sandbox and observers too: they carry the environment's labels.
            if detach_teardown:
                threading.Thread(target=env.down, name=f"teardown-{env.id}", daemon=False).start()
            else:
                env.down()
        else:
            box.remove()
        timings["env_down"] = time.monotonic() - t2
    by_grade_id = {c.grade_id: (c, v) for c, v in verdicts}
    for cell in nb.cells:
        gid = nbg(cell).get("grade_id")
        if is_check_cell(cell) and gid in by_grade_id:
            result = outcome(*by_grade_id[gid])
            write_verdict(cell, result)
    results = [outcome(c, v) for c, v in verdicts]
    score = round(sum(r.points for r in results), 3)
    report = GradeReport(lab.id, student, score, lab.max_score, score >= lab.threshold * lab.max_score - 1e-9,
                         results, env.id, env.record.seed, timings, problems, threshold=lab.threshold,
                         submission_hash=submission_hash(submitted), image_digests=images,
                         check_suite_hash=lab.suite_hash())
    timings["total"] = time.monotonic() - t0
    return report, nb


def live_feedback(settings: Settings, env: runtime.Environment, lab_id: str, only: list[str],
                  answers: Mapping[str, Any]) -> list[tuple[bool, str, str]]:
    """Formative feedback in the learner's own environment (``lab.check``): (passed, id, line) per check."""
    from ladderlab.course import load_course

    course = load_course(settings.course_file, "course.yaml")
    lab = load_lab(settings, course, lab_id)
    visible = [c.id for c in lab.checks if not c.hidden]
    unknown = [c for c in only if c not in visible]
    if unknown:
        raise ValueError(f"no visible check {', '.join(unknown)} in this lab (checks you can run: "
                         f"{', '.join(visible)}; the others are run by the grader)")
    ctx = LiveContext(env, tool_image(settings, env.client, "probe"), clean_answers(answers, lab.spec.answers))
    try:
        return [(v.passed, c.id, v.feedback) for c, v in judge(ctx, lab, env.params, only or visible)]
    finally:
        ctx.close()
