"""Lab definitions: the shipped labs load; broken ones fail naming the file and field."""

from __future__ import annotations

import shutil
import subprocess
import sys

import nbformat
import pytest
import yaml

from ladderlab.config import Settings
from ladderlab.course import load_course
from ladderlab.course.labs import check_ids_in, chosen_labs, load_lab, load_labs
from ladderlab.errors import ConfigError, UsageError
from ladderlab.grading.checks import load_graders

LAB = "sec-1-iptables-hardening"


@pytest.fixture
def course_copy(tmp_path, root):
    """A throwaway course root with the real course.yaml, graders and one lab to break."""
    for name in ("course.yaml",):
        shutil.copy(root / name, tmp_path / name)
    (tmp_path / "environments").mkdir()
    shutil.copytree(root / "graders", tmp_path / "graders", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(root / "labs" / LAB, tmp_path / "labs" / LAB)
    return tmp_path


def load(tmp):
    settings = Settings(root=tmp, cache_dir=tmp / ".cache")
    return load_lab(settings, load_course(tmp / "course.yaml"), LAB, registry=load_graders(tmp))


def edit_yaml(path, fn):
    data = yaml.safe_load(path.read_text())
    fn(data)
    path.write_text(yaml.safe_dump(data))


def edit_nb(path, fn):
    nb = nbformat.read(path, as_version=4)
    fn(nb)
    nbformat.write(nb, path)


def test_published_labs_load_with_decoys(settings):
    course = load_course(settings.course_file)
    registry = load_graders(settings.root)
    for entry in course.labs:
        if entry.status != "published":
            continue
        lab = load_lab(settings, course, entry.id, registry=registry)
        assert lab.max_score == entry.points
        assert len(lab.decoys) >= 3
        assert {c.id for c in lab.checks} == set(lab.spec.checks)


@pytest.mark.parametrize(("where", "change", "message"), [
    ("yaml", lambda d: d["checks"]["default-deny"].update(grader="firewall.nope"),
     "lab.yaml: checks.default-deny.grader: no check 'firewall.nope'"),
    ("yaml", lambda d: d["checks"]["default-deny"].update(args={"hots": "target"}),
     "lab.yaml: checks.default-deny.args: do not fit firewall.default_deny"),
    ("yaml", lambda d: d["checks"]["default-deny"].update(points=3),
     "points add up to 11"),
    ("yaml", lambda d: d["checks"].update({"extra-check": {"title": "t", "grader": "firewall.default_deny",
                                                           "points": 1, "args": {"host": "target"}}}),
     "checks.extra-check: no check cell in the notebook calls this check"),
    ("yaml", lambda d: d["checks"]["default-deny"].pop("title"), "checks.default-deny.title"),
    ("nb", lambda nb: setattr(nb.cells[next(i for i, c in enumerate(nb.cells) if 'default-deny")' in c.source)],
                              "source", 'lab.check("default-deny")\nprint(1)'),
     "a check cell must hold exactly one lab.check"),
    ("nb", lambda nb: nb.cells[next(i for i, c in enumerate(nb.cells) if 'default-deny")' in c.source)]
     .metadata["nbgrader"].update(points=5), "metadata.nbgrader.points: 5 but lab.yaml gives check 'default-deny' 2"),
])
def test_broken_labs_name_file_and_field(course_copy, where, change, message):
    lab_dir = course_copy / "labs" / LAB
    if where == "yaml":
        edit_yaml(lab_dir / "lab.yaml", change)
    else:
        edit_nb(lab_dir / f"{LAB}.ipynb", change)
    with pytest.raises(ConfigError) as exc:
        load(course_copy)
    assert message in str(exc.value)
    assert f"labs/{LAB}/" in str(exc.value)


def test_broken_decoys_name_file_and_field(course_copy):
    decoy = course_copy / "labs" / LAB / "decoys" / "stateless.yaml"
    edit_yaml(decoy, lambda d: d.update(must_fail=["no-such-check"], cells={"nope": "pass"}))
    with pytest.raises(ConfigError) as exc:
        load(course_copy)
    text = str(exc.value)
    assert f"labs/{LAB}/decoys/stateless.yaml: must_fail[0]: no check 'no-such-check'" in text
    assert "cells.nope: no solution cell 'nope'" in text


def test_autograded_answer_cells_are_refused(course_copy):
    def make(nb):
        cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "persist")
        cell.metadata["nbgrader"].update(grade=True, points=1)

    edit_nb(course_copy / "labs" / LAB / f"{LAB}.ipynb", make)
    with pytest.raises(ConfigError, match="autograded answer cells"):
        load(course_copy)


def test_a_lab_loads_with_the_registry_it_is_given_and_never_imports_grading(root):
    """The course layer names checks; the caller supplies them. Here a registry of plain functions, in a
    fresh interpreter, so that nothing else could have imported the grading package."""
    code = f"""
import sys
from ladderlab.config import Settings
from ladderlab.course import load_course
from ladderlab.course.labs import load_lab
from ladderlab.errors import ConfigError
import inspect
import yaml

settings = Settings.from_env()
course = load_course(settings.course_file)
spec = yaml.safe_load((settings.root / "labs" / {LAB!r} / "lab.yaml").read_text())

def fake(names):  # a check that takes exactly the keyword arguments lab.yaml passes it
    def fn(ctx, **kwargs):
        return None
    P = inspect.Parameter
    fn.__signature__ = inspect.Signature([P("ctx", P.POSITIONAL_OR_KEYWORD)] + [P(n, P.KEYWORD_ONLY) for n in names])
    return fn

registry = {{c["grader"]: fake(c.get("args", {{}})) for c in spec["checks"].values()}}
lab = load_lab(settings, course, {LAB!r}, registry=registry)
assert lab.checks and all(chk.fn is registry[chk.spec.grader] for chk in lab.checks)
try:
    load_lab(settings, course, {LAB!r}, registry={{}})
except ConfigError as exc:
    assert "(known: none)" in str(exc), exc
else:
    raise AssertionError("an empty registry loaded")
grading = sorted(m for m in sys.modules if m.startswith("ladderlab.grading"))
assert not grading, grading
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_chosen_labs_are_published_and_known(settings):
    course = load_course(settings.course_file)
    published = [lab.id for lab in course.labs if lab.status == "published"]
    assert chosen_labs(course) == published and chosen_labs(course, []) == published
    assert chosen_labs(course, [LAB]) == [LAB]
    with pytest.raises(UsageError, match="unknown lab 'x-1-nope'"):
        chosen_labs(course, [LAB, "x-1-nope"])
    planned = next((lab.id for lab in course.labs if lab.status != "published"), None)
    if planned:
        with pytest.raises(UsageError, match="not published"):
            chosen_labs(course, [planned])
    assert [lab.id for lab in load_labs(settings, course, [LAB], registry=load_graders(settings.root))] == [LAB]


def test_check_cell_source_grammar():
    assert check_ids_in('lab.check("a-b")') == ["a-b"]
    assert check_ids_in("# note\n### BEGIN HIDDEN TESTS\nlab.check('x')\n### END HIDDEN TESTS\n") == ["x"]
    assert check_ids_in('lab.check("x"); import os') is None
    assert check_ids_in("lab.check(name)") is None


def test_cli_grade_refuses_bad_input_with_exit_2(tmp_path, root, course_copy):
    import os

    def run(*args, env=None):
        return subprocess.run([sys.executable, "-m", "ladderlab.cli", *args], capture_output=True, text=True,
                              cwd=root, env={**os.environ, **(env or {})})

    r = run("grade", "no-such-lab", "--notebook", "x.ipynb", "--student", "ada")
    assert r.returncode == 2 and "unknown lab 'no-such-lab'" in r.stderr and "Traceback" not in r.stderr
    course = course_copy / "course.yaml"
    course.write_text(course.read_text().replace(f"id: {LAB}\n  title: Harden a host with iptables\n"
                                                 "  environment: firewall\n  status: published",
                                                 f"id: {LAB}\n  title: Harden a host with iptables\n"
                                                 "  environment: firewall\n  status: planned"))
    r = run("grade", LAB, "--notebook", "x.ipynb", "--student", "ada", env={"LADDERLAB_ROOT": str(course_copy)})
    assert r.returncode == 2 and "is planned, not published" in r.stderr, r.stderr
    bad = tmp_path / "bad.ipynb"
    bad.write_text("{not json")
    r = run("grade", LAB, "--notebook", str(bad), "--student", "ada")
    assert r.returncode == 2 and f"{bad}: not a valid notebook" in r.stderr
    r = run("grade", LAB, "--notebook", str(tmp_path / "missing.ipynb"), "--student", "ada")
    assert r.returncode == 2 and "missing.ipynb: file not found" in r.stderr
    r = run("grade", LAB, "--notebook", str(bad), "--student", "not a valid id")
    assert r.returncode == 2 and "learner id" in r.stderr
