"""nbgrader integration: the Execute step of ``nbgrader autograde``, and the course root.

``ladderlab nbgrader init DIR`` writes ``DIR/nbgrader_config.py`` and
``DIR/source/<lab>/<lab>.ipynb`` so the plain nbgrader workflow works
(``generate_assignment``, the formgrader and assignment list in JupyterLab,
``autograde``). The config swaps nbgrader's ``Execute`` for
:class:`LadderlabExecute`, which grades each notebook the ladderlab way (fresh
environment, sandbox, trusted checks, teardown) and hands nbgrader a notebook
whose check cells carry the trusted verdicts; nbgrader's ``SaveAutoGrades``
then records them in the gradebook as usual.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nbformat import NotebookNode
from nbgrader.preprocessors import Execute, NbGraderPreprocessor
from traitlets import Bool, Unicode

# nbgrader's own sanitising steps, after ladderlab has rebuilt the submission (LadderlabSanitize):
# they then only ever see the instructor's nbgrader metadata.
SANITIZE_PREPROCESSORS = [
    "ladderlab.grading.nbgrader_ext.LadderlabSanitize",
    "nbgrader.preprocessors.ClearOutput",
    "nbgrader.preprocessors.DeduplicateIds",
    "nbgrader.preprocessors.OverwriteKernelspec",
    "nbgrader.preprocessors.OverwriteCells",
    "nbgrader.preprocessors.CheckCellMetadata",
]

AUTOGRADE_PREPROCESSORS = [
    "ladderlab.grading.nbgrader_ext.LadderlabExecute",
    "nbgrader.preprocessors.IgnorePattern",
    "nbconvert.preprocessors.ClearMetadataPreprocessor",
    "nbgrader.preprocessors.LimitOutput",
    "nbgrader.preprocessors.SaveAutoGrades",
    "ladderlab.grading.nbgrader_ext.RecordEvidence",
    "nbgrader.preprocessors.AssignLatePenalties",
    "nbgrader.preprocessors.CheckCellMetadata",
]

# What the learner's feedback is made of: nbgrader's own steps, then hidden checks reduced to title and verdict.
FEEDBACK_PREPROCESSORS = [
    "nbgrader.preprocessors.GetGrades",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
    "ladderlab.grading.nbgrader_ext.RedactHiddenChecks",
]

CONFIG_TEMPLATE = '''\
# Written by `ladderlab nbgrader init`; rerun it with --force to regenerate.
# The plain nbgrader workflow works from this directory:
#   nbgrader generate_assignment {example} --force
#   nbgrader autograde {example}
# Autograding runs every submission against a fresh ladderlab environment:
# learner cells in a sandbox container, checks in this (trusted) process.
c = get_config()  # noqa: F821

c.CourseDirectory.course_id = {course_id!r}
c.CourseDirectory.root = {root!r}
# Only notebooks travel: the trainer's README stays out of releases, and files a learner hands in beside
# the notebook (an .html page that would run in the trainer's browser) never reach autograded/ or the formgrader.
c.CourseDirectory.include = ["*.ipynb"]
c.Exchange.root = {exchange!r}
# The gradebook: nbgrader's SQLite file in this directory, unless LADDERLAB_GRADEBOOK_URL names another (a hub's
# PostgreSQL: ladderlab hub start sets it for its service).
import os  # noqa: E402
if os.environ.get("LADDERLAB_GRADEBOOK_URL"):
    c.CourseDirectory.db_url = os.environ["LADDERLAB_GRADEBOOK_URL"]

c.Autograde.sanitize_preprocessors = {sanitize!r}
c.Autograde.autograde_preprocessors = {preprocessors!r}
c.GenerateFeedback.preprocessors = {feedback!r}
c.OverwriteCells.add_missing_cells = True
c.LadderlabSanitize.ladderlab_root = {ladderlab_root!r}
c.LadderlabExecute.ladderlab_root = {ladderlab_root!r}
c.RedactHiddenChecks.ladderlab_root = {ladderlab_root!r}
'''


_PREGRADED: dict[tuple[str, str], tuple[Any, NotebookNode]] = {}
_PREGRADED_LOCK = threading.Lock()


@contextmanager
def pregraded(report: Any, graded: NotebookNode) -> Iterator[None]:
    """While inside, nbgrader's autograde of ``report.lab``/``report.student`` takes this grading instead of
    grading again. The grading service grades submissions in parallel and then records each under its one
    writer (gradebook, evidence); :class:`LadderlabExecute` takes the result only for the very submission it
    was made from (the same :func:`~ladderlab.grading.pipeline.submission_hash`), once."""
    key = (report.lab, report.student)
    with _PREGRADED_LOCK:
        _PREGRADED[key] = (report, graded)
    try:
        yield
    finally:
        with _PREGRADED_LOCK:
            _PREGRADED.pop(key, None)


def _take_pregraded(lab: Any, student: str, nb: NotebookNode) -> tuple[Any, NotebookNode] | None:
    from ladderlab.grading.pipeline import submission_hash

    with _PREGRADED_LOCK:
        found = _PREGRADED.pop((lab.id, student), None)
    if found is None or found[0].submission_hash != submission_hash(lab, nb):
        return None
    return found


class SubmissionFailed(RuntimeError):
    """One submission could not be autograded; nbgrader records the failure and goes on with the next."""


class Contained:
    """A preprocessor whose failure ends one submission's autograde, never the run.

    nbgrader's ``convert_notebooks`` catches an exception per submission and goes on, except for
    a few types it takes as fatal for the whole course (an nbgrader metadata schema mismatch, a
    database ``OperationalError``) and ``KeyboardInterrupt``: it then stops, and every submission
    after this one stays ungraded. Those types are turned into :class:`SubmissionFailed` here (the
    ladder record is an SQLAlchemy database too: a locked SQLite file is one learner's failure to
    record, not the end of the cohort's grading). ``KeyboardInterrupt`` still stops the run.
    """

    def __call__(self, nb: NotebookNode, resources: dict[str, Any]) -> tuple[NotebookNode, dict[str, Any]]:
        import sqlalchemy.exc
        from nbgrader.nbgraderformat.common import SchemaMismatchError

        try:
            done: tuple[NotebookNode, dict[str, Any]] = super().__call__(nb, resources)  # type: ignore[misc]
        except (SchemaMismatchError, sqlalchemy.exc.DatabaseError) as exc:
            info = resources.get("nbgrader") or {}
            raise SubmissionFailed(f"{type(self).__name__}: {info.get('assignment')}/{info.get('student')}: "
                                   f"{type(exc).__name__}: {exc}") from exc
        return done


def lab_for(ladderlab_root: str, resources: dict[str, Any]) -> Any:
    """The lab definition an nbgrader step works on, from the configured course checkout."""
    from ladderlab.config import Settings
    from ladderlab.course import load_course
    from ladderlab.course.labs import load_lab
    from ladderlab.errors import UsageError
    from ladderlab.grading.checks import load_graders

    info = resources["nbgrader"]
    lab_id, notebook = info["assignment"], info["notebook"]
    if notebook != lab_id:
        raise UsageError(f"assignment {lab_id}: notebook {notebook!r} is not the lab's notebook {lab_id}.ipynb")
    settings = Settings.from_env(Path(ladderlab_root) if ladderlab_root else None)
    course = load_course(settings.course_file, "course.yaml")
    return load_lab(settings, course, lab_id, registry=load_graders(settings.root))


class LadderlabSanitize(Contained, NbGraderPreprocessor):  # type: ignore[misc]
    """The first of autograde's sanitising steps: the submission rebuilt by ``pipeline.prepare``.

    Before any nbgrader step reads the submitted notebook: learner cells lose every nbgrader claim
    (an old ``schema_version``, wrong types, a check's ``grade_id``, grade/locked/solution flags),
    instructor cells are the instructor's, learner markdown is sanitised. The notebook nbgrader
    then saves as autograded, and renders in the formgrader and as feedback, is built from it.
    """

    ladderlab_root = Unicode("", help="the ladderlab course checkout (holds course.yaml, labs/, graders/)").tag(
        config=True)

    def preprocess(self, nb: NotebookNode, resources: dict[str, Any]) -> tuple[NotebookNode, dict[str, Any]]:
        from ladderlab.grading.pipeline import prepare

        return prepare(lab_for(self.ladderlab_root, resources), nb), resources


class LadderlabExecute(Contained, Execute):  # type: ignore[misc]
    """nbgrader's Execute step, done by ladderlab's grading pipeline."""

    ladderlab_root = Unicode("", help="the ladderlab course checkout (holds course.yaml, labs/, graders/)").tag(
        config=True)
    record = Bool(True, help="append each grading's evidence to the ladder record").tag(config=True)
    ladder_url = Unicode("", help="SQLAlchemy URL of the ladder record (default: LADDERLAB_LADDER_URL or the "
                                  "SQLite file in the cache)").tag(config=True)

    def preprocess(self, nb: NotebookNode, resources: dict[str, Any]) -> tuple[NotebookNode, dict[str, Any]]:
        from ladderlab.config import Settings
        from ladderlab.course import load_course
        from ladderlab.course.labs import load_lab
        from ladderlab.environments.engine import connect
        from ladderlab.errors import GradingIncomplete, UsageError
        from ladderlab.grading.checks import load_graders
        from ladderlab.grading.pipeline import grade

        info = resources["nbgrader"]
        lab_id, student, notebook = info["assignment"], info["student"], info["notebook"]
        if notebook != lab_id:
            raise UsageError(f"assignment {lab_id}: notebook {notebook!r} is not the lab's notebook {lab_id}.ipynb")
        settings = Settings.from_env(Path(self.ladderlab_root) if self.ladderlab_root else None)
        course = load_course(settings.course_file, "course.yaml")
        lab = load_lab(settings, course, lab_id, registry=load_graders(settings.root))
        taken = _take_pregraded(lab, student, nb)
        if taken is not None:
            report, graded = taken
        else:
            report, graded = grade(settings, connect(), lab, nb, student, say=self.log.info, detach_teardown=True)
        for problem in report.problems:
            self.log.warning("ladderlab: %s", problem)
        if not report.complete:
            # Raising here fails this submission's autograde: nbgrader saves no score for it, and no
            # evidence is appended. Grading it again later gives the learner's honest score.
            raise GradingIncomplete(f"ladderlab: {lab_id}/{student}: grading incomplete, nothing recorded: "
                                    f"{report.error}")
        self.log.info("ladderlab: %s/%s scored %g/%g (%s)", lab_id, student, report.score, report.max_score,
                      ", ".join(f"{c.id}={c.status}" for c in report.checks))
        # Evidence is appended by RecordEvidence, after SaveAutoGrades: gradebook first, then the ladder.
        resources.setdefault("ladderlab", {}).update(
            report=report.to_json(), grade_report=report, course_id=course.id, settings=settings,
            record=self.record, ladder_url=self.ladder_url or None)
        return graded, resources


class RecordEvidence(Contained, NbGraderPreprocessor):  # type: ignore[misc]
    """After nbgrader's SaveAutoGrades: append the grading's evidence to the ladder record.

    Runs only when LadderlabExecute graded the notebook completely and nbgrader saved its scores
    (an earlier step that raised stops the chain, so nothing is recorded for it). An nbgrader
    preprocessor, so enabled: nbconvert's own ``Preprocessor`` is disabled unless configured.
    """

    def preprocess(self, nb: NotebookNode, resources: dict[str, Any]) -> tuple[NotebookNode, dict[str, Any]]:
        info = resources.get("ladderlab") or {}
        report = info.get("grade_report")
        if report is None or not info.get("record"):
            return nb, resources
        from ladderlab.ladder.recording import record

        seq = record(info["settings"], info["course_id"], report, info.get("ladder_url"))
        self.log.info("ladderlab: evidence entry %d recorded for %s/%s", seq, report.lab, report.student)
        return nb, resources


class RedactHiddenChecks(NbGraderPreprocessor):  # type: ignore[misc]
    """A feedback step: a hidden check's cell shows its title and passed/failed, never its feedback text.

    The trainer's formgrader keeps the full verdicts (the autograded notebook); the learner's feedback
    HTML is rendered from this redacted copy, so the logic and the expected values of hidden checks
    never reach the learner.
    """

    ladderlab_root = Unicode("", help="the ladderlab course checkout").tag(config=True)

    def preprocess(self, nb: NotebookNode, resources: dict[str, Any]) -> tuple[NotebookNode, dict[str, Any]]:
        from nbformat.v4 import new_output

        from ladderlab.course.labs import nbg
        from ladderlab.grading import marks

        info = resources.get("nbgrader") or {}
        lab = lab_for(self.ladderlab_root, {"nbgrader": {"assignment": info.get("assignment"),
                                                         "notebook": info.get("notebook")}})
        hidden = {c.grade_id: c for c in lab.checks if c.hidden}
        for cell in nb.cells:
            check = hidden.get(nbg(cell).get("grade_id"))
            if check is None:
                continue
            passed = not any(o.get("output_type") == "error" for o in cell.get("outputs", []))
            text = marks.line(passed, check.id, f"{check.spec.title} (hidden check)") + "\n"
            cell["outputs"] = [new_output("stream", name="stdout", text=text)]
        return nb, resources


#: The variable naming nbgrader's gradebook when it is not the course root's SQLite file (a hub's PostgreSQL).
GRADEBOOK_ENV = "LADDERLAB_GRADEBOOK_URL"


def gradebook_url(course_root: Path) -> str:
    """nbgrader's gradebook for the course root: ``$LADDERLAB_GRADEBOOK_URL``, else ``<course_root>/gradebook.db``
    (what the course root's ``nbgrader_config.py`` tells nbgrader's own apps too)."""
    return os.environ.get(GRADEBOOK_ENV) or f"sqlite:///{course_root / 'gradebook.db'}"


def init_course_root(settings: Any, directory: Path, labs: list[Any], *, force: bool = False,
                     exchange: Path | None = None) -> Path:
    """Write the nbgrader course root for ``labs``; never half-writes the config."""
    from ladderlab.errors import UsageError

    root = directory.resolve()
    config = root / "nbgrader_config.py"
    if config.exists() and not force:
        raise UsageError(f"{config} exists (use --force to overwrite it)")
    if not labs:
        raise UsageError("no published labs to put in the course root")
    root.mkdir(parents=True, exist_ok=True)
    for lab in labs:
        dest = root / "source" / lab.id
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(lab.notebook_path, dest / f"{lab.id}.ipynb")
        # Only the notebook: the trainer's README stays in the course checkout (labs/<id>/README.md), since
        # nbgrader's generate_assignment copies every file of source/<lab>/ into the release.
        stale = dest / "README.md"
        if stale.is_file():
            stale.unlink()
    text = CONFIG_TEMPLATE.format(
        example=labs[0].id, course_id=labs[0].course.id, root=str(root), exchange=str(exchange or root / "exchange"),
        sanitize=SANITIZE_PREPROCESSORS, preprocessors=AUTOGRADE_PREPROCESSORS, feedback=FEEDBACK_PREPROCESSORS,
        ladderlab_root=str(settings.root))
    tmp = config.with_name(config.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(config)
    (exchange or root / "exchange").mkdir(exist_ok=True)
    return root
