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

import contextlib
import copy
import hashlib
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

import docker
from nbformat import NotebookNode
from nbformat.v4 import new_notebook, new_output

from ladderlab.config import Settings
from ladderlab.course.labs import AnswerSpec, Check, LabDef, is_check_cell, nbg
from ladderlab.environments import runtime
from ladderlab.environments.images import tool_image
from ladderlab.environments.watchdog import DiskWatch
from ladderlab.errors import LadderlabError
from ladderlab.grading import marks, sanitize
from ladderlab.grading.checks import ERROR as ERROR_VERDICT
from ladderlab.grading.checks import FAILED, PASSED, Verdict, evaluate, fail, is_disruptive, one_line, render_args
from ladderlab.grading.checks import error as error_verdict
from ladderlab.grading.context import LiveContext
from ladderlab.grading.sandbox import PROBE_ROLES, Sandbox, SandboxOutcome, connection_for

Say = Callable[[str], None]
KEEP_MIME = ("text/plain", "image/png", "image/jpeg")
OUTPUT_TEXT_LIMIT = 64 * 1024


def _quiet(_: str) -> None:
    return None


GRADED, ERROR = "graded", "error"


@dataclass
class CheckOutcome:
    id: str
    points: float
    max_points: float
    passed: bool
    feedback: str
    status: str = ""  # passed | failed | error

    def __post_init__(self) -> None:
        self.status = self.status or (PASSED if self.passed else FAILED)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "points": self.points, "max_points": self.max_points,
                "passed": self.passed, "feedback": self.feedback}


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
    status: str = GRADED  # graded | error (the grader could not judge: nothing may be recorded)
    error: str = ""  # one line: why the grading is incomplete

    def to_json(self) -> dict[str, Any]:
        """The documented, stable form (see README, "ladderlab grade")."""
        return {"lab": self.lab, "student": self.student, "status": self.status, "error": self.error,
                "score": self.score, "max_score": self.max_score, "passed": self.passed,
                "checks": [c.to_json() for c in self.checks]}

    @property
    def complete(self) -> bool:
        return self.status == GRADED

    def failed(self) -> list[str]:
        return [c.id for c in self.checks if not c.passed]


# --- what a grading was made of (for the evidence record) ----------------------------------------


def submission_hash(lab: LabDef, nb: NotebookNode) -> str:
    """The identity of a submission: sha256 over the cells the learner authored, in order.

    Computed from the notebook as ``prepare`` makes it (check cells are the instructor's, learner
    cells keep their source) and only over cells that are not the instructor's (check cells and
    locked instructor cells left out), each as (cell type, source). The same submission gives the
    same digest whether it is read from nbgrader's ``submitted/`` file (``ladder rebuild``) or
    handed to the Execute step after nbgrader's own preprocessors (outputs cleared, locked cells
    restored): evidence is appended once per submission.
    """
    return prepared_digest(prepare(lab, nb))


def prepared_digest(prepared: NotebookNode) -> str:
    """:func:`submission_hash` of a notebook ``prepare`` already made (``prepare`` is idempotent)."""
    h = hashlib.sha256(b"ladderlab-submission-v2\0")
    for cell in prepared.cells:
        meta = nbg(cell)
        if is_check_cell(cell) or (meta.get("locked") and not meta.get("solution")):
            continue
        source = cell.get("source", "")
        text = "".join(source) if isinstance(source, list) else str(source)
        h.update(f"{cell.get('cell_type', '')}\0{len(text)}\0".encode() + text.encode("utf-8", "surrogatepass"))
    return h.hexdigest()


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
    """The notebook as it will be graded, saved and shown: rebuilt from the submission, never copied.

    * every cell the instructor wrote that is not an answer cell (checks, locked instructions and
      code) is the instructor's own cell from ``lab.source``, whatever the submission holds there;
      check cells the learner deleted come back at the end;
    * an answer cell (the instructor's ``solution`` cells, matched by ``grade_id``, first match
      only) keeps the learner's source, with the instructor's cell type and nbgrader metadata;
    * every other cell is the learner's, rebuilt from its source alone: no nbgrader metadata (so no
      claim to a grade, a lock or an old schema reaches nbgrader), no other metadata, no outputs;
      markdown sanitised and raw cells turned into text (``sanitize``), so nothing a learner wrote
      can run in the browser of whoever opens the result;
    * the notebook's metadata is the instructor's.

    Idempotent: nbgrader's autograde runs it first on the submitted file (``LadderlabSanitize``)
    and the Execute step runs it again.
    """
    checks = lab.check_by_grade_id()
    instructor = {str(nbg(c)["grade_id"]): c for c in lab.source.cells if isinstance(nbg(c).get("grade_id"), str)}
    placed: set[str] = set()
    cells: list[NotebookNode] = []
    for raw in sanitize.cells_of(submitted):
        meta = raw.get("metadata")
        claimed = meta.get("nbgrader") if isinstance(meta, Mapping) else None
        claim = claimed if isinstance(claimed, Mapping) else {}
        gid = claim.get("grade_id")
        own = instructor.get(gid) if isinstance(gid, str) and gid not in placed else None
        cell: NotebookNode | None
        if own is None or not isinstance(gid, str):
            cell = sanitize.learner_cell(raw)
        elif nbg(own).get("solution") and gid not in checks:
            cell = sanitize.learner_cell(raw, own["cell_type"])
            if cell is not None:
                cell["metadata"]["nbgrader"] = copy.deepcopy(nbg(own))
                placed.add(gid)
        else:
            cell = lab.source_cell(gid)
            checksum = claim.get("checksum")
            if isinstance(checksum, str) and re.fullmatch(r"[0-9a-f]{1,128}", checksum):
                cell["metadata"]["nbgrader"]["checksum"] = checksum  # nbgrader's own, from its gradebook
            placed.add(gid)
        if cell is not None:
            cells.append(cell)
    for check in lab.checks:  # deleted (or renamed) check cells come back, at the end
        if check.grade_id not in placed:
            cells.append(lab.source_cell(check.grade_id))
    for cell in cells:
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    sanitize.unique_ids(cells)
    prepared: NotebookNode = new_notebook(cells=cells, metadata=copy.deepcopy(lab.source.metadata))
    return prepared


def learner_part(nb: NotebookNode) -> tuple[NotebookNode, list[int]]:
    """The notebook the sandbox gets (no check cell at all) and where its cells sit in ``nb``."""
    out = copy.deepcopy(nb)
    keep = [i for i, c in enumerate(nb.cells) if not is_check_cell(c)]
    out.cells = [out.cells[i] for i in keep]
    return out, keep


def _text(value: Any) -> str:
    """Output text as one bounded string (a string, or a list of strings as nbformat allows; else empty)."""
    text = "".join(v for v in value if isinstance(v, str)) if isinstance(value, list) else \
        value if isinstance(value, str) else ""
    return text if len(text) <= OUTPUT_TEXT_LIMIT else text[:OUTPUT_TEXT_LIMIT] + "\n[output truncated]\n"


def sanitize_outputs(outputs: Any) -> list[NotebookNode]:
    """Only inert output kinds, size-limited; anything malformed is dropped.

    Text stays text (nbconvert escapes it); an image is kept only when its data decodes to an image
    of its type (``sanitize.image_data``), never as a string that would land in an HTML attribute.
    """
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
            bundle = out["data"]
            text = bundle.get("text/plain")
            data = {"text/plain": _text(text)} if isinstance(text, list | str) else {}
            data.update({k: image for k in KEEP_MIME if k != "text/plain"
                         and (image := sanitize.image_data(k, bundle.get(k))) is not None})
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


#: The longest any check may take (each bounds its own probes; this is the backstop for a check that hangs).
CHECK_DEADLINE = 180.0


def judge(ctx: Any, lab: LabDef, params: Mapping[str, str | int], only: list[str] | None = None,
          workers: int = 8, deadline: float = CHECK_DEADLINE) -> list[tuple[Check, Verdict]]:
    """Evaluate the lab's checks, each within its ``deadline:`` in lab.yaml (else ``deadline`` seconds): those
    that only observe in parallel, then the disruptive ones (``@check(disruptive=True)``: they act on the
    environment) alone, one after another, so that every observation is of the environment as the learner
    left it.

    A check still running at its deadline is an ``error`` verdict (a check must bound its own waits);
    its thread is left behind, and the environment's teardown ends whatever it was waiting on.
    """
    checks = [c for c in lab.checks if not only or c.id in only]
    if not checks:
        return []
    calm = [c for c in checks if not is_disruptive(c.fn)]
    found: dict[str, Verdict] = {}
    pool = ThreadPoolExecutor(max_workers=max(1, min(workers, len(checks))), thread_name_prefix="check")
    try:
        futures = [pool.submit(evaluate, ctx, c.fn, render_args(c.spec.args, params)) for c in calm]
        t0 = time.monotonic()
        for check, future in zip(calm, futures, strict=True):
            limit = check.spec.deadline or deadline
            found[check.id] = _result(future, t0 + limit, limit)
        for check in (c for c in checks if is_disruptive(c.fn)):
            future = pool.submit(_acting, ctx, check, params)
            limit = check.spec.deadline or deadline
            found[check.id] = _result(future, time.monotonic() + limit, limit)
        return [(c, found[c.id]) for c in checks]
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _acting(ctx: Any, check: Check, params: Mapping[str, str | int]) -> Verdict:
    acting = getattr(ctx, "acting", None)
    with acting() if acting is not None else contextlib.nullcontext():
        return evaluate(ctx, check.fn, render_args(check.spec.args, params))


def _result(future: Future[Verdict], end: float, deadline: float) -> Verdict:
    try:
        return future.result(timeout=max(0.0, end - time.monotonic()))
    except FutureTimeout:
        return error_verdict(f"the check ran past its deadline of {deadline:g}s")


def outcome(check: Check, verdict: Verdict) -> CheckOutcome:
    """Points from a verdict (``evaluate`` already gave failed all-or-nothing verdicts a fraction of 0)."""
    return CheckOutcome(check.id, round(check.spec.points * verdict.fraction, 3), check.spec.points,
                        verdict.passed, verdict.feedback, verdict.status)


# --- faults: the grader's, or the learner's -------------------------------------------------------


@dataclass
class HostState:
    """What happened to the lab hosts while a submission was graded."""

    broken_by_learner: dict[str, str] = field(default_factory=dict)  # host -> what the engine saw
    disturbed: dict[str, str] = field(default_factory=dict)  # host -> what was done to it from outside


EXTERNAL_ACTIONS = ("kill", "stop", "pause", "restart", "destroy")


def host_state(client: docker.DockerClient, env: runtime.Environment, since: float,
               learner_kills: Mapping[str, str] | None = None,
               ours: Iterable[tuple[str, str, int, int]] = ()) -> HostState:
    """Tell a host the learner's code broke from one something else stopped.

    The learner is root inside their hosts, but nothing inside a container can call the engine:
    an engine-level kill, stop, pause or restart of a host during grading came from outside
    (an operator, another program, a crash of ours) and is a grading fault. A host that exited on
    its own (its main process killed from inside, out of memory under the learner's load) is the
    learner's doing. ``learner_kills`` names hosts ladderlab itself stopped because of the
    learner's state (a disk quota), with the reason. ``ours`` lists what a disruptive check did to hosts
    through the engine (host, action, start and end in ns: :attr:`LiveContext.actions`): the engine's
    events of a host within such a window are the check's, not a disturbance.
    """
    state = HostState()
    names = {info.container: name for name, info in env.record.hosts.items()}
    external: dict[str, str] = {}
    events = client.api.events(since=int(since) - 1, until=int(time.time()) + 1, decode=True,
                               filters={"type": "container", "container": list(names)})
    for event in events:
        action = str(event.get("Action") or event.get("status") or "")
        who = names.get(str((event.get("Actor") or {}).get("Attributes", {}).get("name", "")))
        when = int(event.get("timeNano") or int(event.get("time") or 0) * 10**9)
        if any(host == who and start <= when <= end for host, _, start, end in ours):
            continue  # a disruptive check's own restart
        if who and action.split(":")[0] in EXTERNAL_ACTIONS:
            external.setdefault(who, action.split(":")[0])
    for container, name in names.items():
        if learner_kills and name in learner_kills:
            state.broken_by_learner[name] = learner_kills[name]
            continue
        if name in external:
            state.disturbed[name] = f"host {name} received an engine-level {external[name]} during grading"
            continue
        info = client.api.inspect_container(container)["State"]
        if info.get("Paused"):
            state.disturbed[name] = f"host {name} was paused during grading"
        elif not info.get("Running"):
            why = "ran out of memory" if info.get("OOMKilled") else f"exited with code {info.get('ExitCode')}"
            state.broken_by_learner[name] = f"host {name} stopped during grading: it {why}"
    return state


def settle(verdicts: list[tuple[Check, Verdict]], hosts: HostState) -> tuple[list[tuple[Check, Verdict]], str]:
    """Final verdicts and the grading's fault line ('' when it is complete).

    Checks that could not observe because the learner broke a host fail, naming the host, and so does
    every check that names a broken host in its arguments even if it passed (a stopped host answers
    nothing, which a probe takes for a closed port); a host disturbed from outside, or any check the
    grader could not judge, leaves the grading incomplete.
    """
    if hosts.disturbed:  # nothing observed after that means anything about the learner's work
        why = "; ".join(sorted(hosts.disturbed.values()))
        return [(c, v if v.passed else error_verdict(one_line(f"the grader could not judge: {why}")))
                for c, v in verdicts], why
    out = []
    broken = "; ".join(sorted(hosts.broken_by_learner.values()))
    for check, verdict in verdicts:
        down = [why for host, why in sorted(hosts.broken_by_learner.items()) if host in _named(check.spec.args)]
        if broken and verdict.status == ERROR_VERDICT:
            verdict = fail(one_line(broken))
        elif broken and verdict.status == FAILED:
            verdict = fail(one_line(f"{broken} ({verdict.feedback})"))
        elif down:  # a host that is down answers nothing: a "closed port" or a "default deny" seen on it means nothing
            verdict = fail(one_line(f"{'; '.join(down)}: nothing observed on it counts"))
        out.append((check, verdict))
    errors = [f"check {c.id}: {v.feedback}" for c, v in out if v.status == ERROR_VERDICT]
    return out, errors[0] if errors else ""


def _named(args: Any) -> set[str]:
    """Every string among a check's arguments (the hosts it observes are named there)."""
    if isinstance(args, str):
        return {args}
    values = args.values() if isinstance(args, Mapping) else args if isinstance(args, list | tuple) else ()
    return {name for value in values for name in _named(value)}


def write_verdict(cell: NotebookNode, result: CheckOutcome) -> None:
    """The check cell's outputs, in the form nbgrader's ``determine_grade`` reads."""
    line = marks.line(result.passed, result.id, result.feedback) + "\n"
    cell["execution_count"] = None
    if result.passed or result.points > 0:
        cell["outputs"] = [new_output("stream", name="stdout", text=line),
                           new_output("execute_result", data={"text/plain": f"{result.points:g}"},
                                      execution_count=None)]
    else:
        cell["outputs"] = [new_output("error", ename="CheckFailed", evalue=result.feedback,
                                      traceback=[f"CheckFailed: {result.feedback}"])]


def grade(settings: Settings, client: docker.DockerClient, lab: LabDef, submitted: NotebookNode, student: str,
          *, say: Say = _quiet, detach_teardown: bool = False,
          prepared: runtime.Environment | None = None) -> tuple[GradeReport, NotebookNode]:
    """Grade one submitted notebook against a fresh environment with the student's seed.

    The environment is torn down in ``finally`` whatever happened. With ``detach_teardown``
    (bulk grading: nbgrader) the teardown starts there but runs on a non-daemon thread, so the
    next notebook's work overlaps it; the process cannot exit before it is done.

    ``prepared``: a grading environment the caller brought up ahead for this student and lab
    (``service.warm``: bound to the grader's process, locked out like any grading environment, never
    handed to anyone) instead of starting one now; it is used once and torn down like any other.
    """
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    nb = prepare(lab, submitted)
    digest = prepared_digest(nb)
    sandbox_nb, positions = learner_part(nb)
    problems: list[str] = []
    env = None
    verdicts: list[tuple[Check, Verdict]] = []
    images: dict[str, str] = {}
    fault = ""
    say(f"{lab.id}/{student}: starting a fresh {lab.environment} environment and the sandbox")
    box: Sandbox | None = None
    watch: DiskWatch | None = None
    try:
        probe = tool_image(settings, client, "probe")
        box = Sandbox(settings, client, lab.spec.sandbox)
        # The sandbox starts first, once the networks exist: its kernel start-up is the critical path
        # and overlaps the hosts' (container starts serialise in the engine).
        sandbox = box
        if prepared is not None:
            if (prepared.record.lab, prepared.record.learner) != (lab.id, student):
                raise LadderlabError(f"environment {prepared.id} was prepared for {prepared.record.learner}'s "
                                     f"{prepared.record.lab}, not {student}'s {lab.id}")
            env = prepared
            say(f"{lab.id}/{student}: using the environment prepared for this hand-in ({env.id})")
            sandbox.create(env.record, sandbox_nb)
        else:
            env = runtime.up(settings, lab.environment, client=client, learner=student, lab=lab.id,
                             course_id=lab.course.id, reuse=False, lockout_roles=PROBE_ROLES,
                             on_networks=lambda record: sandbox.create(record, sandbox_nb), bound=True)
        client = env.client  # cluster mode: the node Swarm placed the environment on
        started = env.record.created
        timings["env_up"] = time.monotonic() - t0
        images = image_digests(client, env)
        say(f"{lab.id}/{student}: running the notebook in the sandbox ({env.id})")
        watch = DiskWatch.for_env(env).start()  # before go: the learner's code runs only after it
        box.go(connection_for(settings, env, lab.id))
        ctx = LiveContext(env, probe)
        with ThreadPoolExecutor(max_workers=1) as warmer:
            warming = warmer.submit(ctx.warm)  # observers start while the notebook runs
            run: SandboxOutcome = box.finish(remove=False)
            warming.result()
        timings["sandbox"] = time.monotonic() - t0 - timings["env_up"]
        problems += run.problems
        try:
            merge_outputs(nb, positions, run.notebook)
        except Exception as exc:  # hostile data that got past the checks of its shape: the learner's
            problems.append(one_line(f"the executed notebook's outputs were dropped: {type(exc).__name__}"))
        answers = clean_answers(run.answers, lab.spec.answers)
        say(f"{lab.id}/{student}: checking the environment")
        t1 = time.monotonic()
        ctx.set_answers(answers)
        verdicts = judge(ctx, lab, env.params)
        watch.stop()
        problems += watch.feedback()
        over = {o.host: o.feedback for o in watch.overruns.values()}
        verdicts, fault = settle(verdicts, host_state(client, env, started, learner_kills=over, ours=ctx.actions))
        timings["checks"] = time.monotonic() - t1
    except Exception as exc:  # infrastructure or our own tools: the grading is incomplete, never a verdict
        fault = one_line(f"{type(exc).__name__}: {exc}") if not isinstance(exc, LadderlabError) else one_line(str(exc))
        for detail in getattr(exc, "__notes__", ()):  # e.g. the last log lines of a host that never got ready
            say(f"{lab.id}/{student}: {detail}")
    finally:
        t2 = time.monotonic()
        if watch is not None:
            _quietly(watch.stop)
        if env is not None:
            # env.down removes the sandbox and observers too: they carry the environment's labels.
            if detach_teardown:
                threading.Thread(target=_down_quietly, args=(env,), name=f"teardown-{env.id}",
                                 daemon=False).start()
            else:
                _down_quietly(env)
        elif box is not None:
            _quietly(box.remove)
        timings["env_down"] = time.monotonic() - t2
    by_grade_id = {c.grade_id: (c, v) for c, v in verdicts}
    for cell in nb.cells:
        gid = nbg(cell).get("grade_id")
        if is_check_cell(cell) and gid in by_grade_id:
            result = outcome(*by_grade_id[gid])
            write_verdict(cell, result)
    results = [outcome(c, v) for c, v in verdicts]
    score = round(sum(r.points for r in results), 3)
    passed = not fault and score >= lab.threshold * lab.max_score - 1e-9
    report = GradeReport(lab.id, student, score, lab.max_score, passed, results, env.id if env else "",
                         env.record.seed if env else "", timings, problems, threshold=lab.threshold,
                         submission_hash=digest, image_digests=images, check_suite_hash=lab.suite_hash(),
                         status=ERROR if fault else GRADED, error=fault)
    if fault:
        say(f"{lab.id}/{student}: grading incomplete: {fault}")
    timings["total"] = time.monotonic() - t0
    return report, nb


def _quietly(action: Callable[[], object]) -> None:
    with contextlib.suppress(Exception):  # best effort: the guardian and the reaper remove what is left
        action()


def _down_quietly(env: runtime.Environment) -> None:
    _quietly(env.down)

