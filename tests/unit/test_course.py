"""course.yaml quotes the ladder documents word for word, and bad course files
fail with one clear message naming file and field."""

from __future__ import annotations

import re
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
    # every lab folder is a published lab of course.yaml and the other way round (no count to update per lab)
    folders = {p.name for p in (ROOT / "labs").iterdir() if p.is_dir()}
    assert folders and {lab.id for lab in course.labs if lab.status == "published"} == folders
    for lab in course.labs:
        for ref in lab.cells:
            assert course.cell(ref.track, ref.level).text.strip()
        # the course default, unless the lab sets its own
        assert course.threshold(lab) == (lab.pass_threshold or course.policies.pass_threshold)
    assert course.policies.pass_threshold == 0.8
    assert course.threshold(course.lab("sec-1-iptables-hardening")) == 1.0


def _words(text: str) -> str:
    return " ".join(text.split())


def test_every_non_empty_cell_is_split_into_clauses_that_rejoin_to_its_text(course):
    """Every non-empty cell's clauses are verbatim pieces of its text, in order: rejoined (whitespace
    normalised) they are the text, nothing dropped or added. Empty cells have no clauses."""
    kebab = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
    split = 0
    for track in course.ladder.tracks:
        for level, text in track.levels.items():
            clauses = course.cell(track.id, level).clauses
            if not text.strip():
                assert clauses == [], (track.id, level)
                continue
            assert clauses, f"{track.id} L{level} has no clauses"
            assert _words(" ".join(c.text for c in clauses)) == _words(text), (track.id, level)
            at = 0
            for c in clauses:  # each one a piece of the text itself, found in order
                found = _words(text).find(_words(c.text), at)
                assert found == at, (track.id, level, c.id)
                at = found + len(_words(c.text)) + 1
            ids = [c.id for c in clauses]
            assert all(kebab.match(i) for i in ids) and len(set(ids)) == len(ids), (track.id, level)
            split += 1
    assert split == 32  # 36 cells, 4 of them empty
    # a cell that lists several skills is split by skill, not only by sentence
    assert [c.id for c in course.cell("security", 2).clauses] == [
        "basic-cryptography", "ssh-configuration", "tls-configuration", "key-sizes-algorithms-versions",
        "authentication-and-authorization", "encryption-in-transit-and-at-rest", "encrypted-networking",
        "reliability-reasoning"]


def test_the_six_labs_claim_only_the_clauses_they_show(course):
    claims = {lab.id: [(r.track, r.level, r.clauses) for r in lab.cells] for lab in course.labs}
    assert claims["sec-1-iptables-hardening"] == [("security", 1, ["iptables"])]
    assert claims["net-2-dns-authoritative-zone"] == [("networking", 2, ["dns"])]
    assert claims["sec-2-tls-server"] == [
        ("security", 2, ["basic-cryptography", "tls-configuration", "key-sizes-algorithms-versions"])]
    assert claims["sre-2-golden-signal-alerts"] == [("sre", 2, ["golden-signal-alerts", "cloud-native-monitoring"])]
    assert claims["sre-4-slo-burn-rate-alerts"] == [("sre", 4, ["sli-and-slo"])]
    assert claims["sre-5-strace-debugging"] == [("sre", 5, ["strace"])]


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
    (lambda d: d["labs"][0].update(cells=[{"track": "systems-engineering", "level": 1, "clauses": ["x"]}]),
     "labs[0].cells[0]", "is empty"),
    # a lab names the clauses of each cell it demonstrates: at least one, each one of that cell's
    (lambda d: d["labs"][0]["cells"][0].pop("clauses"), "labs[0].cells[0].clauses", "required field is missing"),
    (lambda d: d["labs"][0]["cells"][0].update(clauses=[]), "labs[0].cells[0].clauses", "at least 1 item"),
    (lambda d: d["labs"][2]["cells"][0].update(clauses=["tls-configuration", "iptables"]),
     "labs[2].cells[0].clauses[1]", "unknown clause 'iptables' of security L2"),
    (lambda d: d["labs"][2]["cells"][0].update(clauses=["tls-configuration", "tls-configuration"]),
     "labs[2].cells[0].clauses", "duplicate clause tls-configuration"),
    # clauses are verbatim pieces of the cell's text, in order, nothing dropped
    (lambda d: d["ladder"]["tracks"][3]["clauses"][2][1].update(text="Can configure SSH well"),
     "ladder.tracks[3].clauses[2][1].text", "not the next verbatim piece"),
    (lambda d: d["ladder"]["tracks"][3]["clauses"][2].pop(), "ladder.tracks[3].clauses[2]",
     "leave out the end of the level's text: 'Can reason about their reliability.'"),
    (lambda d: d["ladder"]["tracks"][3]["clauses"][2].pop(0), "ladder.tracks[3].clauses[2][0].text",
     "not the next verbatim piece"),
    (lambda d: d["ladder"]["tracks"][3]["clauses"][2].reverse(), "ladder.tracks[3].clauses[2][0].text",
     "not the next verbatim piece"),
    (lambda d: d["ladder"]["tracks"][3]["clauses"][1][0].update(text="Understands operating systems security"),
     "ladder.tracks[3].clauses[1][1].text", "not the next verbatim piece"),  # a shortened clause: the next one misfits
    (lambda d: d["ladder"]["tracks"][3]["clauses"].pop(2), "ladder.tracks[3].clauses[2]", "has text but no clauses"),
    (lambda d: d["ladder"]["tracks"][3]["clauses"].update({2: []}), "ladder.tracks[3].clauses[2]",
     "at least one clause"),
    (lambda d: d["ladder"]["tracks"][2]["clauses"].update({6: [{"id": "x", "text": "x"}]}),
     "ladder.tracks[2].clauses[6]", "level 6 is empty"),
    (lambda d: d["ladder"]["tracks"][3]["clauses"][1][0].update(id="IP Tables"), "ladder.tracks[3].clauses[1][0].id",
     "should match pattern"),
    (lambda d: d["ladder"]["tracks"][3]["clauses"][1][1].update(id="iptables"), "ladder.tracks[3].clauses[1]",
     "duplicate clause id iptables"),
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
