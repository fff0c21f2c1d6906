"""The ladder rules: from evidence to demonstrated cells and levels. Only this module decides.

* Evidence has a *kind* (evidence.py): ``lab`` (an automatic grading by the checks) or ``rubric`` (a
  trainer's manual grade of a lab's manually graded cell, for one submission).
* An attempt is *superseded* by a later entry of the same kind for the same learner, lab and
  submission (a regrade of the same notebook, a manual grade given again): only the latest counts.
* A lab is *passed* when any automatic attempt that is not superseded passed (re-attempts can only
  add: a later failed attempt does not take back a demonstrated lab). A lab with a manually graded
  part (lab.yaml ``rubric:``, the ``manual`` labs) is passed only by an automatic attempt that passed
  *and* whose submission has a passing manual grade (its latest ``rubric`` entry): the same notebook
  passed both. Evidence stands behind a passed lab: its automatic entry, and for a manual lab its
  rubric entry too (``LabStatus.kinds``, ``LabStatus.basis``).
* A ladder cell (track, level) is *demonstrated* when every lab mapped to it is passed; a cell
  no lab maps to cannot be demonstrated (and does not block).
* A cell's text is split into *clauses* (course.yaml), and each lab names the clauses it shows.
  A demonstrated cell *claims* only its *evidenced* clauses: the union of the clauses of the labs
  mapped to it (all passed). The others stay *not evidenced*, and a cell with some of them is
  demonstrated *in part* ("2 of 5 clauses"). A cell that is not demonstrated claims nothing.
* The *level shown* for a track is the highest level whose cell is demonstrated (in full or in
  part) while every lower level's cell that has labs is demonstrated too; 0 when there is none.

>>> progress = ladder_for(course, entries, manual=lab_rubrics(settings, course))["ada"]  # doctest: +SKIP
>>> progress.levels["security"]                          # doctest: +SKIP
1
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from ladderlab.course import Course
from ladderlab.ladder.evidence import KIND_TITLES, LAB, RUBRIC, Entry


@dataclass
class LabStatus:
    lab: str
    passed: bool
    #: the automatic entry: the passing attempt (earliest), else the latest counted attempt (for a manual
    #: lab not passed: the latest whose automatic part passed, if any)
    best: Entry | None
    attempts: list[Entry] = field(default_factory=list)
    #: the lab has a manually graded part (lab.yaml ``rubric:``)
    manual: bool = False
    #: the manual grade recorded for ``best``'s submission (its latest), if any
    rubric: Entry | None = None

    @property
    def kinds(self) -> list[str]:
        """The kinds of evidence behind ``best``: ``["lab"]``, or ``["lab", "rubric"]`` with a manual grade."""
        return [LAB, RUBRIC] if self.rubric is not None else [LAB]

    @property
    def awaiting_rubric(self) -> bool:
        """A manual lab whose automatic part passed but whose submission has no manual grade yet."""
        return (self.manual and not self.passed and self.rubric is None and self.best is not None
                and self.best.evidence.passed)

    @property
    def basis(self) -> str:
        """What stands behind the lab, in words: ``automatic checks`` or ``automatic checks + manual rubric
        (grader trainer-1, rubric 2026-11-1, 8/10)``."""
        if self.rubric is None or self.rubric.evidence.rubric is None:
            return KIND_TITLES[LAB]
        ev, grade = self.rubric.evidence, self.rubric.evidence.rubric
        verdict = "" if ev.passed else ", below its pass mark"
        return (f"{KIND_TITLES[LAB]} + {KIND_TITLES[RUBRIC]} (grader {grade.grader}, rubric {grade.version}, "
                f"{ev.score:g}/{ev.max_score:g}{verdict})")


@dataclass
class CellStatus:
    track: str
    level: int
    labs: list[str]
    demonstrated: bool
    missing: list[str]
    #: the cell's clause ids, in the order of its text
    clauses: list[str] = field(default_factory=list)
    #: the clauses the cell claims (in cell order): those of its labs, when it is demonstrated; else none
    evidenced: list[str] = field(default_factory=list)
    #: which clauses each mapped lab shows (lab id -> clause ids), passed or not
    shown_by: dict[str, list[str]] = field(default_factory=dict)
    #: the kinds of evidence behind the cell (``lab``, then ``rubric`` when a manual grade stands behind
    #: one of its labs), when it is demonstrated; else none
    kinds: list[str] = field(default_factory=list)

    @property
    def not_evidenced(self) -> list[str]:
        """The cell's clauses it does not claim (every clause when it is not demonstrated)."""
        return [c for c in self.clauses if c not in self.evidenced]

    @property
    def partial(self) -> bool:
        """Demonstrated in part: demonstrated, yet some of its clauses are not evidenced."""
        return self.demonstrated and bool(self.not_evidenced)

    @property
    def claim(self) -> str:
        """How much of the cell is claimed: ``all 3 clauses``, ``the one clause``, ``2 of 5 clauses``, ``no clause``."""
        n, total = len(self.evidenced), len(self.clauses)
        if n == 0:
            return "no clause"
        if n == total:
            return f"all {total} clauses" if total > 1 else "the one clause"
        return f"{n} of {total} clause{'' if total == 1 else 's'}"


@dataclass
class Progress:
    learner: str
    labs: dict[str, LabStatus]
    cells: dict[tuple[str, int], CellStatus]
    levels: dict[str, int]

    def next_rung(self, track: str) -> CellStatus | None:
        """The lowest cell above the shown level that has labs and is not demonstrated."""
        shown = self.levels.get(track, 0)
        pending = [c for (t, lvl), c in sorted(self.cells.items()) if t == track and lvl > shown and c.labs
                   and not c.demonstrated]
        return pending[0] if pending else None


def counted(entries: Iterable[Entry]) -> list[Entry]:
    """Entries that are not superseded by a later entry of the same kind for the same submission."""
    latest: dict[tuple[str, str, str, str], Entry] = {}
    for e in sorted(entries, key=lambda e: e.seq):
        latest[(e.evidence.learner, e.evidence.lab, e.evidence.submission_hash, e.evidence.kind)] = e
    return sorted(latest.values(), key=lambda e: e.seq)


def lab_statuses(entries: list[Entry], *, manual: Collection[str]) -> dict[str, LabStatus]:
    """Per lab, whether it is passed and the evidence behind it (one learner's entries). ``manual``: the labs
    with a manually graded part (``ladderlab.course.labs.lab_rubrics``)."""
    by_lab: dict[str, list[Entry]] = defaultdict(list)
    grades: dict[tuple[str, str], Entry] = {}  # (lab, submission) -> its manual grade (the latest counted)
    for e in counted(entries):
        if e.evidence.kind == LAB:
            by_lab[e.evidence.lab].append(e)
        elif e.evidence.kind == RUBRIC:
            grades[(e.evidence.lab, e.evidence.submission_hash)] = e
    out = {}
    for lab, attempts in by_lab.items():
        passing = [e for e in attempts if e.evidence.passed]
        if lab not in manual:
            out[lab] = LabStatus(lab, bool(passing), passing[0] if passing else attempts[-1], attempts)
            continue
        both = [e for e in passing if (g := grades.get((lab, e.evidence.submission_hash))) and g.evidence.passed]
        best = both[0] if both else passing[-1] if passing else attempts[-1]
        out[lab] = LabStatus(lab, bool(both), best, attempts, manual=True,
                             rubric=grades.get((lab, best.evidence.submission_hash)))
    return out


def cell_labs(course: Course) -> dict[tuple[str, int], list[str]]:
    """Every ladder cell and the labs mapped to it (in course order)."""
    out: dict[tuple[str, int], list[str]] = {(t.id, lvl): [] for t in course.ladder.tracks for lvl in sorted(t.levels)}
    for lab in course.labs:
        for ref in lab.cells:
            out[(ref.track, ref.level)].append(lab.id)
    return out


def cell_claims(course: Course) -> dict[tuple[str, int], dict[str, list[str]]]:
    """Every ladder cell and, per lab mapped to it, the clauses of the cell that lab shows."""
    out: dict[tuple[str, int], dict[str, list[str]]] = {
        (t.id, lvl): {} for t in course.ladder.tracks for lvl in sorted(t.levels)}
    for lab in course.labs:
        for ref in lab.cells:
            out[(ref.track, ref.level)][lab.id] = list(ref.clauses)
    return out


def progress(course: Course, learner: str, entries: list[Entry],
             mapping: dict[tuple[str, int], list[str]] | None = None,
             claims: dict[tuple[str, int], dict[str, list[str]]] | None = None,
             *, manual: Collection[str]) -> Progress:
    """One learner's ladder. ``manual``: the labs with a manually graded part (lab.yaml ``rubric:``,
    :func:`ladderlab.course.labs.lab_rubrics`); every caller that shows a ladder passes them."""
    labs = lab_statuses([e for e in entries if e.evidence.learner == learner], manual=manual)
    claims = claims if claims is not None else cell_claims(course)
    order = {(t.id, lvl): t.clause_ids(lvl) for t in course.ladder.tracks for lvl in t.levels}
    cells: dict[tuple[str, int], CellStatus] = {}
    for (track_id, level), mapped in (mapping or cell_labs(course)).items():
        missing = [lab for lab in mapped if not (lab in labs and labs[lab].passed)]
        demonstrated = bool(mapped) and not missing
        shown_by = {lab: list(claims.get((track_id, level), {}).get(lab, [])) for lab in mapped}
        clauses = order.get((track_id, level), [])
        claimed = {c for lab in mapped for c in shown_by[lab]} if demonstrated else set()
        kinds = sorted({k for lab in mapped for k in labs[lab].kinds}, key=[LAB, RUBRIC].index) if demonstrated \
            else []
        cells[(track_id, level)] = CellStatus(track_id, level, mapped, demonstrated, missing, list(clauses),
                                              [c for c in clauses if c in claimed], shown_by, kinds)
    levels = {}
    for track in course.ladder.tracks:
        shown = 0
        for level in sorted(track.levels):
            cell = cells[(track.id, level)]
            if not cell.labs:
                continue
            if not cell.demonstrated:
                break
            shown = level
        levels[track.id] = shown
    return Progress(learner, labs, cells, levels)


def ladder_for(course: Course, entries: list[Entry], learners: Iterable[str] | None = None,
               *, manual: Collection[str]) -> dict[str, Progress]:
    """Progress of every learner with evidence (or of ``learners``), by learner id; ``manual`` as for
    :func:`progress`."""
    names = sorted(set(learners) if learners is not None else {e.evidence.learner for e in entries})
    by_learner: dict[str, list[Entry]] = defaultdict(list)
    for e in entries:
        by_learner[e.evidence.learner].append(e)
    mapping, claims = cell_labs(course), cell_claims(course)
    return {name: progress(course, name, by_learner.get(name, []), mapping, claims, manual=manual) for name in names}
