"""The course: the ladder (tracks x levels, the Senior SRE competency matrix),
the labs placed on it, pass rules and policies; loaded from ``course.yaml``.

>>> course = load_course(Path("course.yaml"))          # doctest: +SKIP
>>> course.cell("security", 1).text[:40]               # doctest: +SKIP
'Understands operating systems security p'
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from ladderlab.course.loading import CROSS_REF_SEP, load_model

LEVELS = (1, 2, 3, 4, 5, 6)
SLUG = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"
LAB_ID = re.compile(r"^(?P<code>[a-z]+)-(?P<level>[1-6])-(?P<slug>[a-z0-9]+(?:-[a-z0-9]+)*)$")

Slug = Annotated[str, StringConstraints(pattern=SLUG, max_length=64)]
Text = Annotated[str, StringConstraints(max_length=10_000)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


def normalise_space(text: str) -> str:
    """``text`` with every run of whitespace one space, none at the ends."""
    return " ".join(text.split())


class Clause(_Model):
    """One claim a ladder cell makes: a verbatim piece of the cell's text (a sentence or a listed skill)."""

    id: Slug
    text: Annotated[str, StringConstraints(min_length=1, max_length=2_000)]


class Track(_Model):
    """One column of ``sre-levels.tsv``: a skill track with its text per level, and each non-empty level's
    text split into its clauses (``clauses[level]``: in order, they rejoin to the level's text)."""

    id: Slug
    code: Annotated[str, StringConstraints(pattern=r"^[a-z]{2,8}$")]
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    levels: dict[int, Text]
    clauses: dict[int, list[Clause]] = Field(default_factory=dict)

    @field_validator("levels")
    @classmethod
    def _all_levels(cls, v: dict[int, str]) -> dict[int, str]:
        if sorted(v) != list(LEVELS):
            raise ValueError(f"expected exactly the levels 1-6 (empty text where the ladder is empty), got {sorted(v)}")
        return v

    @model_validator(mode="after")
    def _clauses_rejoin(self) -> Track:
        problems: list[str] = []
        for level in sorted(self.clauses):
            if level not in self.levels:
                problems.append(f"clauses[{level}]: there is no level {level} (levels are 1-6)")
            elif not self.levels[level].strip():
                problems.append(f"clauses[{level}]: level {level} is empty; an empty cell has no clauses")
        for level, text in sorted(self.levels.items()):
            if not text.strip() or level not in self.clauses:
                if text.strip():
                    problems.append(f"clauses[{level}]: level {level} has text but no clauses; split it into its "
                                    "clauses (verbatim pieces that rejoin to the text)")
                continue
            clauses = self.clauses[level]
            if not clauses:
                problems.append(f"clauses[{level}]: at least one clause is needed")
                continue
            ids = [c.id for c in clauses]
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            if dupes:
                problems.append(f"clauses[{level}]: duplicate clause id {', '.join(dupes)}")
            rest = normalise_space(text)
            for j, clause in enumerate(clauses):
                piece = normalise_space(clause.text)
                if not piece or not rest.startswith(piece) or (rest[len(piece):] and rest[len(piece)] != " "):
                    problems.append(f"clauses[{level}][{j}].text: not the next verbatim piece of the level's text "
                                    f"(expected a piece of: {rest[:80]!r})")
                    break
                rest = rest[len(piece):].lstrip(" ")
            else:
                if rest:
                    problems.append(f"clauses[{level}]: the clauses leave out the end of the level's text: {rest!r}")
        if problems:
            raise ValueError(CROSS_REF_SEP.join(problems) + CROSS_REF_SEP)
        return self

    def clause_ids(self, level: int) -> list[str]:
        return [c.id for c in self.clauses.get(level, [])]


class Competency(_Model):
    """One row of the Senior SRE competency matrix."""

    id: Slug
    area: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    group: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    text: Text


class CompetencyMatrix(_Model):
    title: str
    column: str
    scaling: str
    items: list[Competency]


class Ladder(_Model):
    title: str
    source: str
    tracks: list[Track] = Field(min_length=1)
    competencies: CompetencyMatrix


class CellRef(_Model):
    """A ladder cell a lab demonstrates, and which of the cell's clauses it shows:
    ``{track: security, level: 1, clauses: [iptables]}``."""

    track: Slug
    level: Annotated[int, Field(ge=1, le=6)]
    clauses: list[Slug] = Field(min_length=1)


class Lab(_Model):
    id: Annotated[str, StringConstraints(pattern=LAB_ID.pattern, max_length=80)]
    title: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    environment: Slug
    status: Literal["planned", "published"] = "planned"
    cells: list[CellRef] = Field(min_length=1)
    competencies: list[Slug] = Field(default_factory=list)
    points: Annotated[int, Field(gt=0, le=1000)]
    pass_threshold: Annotated[float, Field(gt=0, le=1)] | None = None

    @property
    def track_code(self) -> str:
        m = LAB_ID.match(self.id)
        assert m
        return m["code"]

    @property
    def level(self) -> int:
        m = LAB_ID.match(self.id)
        assert m
        return int(m["level"])


class Policies(_Model):
    pass_threshold: Annotated[float, Field(gt=0, le=1)] = 0.8
    environment_ttl_minutes: Annotated[int, Field(gt=0, le=7 * 24 * 60)] = 240
    #: The longest a learner's environment may live, from its start, with every ``lab.extend(minutes)``
    #: (unset: twice ``environment_ttl_minutes``, at most a week).
    environment_max_minutes: Annotated[int, Field(gt=0, le=7 * 24 * 60)] | None = None

    @model_validator(mode="after")
    def _max_covers_ttl(self) -> Policies:
        if self.environment_max_minutes is not None and self.environment_max_minutes < self.environment_ttl_minutes:
            raise ValueError(f"environment_max_minutes ({self.environment_max_minutes}) is shorter than "
                             f"environment_ttl_minutes ({self.environment_ttl_minutes}): an environment would "
                             "start past its limit")
        return self

    @property
    def environment_limit_minutes(self) -> int:
        """How long an environment may live from its start, extensions included."""
        if self.environment_max_minutes is not None:
            return self.environment_max_minutes
        return min(2 * self.environment_ttl_minutes, 7 * 24 * 60)


class Cell(_Model):
    track: Track
    level: int

    @property
    def text(self) -> str:
        return self.track.levels[self.level]

    @property
    def clauses(self) -> list[Clause]:
        """The cell's clauses in order (none for an empty cell)."""
        return list(self.track.clauses.get(self.level, []))


class Course(_Model):
    id: Slug
    title: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    ladder: Ladder
    labs: list[Lab] = Field(default_factory=list)
    policies: Policies = Policies()
    #: Trainer-defined groups of learners: ``cohorts: {autumn-2026: [ada, bo]}``.
    cohorts: dict[Slug, list[Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")]]] = \
        Field(default_factory=dict)

    @model_validator(mode="after")
    def _cross_references(self) -> Course:
        problems: list[str] = []
        ids = [t.id for t in self.ladder.tracks]
        codes = [t.code for t in self.ladder.tracks]
        for where, label, seq in (("ladder.tracks", "track id", ids), ("ladder.tracks", "track code", codes),
                                  ("ladder.competencies.items", "competency id",
                                   [c.id for c in self.ladder.competencies.items]),
                                  ("labs", "lab id", [lab.id for lab in self.labs])):
            dupes = sorted({x for x in seq if seq.count(x) > 1})
            if dupes:
                problems.append(f"{where}: duplicate {label} {', '.join(dupes)}")
        tracks = {t.id: t for t in self.ladder.tracks}
        by_code = {t.code: t for t in self.ladder.tracks}
        comps = {c.id for c in self.ladder.competencies.items}
        for i, lab in enumerate(self.labs):
            where = f"labs[{i}]"
            home = by_code.get(lab.track_code)
            if home is None:
                problems.append(f"{where}: id starts with {lab.track_code!r}, which is no track code "
                                f"(expected one of {', '.join(sorted(by_code))})")
            for j, ref in enumerate(lab.cells):
                track = tracks.get(ref.track)
                if track is None:
                    problems.append(f"{where}.cells[{j}].track: unknown track {ref.track!r} "
                                    f"(expected one of {', '.join(ids)})")
                elif not track.levels[ref.level].strip():
                    problems.append(f"{where}.cells[{j}]: the ladder cell {ref.track} L{ref.level} is empty; "
                                    "a lab cannot demonstrate it")
                else:
                    known = track.clause_ids(ref.level)
                    for k, clause in enumerate(ref.clauses):
                        if clause not in known:
                            problems.append(f"{where}.cells[{j}].clauses[{k}]: unknown clause {clause!r} of "
                                            f"{ref.track} L{ref.level} (expected one of {', '.join(known)})")
                    dupes = sorted({c for c in ref.clauses if ref.clauses.count(c) > 1})
                    if dupes:
                        problems.append(f"{where}.cells[{j}].clauses: duplicate clause {', '.join(dupes)}")
            if home is not None and not any(r.track == home.id and r.level == lab.level for r in lab.cells):
                problems.append(f"{where}.cells: a lab named {lab.id} must demonstrate the cell "
                                f"{home.id} L{lab.level}")
            for j, comp in enumerate(lab.competencies):
                if comp not in comps:
                    problems.append(f"{where}.competencies[{j}]: unknown competency {comp!r}")
        if problems:
            raise ValueError(CROSS_REF_SEP.join(problems) + CROSS_REF_SEP)
        return self

    def track(self, track_id: str) -> Track:
        for t in self.ladder.tracks:
            if t.id == track_id:
                return t
        raise KeyError(track_id)

    def cell(self, track_id: str, level: int) -> Cell:
        return Cell(track=self.track(track_id), level=level)

    def lab(self, lab_id: str) -> Lab:
        for lab in self.labs:
            if lab.id == lab_id:
                return lab
        raise KeyError(lab_id)

    def threshold(self, lab: Lab) -> float:
        return lab.pass_threshold if lab.pass_threshold is not None else self.policies.pass_threshold

    def summary(self) -> str:
        """``7 tracks, 40 competencies, 12 labs``: what ``course check`` reports."""
        return (f"{len(self.ladder.tracks)} tracks, {len(self.ladder.competencies.items)} competencies, "
                f"{len(self.labs)} labs")


def load_course(path: Path, display: str | None = None) -> Course:
    """Load and validate ``course.yaml``; a bad file raises one ConfigError (exit 2)."""
    return load_model(path, Course, display or path.name)
