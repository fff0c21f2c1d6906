"""Readers for the two ladder documents ``course.yaml`` encodes.

``seeds/sre-levels.tsv`` is a levels x tracks table; ``seeds/senior-sre-competencies.md``
is a Markdown table whose first three columns are filled only where a value
changes. Cell text is returned verbatim (inner spacing kept), so a test can
prove ``course.yaml`` quotes the documents word for word.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LevelsTable:
    title: str
    tracks: list[str]
    cells: dict[str, dict[int, str]]  # track name -> level -> text ("" where the seed is empty)


@dataclass(frozen=True)
class CompetencyRow:
    area: str
    group: str
    name: str
    text: str


@dataclass(frozen=True)
class CompetencyMatrix:
    title: str
    column: str
    scaling: str
    rows: list[CompetencyRow]


def read_levels_tsv(path: Path) -> LevelsTable:
    lines = path.read_text(encoding="utf-8").split("\n")
    title = next(line.strip() for line in lines if line.strip() and "\t" not in line)
    header_at = next(i for i, line in enumerate(lines) if line.startswith("Level/Skill\t"))
    tracks = lines[header_at].split("\t")[1:]
    cells: dict[str, dict[int, str]] = {t: {} for t in tracks}
    for line in lines[header_at + 1 :]:
        if not line.strip():
            continue
        fields = line.split("\t")
        level = int(fields[0])
        for track, text in zip(tracks, fields[1:], strict=True):
            cells[track][level] = text
    return LevelsTable(title=title, tracks=tracks, cells=cells)


def _md_cells(line: str) -> list[str]:
    inner = line.strip()
    inner = inner[1:] if inner.startswith("|") else inner
    inner = inner[:-1] if inner.endswith("|") else inner
    return [c.strip() for c in inner.split("|")]


def read_competency_md(path: Path) -> CompetencyMatrix:
    lines = path.read_text(encoding="utf-8").split("\n")
    title = next(line.lstrip("# ").strip() for line in lines if line.startswith("# "))
    table = [line for line in lines if line.lstrip().startswith("|")]
    column = _md_cells(table[0])[3]
    rows: list[CompetencyRow] = []
    scaling = area = group = ""
    for line in table[1:]:
        cells = _md_cells(line)
        if all(re.fullmatch(r":?-+:?", c) for c in cells if c):
            continue  # the |--- |:--- | alignment row
        if cells[2] == "scaling of competencies":
            scaling = cells[3]
            continue
        area = cells[0] or area
        group = cells[1] or group
        rows.append(CompetencyRow(area=area, group=group, name=cells[2], text=cells[3]))
    return CompetencyMatrix(title=title, column=column, scaling=scaling, rows=rows)
