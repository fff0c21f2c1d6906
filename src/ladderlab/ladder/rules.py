"""The ladder rules: from evidence to demonstrated cells and levels. Only this module decides.

* An attempt is *superseded* by a later entry for the same learner, lab and submission (a
  regrade of the same notebook): only the latest grading of a submission counts.
* A lab is *passed* when any attempt that is not superseded passed (re-attempts can only add:
  a later failed attempt does not take back a demonstrated lab).
* A ladder cell (track, level) is *demonstrated* when every lab mapped to it is passed; a cell
  no lab maps to cannot be demonstrated (and does not block).
* A cell's text is split into *clauses* (course.yaml), and each lab names the clauses it shows.
  A demonstrated cell *claims* only its *evidenced* clauses: the union of the clauses of the labs
  mapped to it (all passed). The others stay *not evidenced*, and a cell with some of them is
  demonstrated *in part* ("2 of 5 clauses"). A cell that is not demonstrated claims nothing.
* The *level shown* for a track is the highest level whose cell is demonstrated (in full or in
  part) while every lower level's cell that has labs is demonstrated too; 0 when there is none.

>>> progress = ladder_for(course, entries)["ada"]        # doctest: +SKIP
>>> progress.levels["security"]                          # doctest: +SKIP
1
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from ladderlab.course import Course
from ladderlab.ladder.evidence import Entry


@dataclass
class LabStatus:
    lab: str
    passed: bool
    best: Entry | None  # the passing attempt (earliest), else the latest counted attempt
    attempts: list[Entry] = field(default_factory=list)


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
    """Entries that are not superseded by a later grading of the same submission."""
    latest: dict[tuple[str, str, str], Entry] = {}
    for e in sorted(entries, key=lambda e: e.seq):
        latest[(e.evidence.learner, e.evidence.lab, e.evidence.submission_hash)] = e
    return sorted(latest.values(), key=lambda e: e.seq)


def lab_statuses(entries: list[Entry]) -> dict[str, LabStatus]:
    by_lab: dict[str, list[Entry]] = defaultdict(list)
    for e in counted(entries):
        by_lab[e.evidence.lab].append(e)
    out = {}
    for lab, attempts in by_lab.items():
        passing = [e for e in attempts if e.evidence.passed]
        out[lab] = LabStatus(lab, bool(passing), passing[0] if passing else attempts[-1], attempts)
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
             claims: dict[tuple[str, int], dict[str, list[str]]] | None = None) -> Progress:
    labs = lab_statuses([e for e in entries if e.evidence.learner == learner])
    claims = claims if claims is not None else cell_claims(course)
    order = {(t.id, lvl): t.clause_ids(lvl) for t in course.ladder.tracks for lvl in t.levels}
    cells: dict[tuple[str, int], CellStatus] = {}
    for (track_id, level), mapped in (mapping or cell_labs(course)).items():
        missing = [lab for lab in mapped if not (lab in labs and labs[lab].passed)]
        demonstrated = bool(mapped) and not missing
        shown_by = {lab: list(claims.get((track_id, level), {}).get(lab, [])) for lab in mapped}
        clauses = order.get((track_id, level), [])
        claimed = {c for lab in mapped for c in shown_by[lab]} if demonstrated else set()
        cells[(track_id, level)] = CellStatus(track_id, level, mapped, demonstrated, missing, list(clauses),
                                              [c for c in clauses if c in claimed], shown_by)
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


def ladder_for(course: Course, entries: list[Entry], learners: Iterable[str] | None = None) -> dict[str, Progress]:
    """Progress of every learner with evidence (or of ``learners``), by learner id."""
    names = sorted(set(learners) if learners is not None else {e.evidence.learner for e in entries})
    by_learner: dict[str, list[Entry]] = defaultdict(list)
    for e in entries:
        by_learner[e.evidence.learner].append(e)
    mapping, claims = cell_labs(course), cell_claims(course)
    return {name: progress(course, name, by_learner.get(name, []), mapping, claims) for name in names}
