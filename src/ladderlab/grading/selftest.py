"""Lab self-test: a lab's checks must discriminate.

For every lab, each grading on a fresh environment:

* the source notebook (the instructor's solutions) scores full marks;
* every other correct solution (``labs/<id>/solutions/*.yaml``: the source notebook with some solution
  cells replaced, written in another style) scores full marks;
* the released notebook, untouched, scores 0 on every check;
* every decoy (``labs/<id>/decoys/*.yaml``: the source notebook with some
  solution cells replaced) scores below the pass threshold and fails
  exactly the checks it declares in ``must_fail`` (plus, at most, those in ``may_fail``: checks its
  violation can also bring down depending on timing, each explained in its description).

A verdict our side could not reach (a check in error, an incomplete grading) never counts as a rejection.

With ``seeds=K`` the solutions and decoys are graded for K self-test learners (K seeds; with
``decoys_once`` naming the lab, each decoy only for the first learner whose seed allows it). The learners are
chosen so that, between them, every value of every ``choice`` parameter of the lab's environment is drawn
at least once where K allows it (which fault is injected, which threshold applies): the seeded choices that
change what a check looks for. The untouched release is graded for the first learner only.

``to_json`` (what ``ladderlab selftest --json`` prints per lab)::

    {"id", "passed", "seconds",                     # seconds: gradings' wall time, summed
     "seeds": [{"learner", "seed", "params"}],      # params: what the seed draws
     "uncovered": ["param=value", ...],             # choice values no learner drew (K too small)
     "solution": RUN, "untouched": RUN,             # the source notebook and the release, first learner
     "solutions": [RUN...], "decoys": [RUN...],     # every learner
     "runs": [RUN...]}                              # all of the above, flat
    RUN = {"kind", "name", "learner", "ok", "score", "max_score", "failed_checks", "errored_checks",
           "feedback": {check: line}, "seconds", "timings": {phase: seconds} (env_up, sandbox, checks, ...),
           "attempts", ["must_fail", "may_fail", "violates", "rejected"] (decoys), ["error"]}

A grading the grader could not judge (a check that errored, an incomplete grading: an overloaded machine,
a fault of our own tools) says nothing about the lab: it is graded again on a fresh environment, up to
``ATTEMPTS`` times in all (first waiting ``RETRY_PAUSE_S`` times the attempts so far), and only the last attempt
counts (``attempts`` says how many it took). A lab whose checks cannot judge on every attempt still fails its
self-test. A verdict is never graded again.
"""

from __future__ import annotations

import copy
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import docker
from nbformat import NotebookNode

from ladderlab.config import Settings
from ladderlab.course.labs import Decoy, LabDef, nbg
from ladderlab.grading.pipeline import GradeReport, grade

Say = Callable[[str], None]

#: How many candidate learner ids the seed chooser looks through.
CANDIDATES = 400
#: Self-test learner ids: ``selftest-1``, ``selftest-2``, ...
LEARNER_PREFIX = "selftest-"
#: Gradings of one run at most, while the grader cannot judge it (see the module's notes).
ATTEMPTS = 3
#: Before grading again, wait this long times the attempts so far: a grading that could not judge met a busy
#: moment (several gradings' timing experiments at once), and grading again at once tends to meet it again.
RETRY_PAUSE_S = 10.0


def released(lab: LabDef) -> NotebookNode:
    """The student version, made with nbgrader's own preprocessors (solutions and hidden tests removed)."""
    from nbgrader.preprocessors import ClearHiddenTests, ClearSolutions

    nb: NotebookNode = copy.deepcopy(lab.source)
    resources: dict[str, Any] = {}
    nb, resources = ClearSolutions().preprocess(nb, resources)
    nb, resources = ClearHiddenTests().preprocess(nb, resources)
    return nb


def with_cells(lab: LabDef, cells: Mapping[str, str]) -> NotebookNode:
    """The source notebook with the solution cells named in ``cells`` (grade_id -> code) replaced."""
    nb = copy.deepcopy(lab.source)
    for cell in nb.cells:
        gid = nbg(cell).get("grade_id")
        if isinstance(gid, str) and gid in cells:
            cell.source = cells[gid]
    return nb


def with_decoy(lab: LabDef, decoy: Decoy) -> NotebookNode:
    return with_cells(lab, decoy.spec.cells)


@dataclass(frozen=True)
class Learner:
    """A self-test learner: the id grading derives the seed from, and the parameters that seed draws."""

    id: str
    seed: str
    params: dict[str, str | int]

    def to_json(self) -> dict[str, Any]:
        return {"learner": self.id, "seed": self.seed, "params": self.params}


def choose_learners(choices: Mapping[str, Iterable[str]], draws: Callable[[str], Mapping[str, str | int]],
                    k: int, *, candidates: int = CANDIDATES) -> list[str]:
    """``k`` learner ids from ``selftest-1 .. selftest-<candidates>``, chosen so that every value of every
    choice parameter (``choices``: name -> values) is drawn by at least one of them where ``k`` allows.

    ``draws(learner)`` gives the parameters that learner's seed draws. The choice is greedy (most new values
    first, ties to the lowest number); when the greedy choice leaves a value undrawn, a bounded exact search
    (:func:`_cover`) looks for ``k`` learners that draw them all: with several choice parameters the greedy
    choice can miss a cover that exists. The same every time for the same course secret.
    """
    if k < 1:
        raise ValueError("at least one seed is needed")
    wanted = {(name, str(v)) for name, values in choices.items() for v in values}
    pool = [f"{LEARNER_PREFIX}{i}" for i in range(1, max(candidates, k) + 1)]
    drawn = {lid: {(n, str(v)) for n, v in draws(lid).items() if n in choices} & wanted
             for lid in pool} if wanted else {}
    chosen = _greedy(pool, drawn, k, [])
    if wanted - set().union(*(drawn.get(lid, set()) for lid in chosen)):
        cover = _cover(pool, drawn, wanted, k)
        if cover is not None:
            chosen = _greedy(pool, drawn, k, cover)
    return chosen


def _greedy(pool: list[str], drawn: Mapping[str, set[tuple[str, str]]], k: int, chosen: list[str]) -> list[str]:
    """``chosen`` filled up to ``k`` learners, each time the one drawing most undrawn values (first of the best)."""
    chosen = list(chosen)
    covered: set[tuple[str, str]] = set().union(*(drawn.get(lid, set()) for lid in chosen))
    while len(chosen) < k:
        rest = [lid for lid in pool if lid not in chosen]
        best = max(rest, key=lambda lid: len(drawn.get(lid, set()) - covered))  # drawn is within wanted
        chosen.append(best)
        covered |= drawn.get(best, set())
    return chosen


#: How many search nodes :func:`_cover` may visit before it gives up (a fraction of a second).
COVER_BUDGET = 20000


def _cover(pool: list[str], drawn: Mapping[str, set[tuple[str, str]]], wanted: set[tuple[str, str]],
           k: int) -> list[str] | None:
    """At most ``k`` learners of ``pool`` that between them draw every value in ``wanted``, or None.

    Depth-first: branch on the undrawn value the fewest learners draw, most new values first; prune when a
    parameter has more undrawn values than learners left to choose, or when a state already failed."""
    holders: dict[tuple[str, str], list[str]] = {v: [lid for lid in pool if v in drawn[lid]] for v in wanted}
    order = {lid: i for i, lid in enumerate(pool)}
    failed: set[frozenset[tuple[str, str]]] = set()
    budget = [COVER_BUDGET]

    def search(chosen: list[str], covered: frozenset[tuple[str, str]], slots: int) -> list[str] | None:
        missing = wanted - covered
        if not missing:
            return chosen
        per_param = Counter(name for name, _v in missing)
        if slots == 0 or max(per_param.values()) > slots or covered in failed or budget[0] <= 0:
            return None
        budget[0] -= 1
        value = min(missing, key=lambda v: (len(holders[v]), v))
        options = sorted((lid for lid in holders[value] if lid not in chosen),
                         key=lambda lid: (-len(drawn[lid] - covered), order[lid]))
        for lid in options:
            found = search([*chosen, lid], covered | drawn[lid], slots - 1)
            if found is not None:
                return found
        failed.add(covered)
        return None

    return search([], frozenset(), k)


def uncovered(choices: Mapping[str, Iterable[str]], learners: Iterable[Learner]) -> list[str]:
    """``name=value`` for every choice value none of ``learners`` drew."""
    drawn = {(n, str(v)) for lr in learners for n, v in lr.params.items()}
    return [f"{n}={v}" for n, values in choices.items() for v in values if (n, str(v)) not in drawn]


def env_choices(settings: Settings, lab: LabDef) -> dict[str, list[str]]:
    """The lab environment's choice parameters: name -> values."""
    from ladderlab.environments.runtime import load_spec
    from ladderlab.environments.spec import ChoiceParam

    spec = load_spec(settings, lab.environment)
    return {n: list(p.values) for n, p in spec.params.items() if isinstance(p, ChoiceParam)}


def learners_for(settings: Settings, lab: LabDef, k: int) -> list[Learner]:
    """``k`` self-test learners for ``lab`` covering its environment's choice values (see :func:`choose_learners`).

    Seeds and parameters are computed as grading computes them (keyed with the course secret)."""
    from ladderlab.course.seeds import course_secret, derive_seed, render_params
    from ladderlab.environments.runtime import load_spec

    spec = load_spec(settings, lab.environment)
    choices = env_choices(settings, lab)
    key = course_secret(settings)

    def draws(learner: str) -> dict[str, str | int]:
        return render_params(spec.params, derive_seed(lab.course.id, learner, lab.id, secret=key), secret=key)

    ids = choose_learners(choices, draws, k)
    return [Learner(lid, derive_seed(lab.course.id, lid, lab.id, secret=key), draws(lid)) for lid in ids]


@dataclass
class Run:
    kind: str  # solution | untouched | decoy
    name: str  # "notebook" for the source notebook, else the solution's or decoy's file name
    learner: str = "selftest-1"
    report: GradeReport | None = None
    error: str = ""
    must_fail: list[str] = field(default_factory=list)
    may_fail: list[str] = field(default_factory=list)
    violates: str | None = None
    seconds: float = 0.0
    attempts: int = 0

    @property
    def judged(self) -> bool:
        """The grading came to a verdict on every check (graded again when not)."""
        return not self.error and self.report is not None and self.report.complete and not self.errored

    @property
    def failed(self) -> list[str]:
        return sorted(self.report.failed()) if self.report else []

    @property
    def errored(self) -> list[str]:
        return sorted(c.id for c in self.report.checks if c.status == "error") if self.report else []

    def verdict(self, lab: LabDef) -> bool:
        r = self.report
        if r is None or not self.judged:
            return False
        if self.kind == "solution":
            return r.score == r.max_score and not r.failed()
        if self.kind == "untouched":
            return r.score == 0 and all(c.points == 0 for c in r.checks)
        below = r.score < lab.threshold * r.max_score
        return below and set(self.must_fail) <= set(r.failed()) <= set(self.must_fail) | set(self.may_fail)

    def to_json(self, lab: LabDef) -> dict[str, Any]:
        r = self.report
        out: dict[str, Any] = {
            "kind": self.kind, "name": self.name, "learner": self.learner, "ok": self.verdict(lab),
            "score": r.score if r else None, "max_score": lab.max_score, "failed_checks": self.failed,
            "errored_checks": self.errored, "seconds": round(self.seconds, 1), "attempts": self.attempts,
            "timings": {k: round(v, 1) for k, v in r.timings.items()} if r else {},
            "feedback": {c.id: c.feedback for c in r.checks if not c.passed} if r else {}}
        if self.kind == "decoy":
            out.update(must_fail=sorted(self.must_fail), may_fail=sorted(self.may_fail), violates=self.violates,
                       rejected=self.verdict(lab))
        if self.error or (r and r.error):
            out["error"] = self.error or (r.error if r else "")
        return out


@dataclass
class LabResult:
    lab: LabDef
    runs: list[Run]
    learners: list[Learner] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # choice values no learner drew
    ungraded: list[str] = field(default_factory=list)  # decoys no learner's seed allows (their ``when``)

    @property
    def passed(self) -> bool:
        """Every run as expected, and no decoy left ungraded for want of a learner whose seed allows it."""
        return not self.ungraded and all(run.verdict(self.lab) for run in self.runs)

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.runs)

    def to_json(self) -> dict[str, Any]:
        first = self.learners[0].id if self.learners else None

        def the(kind: str, name: str) -> dict[str, Any] | None:
            run = next((r for r in self.runs if r.kind == kind and r.name == name and r.learner == first), None)
            return run.to_json(self.lab) if run else None

        return {
            "id": self.lab.id,
            "passed": self.passed,
            "seconds": round(self.seconds, 1),
            "seeds": [lr.to_json() for lr in self.learners],
            "uncovered": self.missing,
            "ungraded_decoys": self.ungraded,
            "solution": the("solution", "notebook"),
            "untouched": the("untouched", "untouched"),
            "solutions": [r.to_json(self.lab) for r in self.runs if r.kind == "solution" and r.name != "notebook"],
            "decoys": [r.to_json(self.lab) for r in self.runs if r.kind == "decoy"],
            "runs": [r.to_json(self.lab) for r in self.runs],
        }


def plan(lab: LabDef, learners: list[Learner], only: Iterable[str] = (),
         decoys_once: bool = False) -> list[tuple[Run, NotebookNode]]:
    """The gradings of one lab's self-test: every learner's solutions and decoys, the first's untouched release.

    ``only`` keeps the runs with those names (``notebook``, ``untouched``, a solution's or a decoy's name).
    ``decoys_once``: each decoy for the first learner whose seed allows it, not for every learner (the
    solutions are still graded for every learner: every seeded choice is judged on a right answer)."""
    keep = set(only)
    graded: set[str] = set()
    work: list[tuple[Run, NotebookNode]] = []
    for i, learner in enumerate(learners):
        lid = learner.id
        work.append((Run("solution", "notebook", lid), copy.deepcopy(lab.source)))
        if i == 0:
            work.append((Run("untouched", "untouched", lid), released(lab)))
        for s in lab.solutions:
            work.append((Run("solution", s.name, lid), with_cells(lab, s.spec.cells)))
        for d in lab.decoys:
            if not d.spec.applies(learner.params):  # a wrong answer only some seeded variants allow
                continue
            if decoys_once and d.name in graded:
                continue
            graded.add(d.name)
            work.append((Run("decoy", d.name, lid, must_fail=list(d.spec.must_fail), may_fail=list(d.spec.may_fail),
                             violates=d.spec.violates),
                         with_decoy(lab, d)))
    return [(run, nb) for run, nb in work if not keep or run.name in keep]


def selftest(settings: Settings, client: docker.DockerClient, labs: list[LabDef], *, jobs: int = 3,
             seeds: int = 1, seeds_for: Mapping[str, int] | None = None, only: Iterable[str] = (),
             decoys_once: Collection[str] = (), say: Say = print) -> list[LabResult]:
    """Grade every lab's solutions, untouched release and decoys for ``seeds`` learners (``jobs`` at a time).

    ``seeds_for``: a lab's own number of learners instead of ``seeds``. All the labs' gradings share one pool
    of ``jobs`` (one lab's waits overlap another's work), interleaved (:func:`interleave`).
    ``only``: grade just the runs with these names; ``decoys_once``: the labs (ids) whose decoys are graded for
    one learner each (see :func:`plan`)."""
    only = list(only)
    results: list[LabResult] = []
    work: list[tuple[LabDef, Run, NotebookNode]] = []
    for lab in labs:
        learners = learners_for(settings, lab, (seeds_for or {}).get(lab.id, seeds))
        runs = plan(lab, learners, only, lab.id in decoys_once)
        ungraded = [d.name for d in lab.decoys if (not only or d.name in only)
                    and not any(d.spec.applies(lr.params) for lr in learners)]
        results.append(LabResult(lab, [run for run, _ in runs], learners,
                                 uncovered(env_choices(settings, lab), learners), ungraded))
        work += [(lab, run, nb) for run, nb in runs]
    for res in results:
        for lr in res.learners:
            say(f"{res.lab.id}: learner {lr.id} seed {lr.seed[:12]} "
                f"{' '.join(f'{n}={v}' for n, v in lr.params.items()) or ''}".rstrip())
        if res.missing:
            say(f"{res.lab.id}: no learner draws {', '.join(res.missing)} (use more --seeds)")
        for name in res.ungraded:
            when = next(d.spec.when for d in res.lab.decoys if d.name == name)
            say(f"{res.lab.id}: decoy {name} is not graded: no learner draws "
                f"{' or '.join(f'{k}={v}' for k, vs in when.items() for v in vs)} (use more --seeds)")

    def one(item: tuple[LabDef, Run, NotebookNode]) -> Run:
        lab, run, nb = item
        t0 = time.monotonic()
        while run.attempts < ATTEMPTS:
            if run.attempts:  # an incomplete report names its fault (the first check in error, or the grading's)
                why = run.error or (run.report.error if run.report else "")
                say(f"{lab.id}: {run.learner} {run.kind} {run.name} could not be judged, graded again "
                    f"({run.attempts + 1}/{ATTEMPTS}, after {RETRY_PAUSE_S * run.attempts:g} s): {why[:300]}")
                time.sleep(RETRY_PAUSE_S * run.attempts)
            run.attempts += 1
            run.report, run.error = None, ""
            try:
                run.report, _ = grade(settings, client, lab, copy.deepcopy(nb), run.learner)
            except Exception as exc:
                run.error = f"{type(exc).__name__}: {exc}"
            if run.judged:
                break
        run.seconds = time.monotonic() - t0
        mark = "ok" if run.verdict(lab) else "FAILED"
        r = run.report
        score = f"{r.score:g}/{r.max_score:g}" if r else run.error
        err = f" error={','.join(run.errored)}" if run.errored else ""
        say(f"{lab.id}: {run.learner} {run.kind} {run.name} {score} failed={','.join(run.failed) or '-'}{err} "
            f"({run.seconds:.0f}s) -> {mark}")
        return run

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(one, interleave(work, [lab.id for lab in labs])))
    return results


def interleave(work: Sequence[tuple[LabDef, Run, NotebookNode]], order: Sequence[str]) -> list[Any]:
    """The gradings in an order that spreads each lab's over the whole run: the k-th of a lab's n gradings at
    k/n, ties in the order of ``order``. A lab that mostly waits (sec-3's alert window, sre-3's experiment) then
    runs beside labs that compute instead of filling the pool alone, and the CPU-bound ones do not pile up at
    the end. A lab's own gradings keep their order."""
    counts = Counter(lab.id for lab, _, _ in work)
    seen: Counter[str] = Counter()
    keyed = []
    for item in work:
        lab_id = item[0].id
        keyed.append(((seen[lab_id] / counts[lab_id], order.index(lab_id) if lab_id in order else len(order)), item))
        seen[lab_id] += 1
    return [item for _, item in sorted(keyed, key=lambda pair: pair[0])]
