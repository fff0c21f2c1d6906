"""course.yaml quotes the ladder documents word for word, and bad course files
fail with one clear message naming file and field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ladderlab.course import load_course
from ladderlab.course.sources import read_competency_md, read_levels_tsv
from ladderlab.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "seeds"


@pytest.fixture(scope="module")
def course():
    return load_course(ROOT / "course.yaml")


def test_every_track_and_level_is_quoted_verbatim(course):
    table = read_levels_tsv(ROOT / "seeds" / "sre-levels.tsv")
    assert [t.name for t in course.ladder.tracks] == table.tracks
    assert course.ladder.title == table.title
    for track in course.ladder.tracks:
        assert track.levels == table.cells[track.name], track.name


def test_empty_ladder_cells_stay_empty(course):
    assert course.cell("systems-engineering", 1).text == ""
    assert course.cell("networking", 6).text == ""
    assert course.cell("security", 1).text.startswith("Understands operating systems security principles")


def test_competency_matrix_is_quoted_verbatim(course):
    matrix = read_competency_md(ROOT / "seeds" / "senior-sre-competencies.md")
    comps = course.ladder.competencies
    assert (comps.title, comps.column, comps.scaling) == (matrix.title, matrix.column, matrix.scaling)
    assert [(c.area, c.group, c.name, c.text) for c in comps.items] == [
        (r.area, r.group, r.name, r.text) for r in matrix.rows]
    assert len(comps.items) == 27


@pytest.mark.skipif(not SHARED.is_dir(), reason="the shared seeds folder is not beside this checkout")
def test_in_repo_seeds_match_the_shared_originals():
    for name in ("sre-levels.tsv", "senior-sre-competencies.md"):
        assert (ROOT / "seeds" / name).read_bytes() == (SHARED / name).read_bytes()


def test_labs_are_mapped_to_non_empty_cells(course):
    assert len(course.labs) == 6
    for lab in course.labs:
        for ref in lab.cells:
            assert course.cell(ref.track, ref.level).text.strip()
        # the course default, unless the lab sets its own
        assert course.threshold(lab) == (lab.pass_threshold or course.policies.pass_threshold)
    assert course.policies.pass_threshold == 0.8
    assert course.threshold(course.lab("sec-1-iptables-hardening")) == 1.0


def _write(tmp_path: Path, data) -> Path:
    path = tmp_path / "course.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def _base() -> dict:
    return yaml.safe_load((ROOT / "course.yaml").read_text())


@pytest.mark.parametrize(("mutate", "where", "expected"), [
    (lambda d: d["labs"][0]["cells"][0].update(level=9), "labs[0].cells[0].level", "less than or equal to 6"),
    (lambda d: d["labs"][0]["cells"][0].update(track="cooking"), "labs[0].cells[0].track", "unknown track"),
    (lambda d: d["labs"][0].pop("points"), "labs[0].points", "required field is missing"),
    (lambda d: d["labs"][1].update(id="Bad Id"), "labs[1].id", "should match pattern"),
    (lambda d: d["labs"][1].update(id="xyz-2-dns"), "labs[1]", "no track code"),
    (lambda d: d["labs"][0].update(cells=[{"track": "systems-engineering", "level": 1}]), "labs[0].cells[0]",
     "is empty"),
    (lambda d: d["ladder"]["tracks"][0]["levels"].pop(3), "ladder.tracks[0].levels", "exactly the levels 1-6"),
    (lambda d: d.update(colour="blue"), "colour", "unknown field"),
    (lambda d: d["labs"].append(dict(d["labs"][0])), "labs", "duplicate lab id"),
    (lambda d: d["policies"].update(pass_threshold=1.5), "policies.pass_threshold", "less than or equal to 1"),
])
def test_bad_course_names_file_field_and_expectation(tmp_path, mutate, where, expected):
    data = _base()
    mutate(data)
    with pytest.raises(ConfigError) as info:
        load_course(_write(tmp_path, data))
    assert info.value.exit_code == 2
    matching = [(w, what) for w, what in info.value.problems if w == where and expected in what]
    assert matching, info.value.problems
    assert str(info.value).startswith("course.yaml: ")


@pytest.mark.parametrize(("text", "expected"), [
    ("", "file is empty"),
    ("- a\n- b\n", "expected a mapping"),
    ("id: [unclosed\n", "invalid YAML"),
    ("\xff\xfe", None),
])
def test_unparseable_course_files(tmp_path, text, expected):
    path = tmp_path / "course.yaml"
    if expected is None:
        path.write_bytes(b"\xff\xfe\x00")
        expected = "not UTF-8"
    else:
        path.write_text(text)
    with pytest.raises(ConfigError, match=expected):
        load_course(path)


def test_cli_reports_bad_course_in_one_line_and_exits_2(tmp_path):
    (tmp_path / "environments").mkdir()
    data = _base()
    data["labs"][0]["cells"][0]["level"] = "seven"
    _write(tmp_path, data)
    proc = subprocess.run([sys.executable, "-m", "ladderlab.cli", "course", "check"], capture_output=True,
                          text=True, env={"LADDERLAB_ROOT": str(tmp_path), "PATH": "/usr/bin:/bin"}, check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "course.yaml: labs[0].cells[0].level: input should be a valid integer" in proc.stderr
    assert proc.stdout == ""
