"""The learner's workspace: released notebooks only, made and handed out by nbgrader itself.

:func:`release` keeps the instructor course root (``service/course``) in step with the course:
``nbgrader generate_assignment`` (solutions and hidden checks removed by nbgrader's own
preprocessors) and ``release_assignment`` into the exchange, for each published lab whose source
changed. :func:`fill` then hands every released lab the learner does not have yet to the
workspace with nbgrader's ``fetch_assignment`` (what the Assignments panel's *Fetch* does).

A lab that changed after the learner started on it never lands over their work: the new release
arrives beside it as ``<lab>/<lab>.updated-<digest>.ipynb``. A notebook the learner has not
touched (byte for byte what was handed out) is simply replaced.

The workspace never holds a source notebook, a decoy, lab.yaml, a grader or a trainer README:
JupyterLab is rooted there (``ladderlab lab``), so its file browser cannot reach them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ladderlab.config import Settings
from ladderlab.course.labs import LabDef
from ladderlab.errors import LadderlabError
from ladderlab.service.paths import ServicePaths

Say = Callable[[str], None]

#: The instructor side of nbgrader's JupyterLab extension, off in the learner's workspace.
INSTRUCTOR_PLUGINS = ("@jupyter/nbgrader:formgrader", "@jupyter/nbgrader:course-list",
                      "@jupyter/nbgrader:create-assignment")
INSTRUCTOR_SERVER_EXTENSIONS = ("nbgrader.server_extensions.formgrader", "nbgrader.server_extensions.course_list")

LEARNER_CONFIG = '''\
# Written by ladderlab (service/workspace.py) for the learner's JupyterLab; regenerated on every start.
c = get_config()  # noqa: F821
c.CourseDirectory.course_id = {course_id!r}
c.CourseDirectory.student_id = {learner!r}
c.Exchange.root = {exchange!r}
c.Exchange.cache = {cache!r}
c.Exchange.assignment_dir = {workspace!r}
'''


class ReleaseError(LadderlabError, RuntimeError):
    """nbgrader could not generate or release a lab."""


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _load(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _save(path: Path, data: dict[str, str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    tmp.replace(path)


@contextlib.contextmanager
def _cwd(directory: Path) -> Iterator[None]:
    old = Path.cwd()
    os.chdir(directory)
    try:
        yield
    finally:
        os.chdir(old)


def nbgrader_config(paths: ServicePaths) -> Any:
    """The instructor course root's nbgrader config, loaded the way nbgrader's apps load it."""
    from traitlets.config.loader import PyFileConfigLoader

    return PyFileConfigLoader("nbgrader_config.py", path=str(paths.course_root)).load_config()


def nbgrader_api(paths: ServicePaths) -> Any:
    """nbgrader's own Python API on the instructor course root (in process: no CLI start per call)."""
    from nbgrader.apps import NbGraderAPI
    from nbgrader.auth import Authenticator
    from nbgrader.coursedir import CourseDirectory

    # nbgrader creates a new gradebook by running its ``alembic`` command: the one installed beside us.
    here = str(Path(sys.executable).parent)
    if here not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = here + os.pathsep + os.environ.get("PATH", "")
    config = nbgrader_config(paths)
    coursedir = CourseDirectory(config=config)
    return NbGraderAPI(coursedir, Authenticator(config=config), config=config)


def prepare_course_root(settings: Settings, paths: ServicePaths, labs: Sequence[LabDef]) -> None:
    """The instructor course root for ``labs``, its exchange and the learner server's Jupyter config."""
    from ladderlab.grading.nbgrader_ext import init_course_root

    paths.base.mkdir(parents=True, exist_ok=True)
    init_course_root(settings, paths.course_root, list(labs), force=True, exchange=paths.exchange)
    # nbgrader's exchange: anyone may hand in (inbound is write+search only), read what is released.
    paths.exchange.mkdir(exist_ok=True)
    paths.exchange.chmod(0o755)


def learner_cache(paths: ServicePaths, learner: str) -> Path:
    """The learner's own nbgrader cache (their submissions' secrets). One per learner: nbgrader's Fetch
    Feedback takes feedback for every submission in the cache it is given, whoever handed it in."""
    from ladderlab.course.seeds import check_learner

    return paths.learner_cache / check_learner(learner)


def learner_config(paths: ServicePaths, course_id: str, learner: str) -> Path:
    """Write the learner server's Jupyter config dir: nbgrader's exchange for the workspace, instructor tools off."""
    conf = paths.jupyter_config
    cache = learner_cache(paths, learner)
    cache.mkdir(parents=True, exist_ok=True)
    write_disabled(conf, INSTRUCTOR_PLUGINS, INSTRUCTOR_SERVER_EXTENSIONS)
    (conf / "nbgrader_config.py").write_text(LEARNER_CONFIG.format(
        course_id=course_id, learner=learner, exchange=str(paths.exchange), cache=str(cache),
        workspace=str(paths.workspace)))
    return conf


def write_disabled(conf: Path, plugins: Sequence[str], server_extensions: Sequence[str]) -> list[Path]:
    """In the Jupyter config dir ``conf``: JupyterLab ``plugins`` (or whole extensions) and ``server_extensions``
    disabled (``labconfig/page_config.json``, ``jupyter_server_config.json``); the files written."""
    (conf / "labconfig").mkdir(parents=True, exist_ok=True)
    page, server = conf / "labconfig" / "page_config.json", conf / "jupyter_server_config.json"
    page.write_text(json.dumps({"disabledExtensions": dict.fromkeys(plugins, True)}, indent=1))
    server.write_text(json.dumps({"ServerApp": {"jpserver_extensions": dict.fromkeys(server_extensions, False)}},
                                 indent=1))
    return [page, server]


def _outcome(result: dict[str, Any], what: str) -> None:
    if not result.get("success"):
        detail = (result.get("error") or result.get("log") or "").strip().splitlines()
        raise ReleaseError(f"nbgrader {what} failed: {detail[-1] if detail else 'no detail'}")


def release(paths: ServicePaths, labs: Sequence[LabDef], say: Say) -> list[str]:
    """Generate and release every lab whose source notebook changed since its last release; the ids released."""
    from nbgrader.exchange.default import ExchangeReleaseAssignment

    done = _load(paths.releases)
    api = nbgrader_api(paths)
    known = _assignments(paths)
    out = []
    for lab in labs:
        digest = _digest(lab.notebook_path)
        outbound = paths.exchange / lab.course.id / "outbound" / lab.id / f"{lab.id}.ipynb"
        # Released already, unless the gradebook lacks it: a new gradebook (a hub's PostgreSQL) is given every lab.
        if done.get(lab.id) == digest and outbound.is_file() and lab.id in known:
            continue
        say(f"releasing {lab.id} (nbgrader generate_assignment, release_assignment)")
        with _cwd(paths.course_root):
            _outcome(api.generate_assignment(lab.id, force=True, create=True), f"generate_assignment {lab.id}")
            config = nbgrader_config(paths)
            config.CourseDirectory.assignment_id = lab.id
            releaser = ExchangeReleaseAssignment(coursedir=_coursedir(config), authenticator=_auth(config),
                                                 config=config)
            releaser.force = True
            try:
                releaser.start()
            except Exception as exc:
                raise ReleaseError(f"nbgrader release_assignment {lab.id} failed: {exc}") from exc
        done[lab.id] = digest
        _save(paths.releases, done)
        out.append(lab.id)
    return out


def _assignments(paths: ServicePaths) -> set[str]:
    """The labs nbgrader's gradebook has (none when there is no gradebook yet)."""
    from nbgrader.api import Gradebook

    from ladderlab.grading.nbgrader_ext import gradebook_url

    url = gradebook_url(paths.course_root)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        return set()
    with Gradebook(url) as gb:
        return {a.name for a in gb.assignments}


def _coursedir(config: Any) -> Any:
    from nbgrader.coursedir import CourseDirectory

    return CourseDirectory(config=config)


def _auth(config: Any) -> Any:
    from nbgrader.auth import Authenticator

    return Authenticator(config=config)


def _learner_exchange_config(paths: ServicePaths, course_id: str, learner: str, lab_id: str) -> Any:
    from traitlets.config import Config

    config = Config()
    config.CourseDirectory.course_id = course_id
    config.CourseDirectory.assignment_id = lab_id
    config.CourseDirectory.student_id = learner
    config.Exchange.root = str(paths.exchange)
    config.Exchange.cache = str(learner_cache(paths, learner))
    config.Exchange.assignment_dir = str(paths.workspace)
    return config


def fill(paths: ServicePaths, course_id: str, learner: str, lab_ids: Sequence[str], say: Say,
         start_here: Path | None = None) -> dict[str, str]:
    """Hand every released lab to the workspace; what happened per lab (fetched, updated, kept, beside)."""
    from nbgrader.exchange.default import ExchangeFetchAssignment

    paths.workspace.mkdir(parents=True, exist_ok=True)
    handed = _load(paths.fetched)
    outcome: dict[str, str] = {}
    if start_here is not None:
        outcome["start-here"] = _place(start_here, paths.workspace / "start-here.ipynb", handed, "start-here")
    for lab_id in lab_ids:
        released = paths.exchange / course_id / "outbound" / lab_id / f"{lab_id}.ipynb"
        if not released.is_file():
            continue
        mine = paths.workspace / lab_id / f"{lab_id}.ipynb"
        if not mine.parent.exists():
            config = _learner_exchange_config(paths, course_id, learner, lab_id)
            fetch = ExchangeFetchAssignment(coursedir=_coursedir(config), authenticator=_auth(config), config=config)
            try:
                fetch.start()
            except Exception as exc:
                raise ReleaseError(f"nbgrader fetch_assignment {lab_id} into {paths.workspace} failed: {exc}") \
                    from exc
            handed[lab_id] = _digest(mine)
            outcome[lab_id] = "fetched"
        else:
            outcome[lab_id] = _place(released, mine, handed, lab_id)
        if outcome[lab_id] != "kept":
            say(f"workspace: {lab_id}: {outcome[lab_id]}")
    _save(paths.fetched, handed)
    return outcome


def _place(new: Path, mine: Path, handed: dict[str, str], key: str) -> str:
    """Put ``new`` at ``mine`` unless the learner changed ``mine``: then beside it. Updates ``handed``."""
    fresh = _digest(new)
    if not mine.exists():
        mine.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(new, mine)
        handed[key] = fresh
        return "fetched"
    current = _digest(mine)
    if current == fresh:
        handed[key] = fresh
        return "kept"
    if current == handed.get(key):  # untouched since we handed it out: the learner loses nothing
        tmp = mine.with_name(mine.name + ".tmp")
        shutil.copyfile(new, tmp)
        tmp.replace(mine)
        handed[key] = fresh
        return "updated"
    beside = mine.with_name(f"{mine.stem}.updated-{fresh[:8]}.ipynb")
    if not beside.exists():
        shutil.copyfile(new, beside)
        return f"changed since you started: the new version is beside yours, {beside.name}"
    return "kept"
