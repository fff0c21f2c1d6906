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

import shutil
from pathlib import Path
from typing import Any

from nbformat import NotebookNode
from nbgrader.preprocessors import Execute
from traitlets import Bool, Unicode

AUTOGRADE_PREPROCESSORS = [
    "ladderlab.grading.nbgrader_ext.LadderlabExecute",
    "nbgrader.preprocessors.IgnorePattern",
    "nbconvert.preprocessors.ClearMetadataPreprocessor",
    "nbgrader.preprocessors.LimitOutput",
    "nbgrader.preprocessors.SaveAutoGrades",
    "nbgrader.preprocessors.AssignLatePenalties",
    "nbgrader.preprocessors.CheckCellMetadata",
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
c.Exchange.root = {exchange!r}

c.Autograde.autograde_preprocessors = {preprocessors!r}
c.OverwriteCells.add_missing_cells = True
c.LadderlabExecute.ladderlab_root = {ladderlab_root!r}
'''


class LadderlabExecute(Execute):  # type: ignore[misc]
    """nbgrader's Execute step, done by ladderlab's grading pipeline."""

    ladderlab_root = Unicode("", help="the ladderlab course checkout (holds course.yaml, labs/, graders/)").tag(
        config=True)
    record = Bool(True, help="append each grading's evidence to the ladder record").tag(config=True)
    ladder_url = Unicode("", help="SQLAlchemy URL of the ladder record (default: LADDERLAB_LADDER_URL or the "
                                  "SQLite file in the cache)").tag(config=True)

    def preprocess(self, nb: NotebookNode, resources: dict[str, Any]) -> tuple[NotebookNode, dict[str, Any]]:
        from ladderlab.config import Settings
        from ladderlab.course import load_course
        from ladderlab.environments.engine import connect
        from ladderlab.errors import UsageError
        from ladderlab.grading.pipeline import grade
        from ladderlab.labs import load_lab

        info = resources["nbgrader"]
        lab_id, student, notebook = info["assignment"], info["student"], info["notebook"]
        if notebook != lab_id:
            raise UsageError(f"assignment {lab_id}: notebook {notebook!r} is not the lab's notebook {lab_id}.ipynb")
        settings = Settings.from_env(Path(self.ladderlab_root) if self.ladderlab_root else None)
        course = load_course(settings.course_file, "course.yaml")
        lab = load_lab(settings, course, lab_id)
        report, graded = grade(settings, connect(), lab, nb, student, say=self.log.info, detach_teardown=True)
        self.log.info("ladderlab: %s/%s scored %g/%g (%s)", lab_id, student, report.score, report.max_score,
                      ", ".join(f"{c.id}={'pass' if c.passed else 'fail'}" for c in report.checks))
        for problem in report.problems:
            self.log.warning("ladderlab: %s", problem)
        resources.setdefault("ladderlab", {})["report"] = report.to_json()
        if self.record:
            from ladderlab.ladder.recording import record

            seq = record(settings, course.id, report, self.ladder_url or None)
            self.log.info("ladderlab: evidence entry %d recorded", seq)
        return graded, resources


def init_course_root(settings: Any, directory: Path, labs: list[Any], *, force: bool = False) -> Path:
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
        readme = lab.directory / "README.md"
        if readme.is_file():
            shutil.copyfile(readme, dest / "README.md")
    text = CONFIG_TEMPLATE.format(
        example=labs[0].id, course_id=labs[0].course.id, root=str(root), exchange=str(root / "exchange"),
        preprocessors=AUTOGRADE_PREPROCESSORS, ladderlab_root=str(settings.root))
    tmp = config.with_name(config.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(config)
    (root / "exchange").mkdir(exist_ok=True)
    return root
