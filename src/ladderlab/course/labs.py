"""Lab definitions: ``labs/<id>/`` holds the nbgrader source notebook, ``lab.yaml``
(the checks behind its check cells, the answers it asks for by name, sandbox
limits), ``decoys/`` (plausible wrong solutions, each naming the checks that
must reject it) and ``solutions/`` (other correct solutions, in other styles).

A *check cell* is an nbgrader test cell (``grade: true``, not a solution) whose
code is exactly one ``lab.check("<check-id>")`` call, optionally inside
``### BEGIN/END HIDDEN TESTS`` markers. Its points must equal the check's.

The checks a lab names are looked up in a *check registry* that the caller
passes in (the grading package's, from ``graders/``): loading a lab never
imports grading (DESIGN.md: data flows from the course downstream).

>>> from ladderlab.grading.checks import load_graders                  # doctest: +SKIP
>>> lab = load_lab(settings, course, "sec-1-iptables-hardening",
...                registry=load_graders(settings.root))                # doctest: +SKIP
>>> [c.id for c in lab.checks]                                          # doctest: +SKIP
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import nbformat
from nbformat import NotebookNode
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from ladderlab.config import Settings
from ladderlab.course import Course
from ladderlab.course import Lab as CourseLab
from ladderlab.course.loading import load_model
from ladderlab.errors import ConfigError, UsageError

#: A check: called as ``fn(ctx, **args)``, returns a verdict (``ladderlab.grading.checks`` says what both are).
CheckFn = Callable[..., Any]
#: The checks a lab may name, ``"<domain>.<function>"`` -> check (``ladderlab.grading.checks.load_graders``).
CheckRegistry = Mapping[str, CheckFn]

CHECK_ID = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"
CheckId = Annotated[str, StringConstraints(pattern=CHECK_ID, max_length=64)]
CHECK_CALL = re.compile(r"""^lab\.check\(\s*(["'])(?P<id>[a-z0-9-]+)\1\s*\)$""")
MARKERS = ("### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")
MAX_NOTEBOOK_BYTES = 4 << 20


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CheckSpec(_Model):
    grader: Annotated[str, StringConstraints(pattern=r"^[a-z_]+\.[a-z_][a-z0-9_]*$")]
    title: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    points: float = Field(gt=0, le=100)
    args: dict[str, Any] = Field(default_factory=dict)
    #: Progressive hints, shown one at a time by ``lab.hint("<check-id>")``; using them is recorded.
    hints: list[Annotated[str, StringConstraints(min_length=1, max_length=1000)]] = Field(default_factory=list,
                                                                                          max_length=5)
    #: Seconds this check may take before it is an error (default: the pipeline's CHECK_DEADLINE, 180 s);
    #: experiments that wait for a failover or a convergence ask for more, up to 15 minutes.
    deadline: float | None = Field(default=None, gt=0, le=900)


RequirementId = Annotated[str, StringConstraints(pattern=CHECK_ID, max_length=64)]


class RequirementSpec(_Model):
    """One requirement the notebook's instructions state, and the checks that judge it."""

    id: RequirementId
    text: Annotated[str, StringConstraints(min_length=1, max_length=300)]
    checks: list[CheckId] = Field(default_factory=list)
    #: False when the requirement cannot be observed from outside the learner's reach: the
    #: instructions must then say it is not graded, and no check may claim it.
    graded: bool = True


class AnswerSpec(_Model):
    type: Literal["text", "int", "choice"] = "text"
    choices: list[str] = Field(default_factory=list)
    max_length: int = Field(default=200, ge=1, le=10_000)
    title: str = ""


class SandboxSpec(_Model):
    """Limits for the runner container that executes a learner's notebook at grading time."""

    timeout: float = Field(default=600, gt=0, le=3600, description="wall time for the whole notebook, seconds")
    cell_timeout: float = Field(default=120, gt=0, le=3600)
    memory: Annotated[str, StringConstraints(pattern=r"^[0-9]+[kmg]$")] = "1g"
    pids: int = Field(default=256, ge=16, le=4096)
    cpus: float = Field(default=1.0, gt=0, le=8)
    output_limit: int = Field(default=2 << 20, ge=1024, le=64 << 20,
                              description="bytes of executed notebook taken back")


class CriterionSpec(_Model):
    """One criterion of a lab's rubric: what a trainer grades the manual cell against, and its points."""

    id: CheckId
    title: Annotated[str, StringConstraints(min_length=1, max_length=300)]
    points: float = Field(gt=0, le=100)


class RubricSpec(_Model):
    """``rubric:``: the lab's manually graded part (one nbgrader manually graded answer cell), graded by a
    trainer in nbgrader's formgrader. The lab demonstrates its ladder cells only when its automatic part
    passes and a manual grade of at least ``pass_points`` is recorded for the same submission
    (``ladderlab cohort record-rubric``)."""

    #: Recorded with every manual grade (``2026-11-1``): a changed rubric gets a new version.
    version: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")]
    #: The nbgrader ``grade_id`` of the manually graded markdown answer cell in the lab's notebook.
    cell: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    #: The manual part passes at this many of the cell's points or more.
    pass_points: float = Field(gt=0, le=1000)
    criteria: list[CriterionSpec] = Field(min_length=1, max_length=12)

    @property
    def max_points(self) -> float:
        return float(sum(c.points for c in self.criteria))


class LabSpec(_Model):
    notebook: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]+\.ipynb$")] | None = None
    checks: dict[CheckId, CheckSpec]
    answers: dict[Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")], AnswerSpec] = \
        Field(default_factory=dict)
    sandbox: SandboxSpec = Field(default_factory=SandboxSpec)
    #: The requirements audit: every requirement the instructions state, each judged by named checks.
    requirements: list[RequirementSpec] = Field(default_factory=list)
    #: The manually graded part, if the lab has one (see :class:`RubricSpec`).
    rubric: RubricSpec | None = None


class DecoySpec(_Model):
    description: Annotated[str, StringConstraints(min_length=1, max_length=2000)]
    must_fail: list[CheckId] = Field(min_length=1)
    #: Checks the violation can also bring down, depending on timing (a broken path that a later check happens
    #: to use); the description says why. The self-test accepts them failing or passing; ``must_fail`` must fail.
    may_fail: list[CheckId] = Field(default_factory=list)
    cells: dict[str, str] = Field(min_length=1, description="solution cell grade_id -> the decoy's code")
    #: The one requirement this decoy gets wrong (the nearest wrong answer to it), from lab.yaml requirements.
    violates: RequirementId | None = None
    #: Only for learners whose seed draws one of these values of a choice parameter (the wrong answer exists
    #: only for some seeded variants: a fault a process can paper over). Empty: every learner.
    when: dict[str, list[str]] = Field(default_factory=dict)

    def applies(self, params: Mapping[str, str | int]) -> bool:
        """Whether a learner with ``params`` gets this decoy (see ``when``)."""
        return all(str(params.get(name)) in values for name, values in self.when.items())


class SolutionSpec(_Model):
    """``solutions/<name>.yaml``: another correct solution (a different style from the source notebook's),
    the source notebook with some solution cells replaced; the self-test grades it to full marks."""

    description: Annotated[str, StringConstraints(min_length=1, max_length=2000)]
    cells: dict[str, str] = Field(min_length=1, description="solution cell grade_id -> the solution's code")


@dataclass(frozen=True)
class Check:
    id: str
    spec: CheckSpec
    fn: CheckFn
    grade_id: str
    #: Hidden checks (inside ``### BEGIN HIDDEN TESTS``) are not run by ``lab.check`` while the learner
    #: works: feedback on them would be an oracle (try answers until one passes).
    hidden: bool = False


@dataclass(frozen=True)
class Decoy:
    name: str
    spec: DecoySpec
    path: Path


@dataclass(frozen=True)
class Solution:
    name: str
    spec: SolutionSpec
    path: Path


@dataclass
class LabDef:
    """Everything trusted about one lab: course entry, checks, check cells, decoys."""

    id: str
    course: Course
    entry: CourseLab
    spec: LabSpec
    directory: Path
    notebook_path: Path
    source: NotebookNode
    checks: list[Check]
    decoys: list[Decoy] = field(default_factory=list)
    solutions: list[Solution] = field(default_factory=list)

    @property
    def environment(self) -> str:
        return self.entry.environment

    @property
    def rubric(self) -> RubricSpec | None:
        """The manually graded part (lab.yaml ``rubric:``), or None for a lab judged by its checks alone."""
        return self.spec.rubric

    @property
    def max_score(self) -> float:
        return sum(c.spec.points for c in self.checks)

    @property
    def threshold(self) -> float:
        return self.course.threshold(self.entry)

    def check_by_grade_id(self) -> dict[str, Check]:
        return {c.grade_id: c for c in self.checks}

    def source_cell(self, grade_id: str) -> NotebookNode:
        for cell in self.source.cells:
            if nbg(cell).get("grade_id") == grade_id:
                found: NotebookNode = copy.deepcopy(cell)
                return found
        raise KeyError(grade_id)

    def suite_hash(self) -> str:
        """sha256 over what judges this lab: lab.yaml, the check cells' source, and the graders/ modules its
        checks name together with the graders/ helpers they import (transitively). Another lab's grader
        changing leaves this hash alone."""
        h = hashlib.sha256()
        h.update((self.directory / "lab.yaml").read_bytes())
        for check in sorted(self.checks, key=lambda c: c.id):
            h.update(check.id.encode() + b"\0" + self.source_cell(check.grade_id).source.encode() + b"\0")
        graders = self.course_root / "graders"
        for path in grader_modules(graders, {c.spec.grader.split(".", 1)[0] for c in self.checks}):
            h.update(path.name.encode() + b"\0" + path.read_bytes())
        return h.hexdigest()

    @property
    def course_root(self) -> Path:
        return self.directory.parent.parent

    def solution_ids(self) -> list[str]:
        return [str(nbg(c)["grade_id"]) for c in self.source.cells if nbg(c).get("solution") and nbg(c).get("grade_id")]


#: CPython 3.11's AST constructor keeps its recursion depth in state that threads share: two gradings
#: parsing at once (``cohort grade`` runs several in threads) can fail with "SystemError: AST constructor
#: recursion depth mismatch" (seen in CI, Python 3.11.7). Every parse here takes turns.
_PARSING = threading.Lock()


def grader_modules(graders: Path, names: set[str]) -> list[Path]:
    """``graders/<name>.py`` for each name plus every ``graders`` module they import, transitively, sorted."""
    import ast

    seen: set[str] = set()
    todo = sorted(names | {"__init__"})
    while todo:
        name = todo.pop()
        path = graders / f"{name}.py"
        if name in seen or not path.is_file():
            continue
        seen.add(name)
        with _PARSING:
            tree = ast.parse(path.read_bytes(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                parts = node.module.split(".")
                if node.level == 0 and parts[0] == "graders" and len(parts) > 1:
                    todo.append(parts[1])
                elif (node.level == 0 and parts == ["graders"]) or (node.level == 1 and not node.module):
                    todo.extend(alias.name for alias in node.names)
                elif node.level == 1:
                    todo.append(parts[0])
            elif isinstance(node, ast.Import):
                todo.extend(a.name.split(".")[1] for a in node.names if a.name.startswith("graders."))
    return sorted(graders / f"{name}.py" for name in seen)


def nbg(cell: NotebookNode) -> dict[str, Any]:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return meta if isinstance(meta, dict) else {}


def is_check_cell(cell: NotebookNode) -> bool:
    m = nbg(cell)
    return bool(m.get("grade")) and not m.get("solution") and cell.get("cell_type") == "code"


def check_ids_in(source: str) -> list[str] | None:
    """The check ids a check cell's code calls, or None when it holds anything else."""
    ids = []
    for raw in source.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):  # comments, and the HIDDEN TESTS markers
            continue
        m = CHECK_CALL.match(line)
        if not m:
            return None
        ids.append(m.group("id"))
    return ids


def read_notebook(path: Path, display: str) -> NotebookNode:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(display, [("", "file not found")]) from None
    if len(raw) > MAX_NOTEBOOK_BYTES:
        raise ConfigError(display, [("", f"notebook is larger than {MAX_NOTEBOOK_BYTES} bytes")])
    try:
        nb: NotebookNode = nbformat.reads(raw.decode("utf-8"), as_version=4)
        nbformat.validate(nb)
    except (UnicodeDecodeError, ValueError, nbformat.ValidationError) as exc:
        raise ConfigError(display, [("", f"not a valid notebook: {str(exc).splitlines()[0][:200]}")]) from None
    return nb


def write_notebook(path: Path, nb: NotebookNode, display: str) -> None:
    """Write ``nb`` to ``path`` whole or not at all (a temporary file beside it, then a rename)."""
    if path.is_dir():
        raise UsageError(f"{display}: is a directory")
    tmp = path.with_name(path.name + ".tmp")
    nbformat.write(nb, str(tmp))
    tmp.replace(path)


def signature_problems(fn: CheckFn, args: Mapping[str, Any]) -> str | None:
    """Why ``args`` cannot call ``fn`` (missing or unknown keyword), or None."""
    try:
        inspect.signature(fn).bind(None, **args)
    except TypeError as exc:
        return str(exc)
    return None


def _checks_from_cells(spec: LabSpec, nb: NotebookNode, registry: CheckRegistry,
                       problems: list[tuple[str, str]]) -> list[Check]:
    seen: dict[str, str] = {}
    hidden_cells: set[str] = set()
    grade_ids: set[str] = set()
    for i, cell in enumerate(nb.cells):
        m = nbg(cell)
        where = f"cells[{i}]"
        gid = m.get("grade_id")
        if gid:
            if gid in grade_ids:
                problems.append((f"{where}.metadata.nbgrader.grade_id", f"duplicate grade_id {gid!r}"))
            grade_ids.add(gid)
        if m.get("grade") and m.get("solution") and cell.get("cell_type") == "code":
            problems.append((where, "autograded answer cells (solution + grade code cells) are not allowed: "
                                    "judge the environment with a check cell instead"))
        if not is_check_cell(cell):
            continue
        ids = check_ids_in(cell.source)
        if not ids or len(ids) != 1:
            problems.append((f"{where}.source", 'a check cell must hold exactly one lab.check("<id>") call'))
            continue
        cid = ids[0]
        if cid not in spec.checks:
            problems.append((f"{where}.source", f"check {cid!r} is not declared in lab.yaml checks"))
            continue
        if cid in seen:
            problems.append((f"{where}.source", f"check {cid!r} already has a cell ({seen[cid]})"))
            continue
        seen[cid] = str(gid)
        if MARKERS[0] in cell.source:
            hidden_cells.add(cid)
        if float(m.get("points", 0)) != spec.checks[cid].points:
            problems.append((f"{where}.metadata.nbgrader.points",
                             f"{m.get('points')} but lab.yaml gives check {cid!r} {spec.checks[cid].points} points"))
    for cid in spec.checks:
        if cid not in seen:
            problems.append((f"checks.{cid}", "no check cell in the notebook calls this check"))
    out = []
    for cid, cspec in spec.checks.items():
        fn = registry.get(cspec.grader)
        if fn is None:
            problems.append((f"checks.{cid}.grader", f"no check {cspec.grader!r} in graders/ "
                                                     f"(known: {', '.join(sorted(registry)) or 'none'})"))
            continue
        why = signature_problems(fn, cspec.args)
        if why:
            problems.append((f"checks.{cid}.args", f"do not fit {cspec.grader}: {why}"))
            continue
        if cid in seen:
            out.append(Check(cid, cspec, fn, seen[cid], cid in hidden_cells))
    return out


def load_lab(settings: Settings, course: Course, lab_id: str, *, registry: CheckRegistry,
             unfinished_ok: bool = False) -> LabDef:
    """Load and cross-check one lab; ConfigError lists every problem with its file and field.

    ``registry`` holds the checks the lab may name (the grading side loads it from ``graders/``).
    A lab still holding ``TODO(author)`` markers (``ladderlab new lab``) is refused, each marker named,
    unless ``unfinished_ok``.
    """
    entry = course.lab(lab_id)
    directory = settings.root / "labs" / lab_id
    rel = f"labs/{lab_id}"
    if not unfinished_ok:
        from ladderlab.course.scaffold import unfinished_problems

        todo = unfinished_problems(settings.root, lab_id)
        if todo:
            raise ConfigError(f"{rel} is unfinished (fill each TODO(author); docs/authoring.md)", todo)
    spec = load_model(directory / "lab.yaml", LabSpec, f"{rel}/lab.yaml")
    nb_name = spec.notebook or f"{lab_id}.ipynb"
    nb_display = f"{rel}/{nb_name}"
    source = read_notebook(directory / nb_name, nb_display)
    problems: list[tuple[str, str]] = []
    checks = _checks_from_cells(spec, source, registry, problems)
    problems += requirement_problems(spec)
    problems += rubric_problems(spec, source)
    total = sum(c.points for c in spec.checks.values())
    if abs(total - entry.points) > 1e-9:
        problems.append(("checks", f"points add up to {total:g}, but course.yaml gives lab {lab_id} {entry.points:g}"))
    if problems:
        # Problems in lab.yaml and in the notebook are reported together, each under its file.
        yaml_p = [(w, p) for w, p in problems if not w.startswith("cells[")]
        nb_p = [(w, p) for w, p in problems if w.startswith("cells[")]
        if nb_p and not yaml_p:
            raise ConfigError(nb_display, nb_p)
        raise ConfigError(f"{rel}/lab.yaml", yaml_p + [(f"{nb_name} {w}", p) for w, p in nb_p])
    lab = LabDef(lab_id, course, entry, spec, directory, directory / nb_name, source, checks)
    lab.decoys = load_decoys(lab)
    lab.solutions = load_solutions(lab)
    if any(d.spec.when for d in lab.decoys):
        _check_when(settings, lab)
    return lab


def _check_when(settings: Settings, lab: LabDef) -> None:
    """A decoy's ``when`` names choice parameters of the lab's environment and values they can take."""
    from ladderlab.environments.runtime import load_spec
    from ladderlab.environments.spec import ChoiceParam

    params = load_spec(settings, lab.entry.environment).params
    for decoy in lab.decoys:
        problems = []
        for name, values in decoy.spec.when.items():
            param = params.get(name)
            if not isinstance(param, ChoiceParam):
                choices = ", ".join(n for n, p in params.items() if isinstance(p, ChoiceParam)) or "none"
                problems.append((f"when.{name}", f"environment {lab.entry.environment} has no choice parameter "
                                                 f"{name!r} (choices: {choices})"))
                continue
            problems += [(f"when.{name}[{i}]", f"{v!r} is not a value of {name} ({', '.join(map(str, param.values))})")
                         for i, v in enumerate(values) if v not in {str(x) for x in param.values}]
            if not values:
                problems.append((f"when.{name}", "names no value"))
        if problems:
            raise ConfigError(f"labs/{lab.id}/decoys/{decoy.path.name}", problems)


def is_manual_cell(cell: NotebookNode) -> bool:
    """An nbgrader manually graded answer cell: a markdown cell with ``grade`` and ``solution``."""
    m = nbg(cell)
    return bool(m.get("grade")) and bool(m.get("solution")) and cell.get("cell_type") == "markdown"


def rubric_problems(spec: LabSpec, nb: NotebookNode) -> list[tuple[str, str]]:
    """lab.yaml's ``rubric:`` against the notebook: the cell it names is the notebook's one manually graded
    answer cell, worth the criteria's points; ``pass_points`` is within them; criteria ids are unique. A
    manually graded cell (or task) that no rubric names is refused: its grade would be recorded nowhere."""
    problems: list[tuple[str, str]] = []
    rubric = spec.rubric
    named = rubric.cell if rubric is not None else None
    for i, cell in enumerate(nb.cells):
        m = nbg(cell)
        manual = is_manual_cell(cell) or bool(m.get("task"))
        if manual and m.get("grade_id") != named:
            problems.append((f"cells[{i}].metadata.nbgrader",
                             f"a manually graded cell ({m.get('grade_id')!r}) that no lab.yaml rubric names"
                             + (f" (the rubric's cell is {named!r})" if named else
                                ": add a rubric: section for it, or make it an ungraded cell")))
    if rubric is None:
        return problems
    seen: set[str] = set()
    for i, criterion in enumerate(rubric.criteria):
        if criterion.id in seen:
            problems.append((f"rubric.criteria[{i}].id", f"duplicate criterion {criterion.id!r}"))
        seen.add(criterion.id)
    total = rubric.max_points
    if rubric.pass_points > total + 1e-9:
        problems.append(("rubric.pass_points", f"{rubric.pass_points:g} is more than the criteria's "
                                               f"{total:g} points: the manual part could never pass"))
    found = [(i, c) for i, c in enumerate(nb.cells) if nbg(c).get("grade_id") == rubric.cell]
    if not found:
        cells = [str(nbg(c).get("grade_id")) for c in nb.cells if is_manual_cell(c)]
        problems.append(("rubric.cell", f"no cell with grade_id {rubric.cell!r} in the notebook (manually graded "
                                        f"answer cells: {', '.join(cells) or 'none'})"))
        return problems
    i, cell = found[0]
    if not is_manual_cell(cell):
        problems.append(("rubric.cell", f"cells[{i}] ({rubric.cell!r}) is not a manually graded answer cell "
                                        "(nbgrader: a markdown cell with grade: true and solution: true)"))
        return problems
    try:
        points = float(nbg(cell).get("points", 0))
    except (TypeError, ValueError):
        points = float("nan")
    if not abs(points - total) <= 1e-9:
        problems.append((f"cells[{i}].metadata.nbgrader.points",
                         f"{nbg(cell).get('points')} but the lab.yaml rubric's criteria add up to {total:g}"))
    return problems


def lab_rubrics(settings: Settings, course: Course) -> dict[str, RubricSpec]:
    """The published labs that have a manually graded part: lab id -> its rubric (lab.yaml ``rubric:``).

    Reads only the ``rubric:`` section of each lab.yaml (cheap: no notebook, no graders), for the ladder
    rules. A rubric that does not validate is a ConfigError naming the file and field: the ladder cannot
    be computed without knowing which labs need a manual grade."""
    from pydantic import ValidationError

    from ladderlab.course.loading import errors_from_validation, read_yaml

    out: dict[str, RubricSpec] = {}
    for entry in course.labs:
        if entry.status != "published":
            continue
        path = settings.root / "labs" / entry.id / "lab.yaml"
        if not path.is_file():
            continue
        display = f"labs/{entry.id}/lab.yaml"
        data = read_yaml(path, display)
        raw = data.get("rubric") if isinstance(data, dict) else None
        if raw is None:
            continue
        try:
            out[entry.id] = RubricSpec.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(display, [(f"rubric.{w}" if w else "rubric", p)
                                        for w, p in errors_from_validation(exc)]) from None
    return out


def requirement_problems(spec: LabSpec) -> list[tuple[str, str]]:
    """lab.yaml's requirements audit, cross-checked: unique ids, declared checks, a graded requirement has a check."""
    problems: list[tuple[str, str]] = []
    seen: set[str] = set()
    for i, req in enumerate(spec.requirements):
        where = f"requirements[{i}]"
        if req.id in seen:
            problems.append((f"{where}.id", f"duplicate requirement {req.id!r}"))
        seen.add(req.id)
        problems += [(f"{where}.checks", f"no check {c!r} in lab.yaml checks") for c in req.checks
                     if c not in spec.checks]
        if req.graded and not req.checks:
            problems.append((f"{where}.checks", "a graded requirement needs at least one check "
                                                "(or graded: false, and the notebook says it is not graded)"))
        if not req.graded and req.checks:
            problems.append((f"{where}.checks", "a requirement marked graded: false names no check"))
    return problems


def load_decoys(lab: LabDef) -> list[Decoy]:
    out = []
    decoy_dir = lab.directory / "decoys"
    solutions = set(lab.solution_ids())
    for path in sorted(decoy_dir.glob("*.yaml")) if decoy_dir.is_dir() else []:
        display = f"labs/{lab.id}/decoys/{path.name}"
        spec = load_model(path, DecoySpec, display)
        problems = [(f"{field}[{i}]", f"no check {c!r} in lab.yaml")
                    for field, ids in (("must_fail", spec.must_fail), ("may_fail", spec.may_fail))
                    for i, c in enumerate(ids) if c not in lab.spec.checks]
        problems += [(f"may_fail[{i}]", f"{c!r} is in must_fail too") for i, c in enumerate(spec.may_fail)
                     if c in spec.must_fail]
        problems += [(f"cells.{gid}", f"no solution cell {gid!r} in the notebook (solution cells: "
                                      f"{', '.join(sorted(solutions))})") for gid in spec.cells if gid not in solutions]
        if spec.violates is not None and spec.violates not in {r.id for r in lab.spec.requirements}:
            problems.append(("violates", f"no requirement {spec.violates!r} in lab.yaml requirements"))
        if problems:
            raise ConfigError(display, problems)
        out.append(Decoy(path.stem, spec, path))
    return out


def load_solutions(lab: LabDef) -> list[Solution]:
    """``labs/<id>/solutions/*.yaml``: other correct solutions, each replacing some solution cells."""
    out = []
    folder = lab.directory / "solutions"
    solutions = set(lab.solution_ids())
    for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
        display = f"labs/{lab.id}/solutions/{path.name}"
        spec = load_model(path, SolutionSpec, display)
        problems = [(f"cells.{gid}", f"no solution cell {gid!r} in the notebook (solution cells: "
                                     f"{', '.join(sorted(solutions))})") for gid in spec.cells if gid not in solutions]
        if problems:
            raise ConfigError(display, problems)
        out.append(Solution(path.stem, spec, path))
    return out


def chosen_labs(course: Course, ids: Sequence[str] | None = None) -> list[str]:
    """The labs a command works on: the ``ids`` given, each checked to exist and be published, or else every
    published lab of the course. UsageError names what is wrong and what there is."""
    if not ids:
        return [lab.id for lab in course.labs if lab.status == "published"]
    for lab_id in ids:
        entry = next((lab for lab in course.labs if lab.id == lab_id), None)
        if entry is None:
            raise UsageError(f"unknown lab {lab_id!r} (labs: {', '.join(lab.id for lab in course.labs)})")
        if entry.status != "published":
            raise UsageError(f"lab {lab_id!r} is {entry.status}, not published: it has no notebook to grade yet")
    return list(ids)


def load_labs(settings: Settings, course: Course, ids: Sequence[str] | None, *,
              registry: CheckRegistry) -> list[LabDef]:
    """:func:`load_lab` for each of :func:`chosen_labs`."""
    return [load_lab(settings, course, lab_id, registry=registry) for lab_id in chosen_labs(course, ids)]
