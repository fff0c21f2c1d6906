"""``ladderlab new lab``: a scaffold into a throwaway copy of the course (no Docker) loads, says exactly what
remains to fill, passes the structural tests once filled, and bad requests write nothing."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import nbformat
import pytest
import yaml

from ladderlab.cli import main
from ladderlab.config import Settings
from ladderlab.course import load_course
from ladderlab.course import scaffold as sc
from ladderlab.course.labs import is_check_cell, load_lab, nbg
from ladderlab.errors import ConfigError, UsageError
from ladderlab.grading.checks import load_graders

NEW = "sec-3-scaffold-probe"


@pytest.fixture
def course_copy(tmp_path: Path, root: Path) -> Path:
    """A throwaway course root: the real course.yaml, environments and graders, and one finished lab."""
    shutil.copy(root / "course.yaml", tmp_path / "course.yaml")
    for name in ("environments", "graders", "labs/sec-1-iptables-hardening"):
        shutil.copytree(root / name, tmp_path / name,
                        ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
    return tmp_path


def _settings(tmp: Path) -> Settings:
    return Settings(root=tmp, cache_dir=tmp / ".cache")


def _clause(tmp: Path, track: str = "security", level: int = 3) -> str:
    menu = sc.cell_clauses(load_course(tmp / "course.yaml").track(track), level)
    assert menu, f"{track} L{level} has no clauses in course.yaml"
    return menu[0][0]


def _scaffold(tmp: Path, lab_id: str = NEW, **kw):
    kw.setdefault("env", "firewall")
    kw.setdefault("clauses", [_clause(tmp)])
    return sc.scaffold_lab(_settings(tmp), lab_id, registry=load_graders(tmp), **kw)


def _tree(tmp: Path) -> dict[str, str]:
    """Every file under the course root and its content hash (what "nothing written" compares)."""
    return {p.relative_to(tmp).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(tmp.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


def _placeholder_registry(tmp: Path):
    return {**load_graders(tmp), sc.PLACEHOLDER_GRADER: lambda ctx, **_: None}


def test_scaffold_writes_a_lab_that_loads_and_names_what_remains(course_copy):
    before = (course_copy / "course.yaml").read_text()
    labs_before = [lab.id for lab in load_course(course_copy / "course.yaml").labs]
    clause = _clause(course_copy)
    made = _scaffold(course_copy, points=7, title="Probe the scaffold")
    lab_dir = course_copy / "labs" / NEW
    assert {f for f in made.files} == {
        f"labs/{NEW}/lab.yaml", f"labs/{NEW}/{NEW}.ipynb", f"labs/{NEW}/README.md", "course.yaml",
        f"labs/{NEW}/decoys/{sc.DECOY_NAME}.yaml", f"labs/{NEW}/solutions/{sc.SOLUTION_NAME}.yaml"}
    assert all((course_copy / f).is_file() for f in made.files)
    assert not list(course_copy.glob(".new-lab-*")) and not list(course_copy.glob(".course.yaml*"))

    # course.yaml: the old text, comments included, is untouched; the entry is appended and valid
    after = (course_copy / "course.yaml").read_text()
    assert after.startswith(before.rstrip("\n")) and after.count("\n# ") == before.count("\n# ")
    course = load_course(course_copy / "course.yaml")
    entry = course.lab(NEW)
    assert (entry.status, entry.environment, entry.points, entry.title) == ("published", "firewall", 7,
                                                                           "Probe the scaffold")
    assert [(c.track, c.level, c.clauses) for c in entry.cells] == [("security", 3, [clause])]
    assert [lab.id for lab in course.labs] == [*labs_before, NEW]

    # while markers remain, loading the lab lists each of them, by file and line or notebook cell
    with pytest.raises(ConfigError) as info:
        load_lab(_settings(course_copy), course, NEW, registry=load_graders(course_copy))
    assert f"labs/{NEW} is unfinished" in str(info.value)
    assert len(info.value.problems) == len(made.remaining) >= 10
    wheres = {w for w, _ in made.remaining}
    assert f"labs/{NEW}/lab.yaml:6" in wheres  # the check's title
    assert any(w.startswith("course.yaml:") for w in wheres)  # the title and pass_threshold of the entry
    assert any(w.startswith(f"labs/{NEW}/{NEW}.ipynb cells[") and "grade_id" in w for w in wheres)
    assert (course_copy / "labs" / "sec-1-iptables-hardening").is_dir()
    assert sc.unfinished(course_copy, "sec-1-iptables-hardening") == []

    # apart from the markers and the placeholder grader, it is a coherent lab
    lab = load_lab(_settings(course_copy), course, NEW, registry=_placeholder_registry(course_copy),
                   unfinished_ok=True)
    (check,) = lab.checks
    assert check.spec.grader == sc.PLACEHOLDER_GRADER and check.hidden and check.spec.hints
    assert lab.max_score == entry.points == 7  # points: one value, in the three places each format needs
    cells = [c for c in lab.source.cells if is_check_cell(c)]
    assert [(nbg(c)["grade_id"], nbg(c)["points"]) for c in cells] == [(f"check-{check.id}", 7)]
    assert [r.checks for r in lab.spec.requirements] == [[check.id]]
    (decoy,) = lab.decoys
    assert decoy.spec.violates == lab.spec.requirements[0].id and decoy.spec.must_fail == [check.id]
    assert list(decoy.spec.cells) == lab.solution_ids() == [sc.SOLUTION_CELL]
    assert [s.name for s in lab.solutions] == [sc.SOLUTION_NAME]
    nb = nbformat.read(lab_dir / f"{NEW}.ipynb", as_version=4)
    nbformat.validate(nb)
    assert f'ladderlab.start("{NEW}")' in nb.cells[1].source


def _fill(tmp: Path, lab_id: str = NEW) -> None:
    """What an author does, in the least: every marker replaced, and a real check named."""
    for path in [*(tmp / "labs" / lab_id).rglob("*.*"), tmp / "course.yaml"]:
        text = path.read_text()
        text = text.replace(sc.PLACEHOLDER_GRADER, "firewall.default_deny")
        path.write_text(text.replace(sc.MARKER, "filled in"))


def test_a_filled_scaffold_passes_the_structural_tests(course_copy):
    made = _scaffold(course_copy)
    _fill(course_copy)
    # an editor's hidden copies (JupyterLab's checkpoints) do not count
    checkpoints = course_copy / "labs" / NEW / ".ipynb_checkpoints"
    checkpoints.mkdir()
    (checkpoints / f"{NEW}-checkpoint.ipynb").write_text(f'{{"cells": [{{"source": "{sc.MARKER}"}}]}}')
    assert sc.unfinished(course_copy, NEW) == []
    course = load_course(course_copy / "course.yaml")
    lab = load_lab(_settings(course_copy), course, NEW, registry=load_graders(course_copy))
    # tests/unit/test_requirements.py and test_sync.py, for this lab
    served = {c for r in lab.spec.requirements for c in r.checks}
    assert set(lab.spec.checks) == served
    for req in lab.spec.requirements:
        violating = [d for d in lab.decoys if d.spec.violates == req.id]
        assert violating and all(set(d.spec.must_fail) <= set(req.checks) for d in violating)
    assert all(c.spec.hints for c in lab.checks) and lab.solutions
    assert list((course_copy / "labs" / NEW / "decoys").glob("*.yaml"))
    assert lab.environment == "firewall" and made.lab_id == NEW


def test_the_cli_scaffolds_and_lists_what_remains(course_copy, monkeypatch, capsys):
    monkeypatch.setenv("LADDERLAB_ROOT", str(course_copy))
    monkeypatch.setenv("LADDERLAB_CACHE_DIR", str(course_copy / ".cache"))
    assert main(["new", "lab", NEW, "--env", "firewall", "--clauses", _clause(course_copy)]) == 0
    out = capsys.readouterr().out
    assert f"{NEW}: " in out and "places to fill" in out and f"labs/{NEW}/lab.yaml:" in out
    assert main(["new", "lab", NEW, "--env", "firewall", "--clauses", _clause(course_copy)]) == 2
    assert "already in course.yaml" in capsys.readouterr().err


@pytest.mark.parametrize(("lab_id", "kw", "message"), [
    ("Sec-3-upper", {}, "expected <track code>-<level 1-6>-<slug>"),
    ("sec-3-", {}, "expected <track code>-<level 1-6>-<slug>"),
    ("sec3-slug", {}, "expected <track code>-<level 1-6>-<slug>"),
    ("sec-7-too-high", {}, "level 7 is not a ladder level"),
    ("sec-0-too-low", {}, "level 0 is not a ladder level"),
    ("xyz-3-no-track", {}, "'xyz' is no track code"),
    ("sys-1-empty-cell", {}, "is empty"),
    (NEW, {"env": "nowhere"}, "no environments/nowhere/env.yaml"),
    ("sec-1-iptables-hardening", {"clauses": []}, "already in course.yaml"),
    (NEW, {"clauses": []}, "--clauses ID[,ID...]"),
    (NEW, {"clauses": ["no-such-clause"]}, "no-such-clause is no clause of Security L3"),
    (NEW, {"points": 0}, "--points 0"),
    (NEW, {"title": "   "}, "--title"),
    (NEW, {"title": "two\nlines"}, "--title: one line"),
])
def test_a_bad_request_says_why_and_writes_nothing(course_copy, lab_id, kw, message):
    before = _tree(course_copy)
    with pytest.raises(UsageError, match=re.escape(message)):
        _scaffold(course_copy, lab_id, **kw)
    assert _tree(course_copy) == before


def test_an_existing_folder_is_not_overwritten(course_copy):
    (course_copy / "labs" / NEW).mkdir()
    (course_copy / "labs" / NEW / "notes.md").write_text("mine")
    before = _tree(course_copy)
    with pytest.raises(UsageError, match=f"labs/{NEW} already exists"):
        _scaffold(course_copy)
    assert _tree(course_copy) == before


def test_a_failure_after_staging_leaves_nothing_behind(course_copy, monkeypatch):
    before = _tree(course_copy)

    def broken(*_a, **_k):
        raise ConfigError("labs/x/lab.yaml", [("checks", "simulated")])

    monkeypatch.setattr(sc, "load_lab", broken)
    with pytest.raises(ConfigError, match="simulated"):
        _scaffold(course_copy)
    assert _tree(course_copy) == before
    assert not list(course_copy.glob(".new-lab-*"))


def test_a_course_changed_meanwhile_is_not_overwritten(course_copy, monkeypatch):
    real = sc.load_lab

    def and_someone_edits(*a, **k):
        with (course_copy / "course.yaml").open("a") as f:
            f.write("# another author's edit\n")
        return real(*a, **k)

    monkeypatch.setattr(sc, "load_lab", and_someone_edits)
    with pytest.raises(UsageError, match=r"course\.yaml changed"):
        _scaffold(course_copy)
    assert (course_copy / "course.yaml").read_text().endswith("# another author's edit\n")
    assert not (course_copy / "labs" / NEW).exists()


@pytest.mark.parametrize("indent", ["", "  "])
def test_the_entry_goes_at_the_end_of_labs_whatever_follows(indent):
    text = ("id: c  # the course\nlabs:\n"
            f"{indent}- id: a-1-x\n{indent}  title: t\n{indent}  # keep me\n\n"
            "# cohorts, a trainer's groups\ncohorts:\n  autumn: [ada]\n")
    entry = f"{indent}- id: a-1-new\n{indent}  title: n\n"
    got = sc.course_text_with(text, entry)
    assert got == text.replace("  # keep me\n", "  # keep me\n" + entry, 1)  # the entry's own comment stays with it
    data = yaml.safe_load(got)
    assert [lab["id"] for lab in data["labs"]] == ["a-1-x", "a-1-new"] and data["cohorts"] == {"autumn": ["ada"]}
    with pytest.raises(UsageError, match="inline"):
        sc.course_text_with("id: c\nlabs: []\n", entry)
    assert yaml.safe_load(sc.course_text_with("id: c\n", entry))["labs"][0]["id"] == "a-1-new"


def test_points_agree_wherever_they_are_written(settings):
    """A check's points are written by hand in several places: lab.yaml (the value), the check cell's nbgrader
    metadata and the course.yaml total (both verified when the lab loads), and in prose: the check cell's
    comment "(N points)", the lab README's check table and the top-level README's lab table. The prose agrees."""
    import re as _re

    course = load_course(settings.course_file)
    registry = load_graders(settings.root)
    top = (settings.root / "README.md").read_text()
    compared = 0
    for entry in course.labs:
        if entry.status != "published":
            continue
        lab = load_lab(settings, course, entry.id, registry=registry)
        points = {c.id: c.spec.points for c in lab.checks}
        assert lab.max_score == entry.points
        for check in lab.checks:
            cell = lab.source_cell(check.grade_id)
            assert float(nbg(cell)["points"]) == check.spec.points
            for said in _re.findall(r"\((\d+(?:\.\d+)?) points?\)", cell.source):
                assert float(said) == check.spec.points, (lab.id, check.id, "check cell comment")
                compared += 1
        readme = (lab.directory / "README.md").read_text() if (lab.directory / "README.md").is_file() else ""
        for cid, said in _re.findall(r"^\| `([a-z0-9-]+)` \| (\d+(?:\.\d+)?) \|", readme, _re.M):
            if cid in points:
                assert float(said) == points[cid], (lab.id, cid, f"labs/{lab.id}/README.md")
                compared += 1
        row = next((line for line in top.splitlines() if line.startswith(f"| `{lab.id}` |")), "")
        assert row, f"README.md's lab table has no row for {lab.id}"
        for cid, said in _re.findall(r"([a-z0-9-]+) \((\d+(?:\.\d+)?)\)", row):
            if cid in points:
                assert float(said) == points[cid], (lab.id, cid, "README.md labs table")
                compared += 1
    assert compared
