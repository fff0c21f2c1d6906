"""graders/toolsmith.py (sys-3-tested-cli-tool) without Docker: the hidden reference and its mutants, and the
checks' logic against fake containers (which run what, in which container, with what judged).

The same checks run against real containers in the lab's self-test (tests/labs/test_selftest.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from ladderlab.environments.transports.base import CommandResult, quote_command
from ladderlab.grading.checks import evaluate, load_graders
from ladderlab.testing import FakeContext, FakeRunner

LAB = "sys-3-tested-cli-tool"
ARGS = {"host": "tools", "tool": "certwatch", "warn_days": 21}


@pytest.fixture(scope="module")
def ts(root):
    load_graders(root)
    import graders.toolsmith as module

    return module


@pytest.fixture(scope="module")
def ref(ts):
    return ts.ref


class Box:
    """A fake isolated container: records the files put into it and answers pytest with ``verdict(files)``."""

    def __init__(self, verdict):
        self.files: dict[str, bytes] = {}
        self.ran: list[str] = []
        self.verdict = verdict

    def run(self, command, *args, timeout=None):
        full = quote_command(command, *args)
        self.ran.append(full)
        assert "pytest" in full, full
        return CommandResult(full, self.verdict(self.files), "", "")

    def put_file(self, path, data):
        self.files[path] = data


def _implementation(ref, files: dict[str, bytes]) -> str:
    """Which implementation a box holds: "reference", a mutant's id, or "mixed"/"none"."""
    tool = files.get("/srv/certwatch/certwatch.py", b"").decode()
    fmt = files.get("/srv/certwatch/formats/json.py", b"").decode()
    found = []
    for mutant in ref.MUTANTS:
        text = tool if mutant.path == "tool" else fmt
        if mutant.new in text:
            found.append(mutant.id)
    if not tool:
        return "none"
    return found[0] if len(found) == 1 else ("reference" if not found else "mixed")


def _ctx(ts, verdict, tests=None):
    boxes: list[Box] = []

    def isolated(host):
        boxes.append(Box(verdict))
        return boxes[-1]

    dirs = {("tools", "/srv/certwatch/tests"): tests if tests is not None else {"test_x.py": b"def test(): pass\n"}}
    return FakeContext(dirs=dirs, isolated=isolated), boxes


# --- the reference and its mutants ---------------------------------------------------------------------


def test_every_mutant_is_one_slip_of_the_reference(ref):
    base = ref.sources("certwatch", 21)
    assert {p for p in base} == {"certwatch.py", "formats/text.py", "formats/json.py"}
    assert "DEFAULT_DAYS = 21" in base["certwatch.py"] and "__" not in base["certwatch.py"].replace("__name__", "") \
        .replace("__main__", "").replace("__doc__", "")
    ids = [m.id for m in ref.MUTANTS]
    assert len(ids) == len(set(ids)) == 10
    for mutant in ref.MUTANTS:
        changed = ref.sources("certwatch", 21, mutant)
        diff = [p for p in base if base[p] != changed[p]]
        assert len(diff) == 1, mutant.id
        compile(changed[diff[0]], diff[0], "exec")


def test_a_mutant_that_no_longer_fits_the_reference_is_our_defect(ref):
    broken = ref.Mutant("gone", "tool", "this text is not in the reference", "x")
    with pytest.raises(ValueError, match="gone"):
        ref.sources("certwatch", 21, broken)


class _Lab:
    """Stands in for the notebook's ``lab`` while its solution cells write files."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def write(self, host, path, text, mode="0644"):
        target = self.folder / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)


def _solution_tests(root: Path, into: Path) -> None:
    import nbformat

    nb = nbformat.read(root / "labs" / LAB / f"{LAB}.ipynb", as_version=4)
    cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "tests")
    exec(cell.source, {"lab": _Lab(into), "root": "/srv/certwatch"})  # noqa: S102 - the course's own notebook


def _suite(folder: Path) -> int:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "tests"],
                          cwd=folder, capture_output=True, timeout=120).returncode


@pytest.mark.slow
def test_the_notebook_tests_pass_on_the_reference_and_catch_a_mutant(root, ref, tmp_path):
    """The solution's tests are green against the hidden reference, red against a mutant (really run)."""
    pytest.importorskip("cryptography")
    for name, mutant in (("ref", None), ("mut", ref.MUTANTS[0])):
        box = tmp_path / name
        _solution_tests(root, box)
        folder = box / "srv" / "certwatch"
        for rel, text in ref.sources("certwatch", 21, mutant).items():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_text(text)
        assert _suite(folder) == (0 if mutant is None else 1), name


# --- the test-suite checks ---------------------------------------------------------------------------


def test_each_implementation_runs_alone_in_its_own_container(ts, ref):
    ctx, boxes = _ctx(ts, lambda files: 0 if _implementation(ref, files) == "reference" else 1)
    verdict = evaluate(ctx, ts.tests_kill_mutants, {**ARGS, "min_killed": 8})
    assert verdict.passed, verdict.feedback
    held = [_implementation(ref, b.files) for b in boxes]
    assert held[0] == "reference"
    assert len(held) == len(set(held)), "a container was reused"
    assert "mixed" not in held and "none" not in held
    assert len(boxes) == 1 + 8, "once 8 are caught, the last wave is skipped"
    assert ctx.isolated_for == ["tools"] * len(boxes)
    for box in boxes:
        assert box.files["/srv/certwatch/tests/test_x.py"] == b"def test(): pass\n"
        assert any("timeout -k 2 30 python3 -m pytest" in c and "ulimit -f" in c for c in box.ran)
    salts = {b.files["/srv/certwatch/formats/text.py"][-20:] for b in boxes}
    assert len(salts) == len(boxes), "every run's files differ byte for byte"


def test_a_happy_path_suite_is_stopped_after_the_first_wave(ts):
    ctx, boxes = _ctx(ts, lambda files: 0)
    verdict = evaluate(ctx, ts.tests_kill_mutants, {**ARGS, "min_killed": 8})
    assert verdict.status == "failed" and "let 4 of 10" in verdict.feedback
    assert len(boxes) == 1 + ts.PARALLEL


def test_a_suite_red_on_the_reference_fails_both_and_meets_no_mutant(ts):
    ctx, boxes = _ctx(ts, lambda files: 1)
    first = evaluate(ctx, ts.tests_pass_reference, ARGS)
    second = evaluate(ctx, ts.tests_kill_mutants, {**ARGS, "min_killed": 8})
    assert first.status == second.status == "failed"
    assert "against a correct implementation" in first.feedback
    assert len(boxes) == 1, "the reference run is shared, and no mutant runs"


def test_a_suite_that_runs_too_long_is_the_learners_failure(ts):
    ctx, _ = _ctx(ts, lambda files: 124)
    verdict = evaluate(ctx, ts.tests_pass_reference, ARGS)
    assert verdict.status == "failed" and "longer than 30s" in verdict.feedback


def test_no_test_files_fails_without_starting_anything(ts):
    ctx, boxes = _ctx(ts, lambda files: 0, tests={"helpers.py": b"x = 1\n"})
    verdict = evaluate(ctx, ts.tests_pass_reference, ARGS)
    assert verdict.status == "failed" and "no tests" in verdict.feedback
    assert boxes == []


def test_what_the_suite_prints_never_reaches_the_feedback(ts):
    class Chatty(Box):
        def run(self, command, *args, timeout=None):
            result = super().run(command, *args, timeout=timeout)
            return CommandResult(result.command, 1, "SECRET-REFERENCE-LINE\n", "SECRET-REFERENCE-LINE\n")

    ctx = FakeContext(dirs={("tools", "/srv/certwatch/tests"): {"test_x.py": b""}},
                      isolated=lambda host: Chatty(lambda files: 1))
    for fn, args in ((ts.tests_pass_reference, ARGS), (ts.tests_kill_mutants, {**ARGS, "min_killed": 8})):
        assert "SECRET" not in evaluate(ctx, fn, args).feedback


# --- the acceptance checks ---------------------------------------------------------------------------


def test_no_tool_fails_every_acceptance_check_without_starting_anything(ts):
    ctx = FakeContext(isolated=lambda host: pytest.fail("nothing to run"))
    for fn in (ts.expiry_statuses, ts.failure_modes, ts.json_format, ts.exit_codes, ts.plugin_picked_up):
        verdict = evaluate(ctx, fn, ARGS)
        assert verdict.status == "failed" and "/srv/certwatch/certwatch.py does not exist" in verdict.feedback


def test_a_fixture_fleet_that_does_not_start_is_ours_not_the_learners(ts):
    box = FakeRunner([(r"tlsfleet\.py", "Traceback: boom", 1)])
    ctx = FakeContext(files={("tools", "/srv/certwatch/certwatch.py"): b"print('hi')\n"}, isolated=lambda host: box)
    assert evaluate(ctx, ts.expiry_statuses, ARGS).status == "error"


def test_the_acceptance_container_gets_the_tool_and_our_plugin_but_not_the_tests(ts):
    box = FakeRunner([(r"tlsfleet\.py", "", 0), (r"python3 certwatch\.py", "", 3)])
    ctx = FakeContext(files={("tools", "/srv/certwatch/certwatch.py"): b"print('hi')\n"},
                      dirs={("tools", "/srv/certwatch/formats"): {"text.py": b"", "../x": b"", "json.py": b""},
                            ("tools", "/srv/certwatch/tests"): {"test_x.py": b""}},
                      isolated=lambda host: box)
    verdict = evaluate(ctx, ts.exit_codes, ARGS)
    assert verdict.status == "failed" and "exit code 3, expected 0" in verdict.feedback
    assert not any("/tests/" in p for p in box.files)
    assert "/srv/certwatch/formats/text.py" in box.files and not any(".." in p for p in box.files)
    plugins = [p for p in box.files if re.search(r"/formats/ll_[0-9a-f]{8}\.py$", p)]
    assert len(plugins) == 1
    runs = [c for c in box.ran if "python3 certwatch.py" in c]
    assert len(runs) == len(ts._scenarios(ts._fixture(21), 21, "x"))
    assert all("ulimit -f" in c and "head -c" in c for c in runs), "output is bounded inside the container"
    ports = {int(p) for c in runs for p in re.findall(r"localhost:(\d+)", c)}
    assert all(20000 <= p < 40008 for p in ports)
