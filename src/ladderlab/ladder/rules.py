"""The ladder rules: from evidence to demonstrated cells and levels. Only this module decides.

* An attempt is *superseded* by a later entry for the same learner, lab and submission (a
  regrade of the same notebook): only the latest grading of a submission counts.
* A lab is *passed* when any attempt that is not superseded passed (re-attempts can only add:
  a later failed attempt does not take back a demonstrated lab).
* A ladder cell (track, level) is *demonstrated* when every lab mapped to it is passed; a cell
  no lab maps to cannot be demonstrated (and does not block).
* The *level shown* for a track is the highest level whose cell is demonstrated while every
  lower level's cell that has labs is demonstrated too; 0 when there is none.

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


def progress(course: Course, learner: str, entries: list[Entry],
             mapping: dict[tuple[str, int], list[str]] | None = None) -> Progress:
    labs = lab_statuses([e for e in entries if e.evidence.learner == learner])
    cells: dict[tuple[str, int], CellStatus] = {}
    for (track_id, level), mapped in (mapping or cell_labs(course)).items():
        missing = [lab for lab in mapped if not (lab in labs and labs[lab].passed)]
        cells[(track_id, level)] = CellStatus(track_id, level, mapped, bool(mapped) and not missing, missing)
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
    mapping = cell_labs(course)
    return {name: progress(course, name, by_learner.get(name, []), mapping) for name in names}
