"""``ladderlab new lab <track>-<level>-<slug> --env ENV``: a new lab's starting point.

It writes ``labs/<id>/`` (``lab.yaml`` with one check, one requirement and a hint; the nbgrader source
notebook; one decoy that ``violates`` the requirement; one other-style solution; the trainer README) and
appends the lab's entry to ``course.yaml`` as text, so every comment there survives.

Everything is checked before anything is written: the id's pattern, its track code and ladder cell, the
environment, the clauses, that the lab does not exist yet. The files are written into a temporary folder
inside the course root, the new ``course.yaml`` text and the lab are loaded from it (the lab with its
one placeholder grader, see below), and only then are they moved into place; on any error nothing stays
behind.

**Points are written once.** ``--points N`` (default 10) is the lab's total: the course.yaml entry's
``points``, the one check's ``points`` in lab.yaml and its check cell's nbgrader ``points`` are all that
one value. The three places are what each format needs (nbgrader reads the cell, the ladder reads the
course entry); they are never trusted to agree by hand: :func:`ladderlab.course.labs.load_lab` refuses a
lab whose cell points differ from lab.yaml's or whose checks do not add up to the course entry.

**A scaffold is work in progress, and says so.** Every place the author must fill holds the marker
``TODO(author)``. The entry is ``status: published`` (a planned lab may not have a folder), so every
test and command that loads the lab loads this one too, and :func:`ladderlab.course.labs.load_lab`
refuses it while any marker is left, listing each one by file and line (or notebook cell):
``ladderlab selftest``, ``ladderlab grade`` and ``tests/unit`` all print exactly what remains.
The one check names :data:`PLACEHOLDER_GRADER`, which is no check in ``graders/``: the author writes the
check (or picks an existing one) and names it there.

>>> from ladderlab.course.scaffold import scaffold_lab                       # doctest: +SKIP
>>> made = scaffold_lab(settings, "sec-3-postgres-least-privilege", env="postgres",
...                     clauses=["access-control"], registry=load_graders(settings.root))  # doctest: +SKIP
>>> made.files[0]                                                            # doctest: +SKIP
'labs/sec-3-postgres-least-privilege/lab.yaml'
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
from nbformat import NotebookNode

from ladderlab.config import Settings
from ladderlab.course.labs import CheckRegistry, load_lab, nbg
from ladderlab.course.loading import read_yaml
from ladderlab.course.model import LAB_ID, Course, Track, load_course
from ladderlab.errors import ConfigError, UsageError

#: What the author still has to fill; a lab holding it does not load (:func:`unfinished`).
MARKER = "TODO(author)"
#: The grader the scaffolded check names until the author names a real one (it is no check in graders/).
PLACEHOLDER_GRADER = "todo.write_this_check"
#: grade_id of the scaffolded solution cell (decoys and solutions/ replace it by this id).
SOLUTION_CELL = "solution-1"
DECOY_NAME = "todo-one-requirement-broken"
SOLUTION_NAME = "todo-another-style"
DEFAULT_POINTS = 10
_TOP_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\s*:")


@dataclass(frozen=True)
class Scaffolded:
    """What :func:`scaffold_lab` wrote: the lab's id, the files (relative to the course root) and what
    remains for the author (:func:`unfinished`)."""

    lab_id: str
    files: list[str]
    remaining: list[tuple[str, str]]


# --- what is left to fill ---------------------------------------------------------------------------


def unfinished(root: Path, lab_id: str) -> list[tuple[str, str]]:
    """Every ``TODO(author)`` left in ``labs/<lab_id>/`` and in the lab's course.yaml entry, as
    ``(where, the line)``: ``labs/x/lab.yaml:12``, ``labs/x/x.ipynb cells[0] (grade_id intro)``."""
    found: list[tuple[str, str]] = []
    folder = root / "labs" / lab_id
    # not .ipynb_checkpoints/ and other hidden copies an editor leaves behind
    files = [p for p in folder.rglob("*") if p.is_file() and not any(
        part.startswith(".") for part in p.relative_to(folder).parts)] if folder.is_dir() else []
    for path in sorted(files):
        rel = path.relative_to(root).as_posix()
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if MARKER not in text:
            continue
        if path.suffix == ".ipynb":
            found += _unfinished_cells(rel, text)
        else:
            found += [(f"{rel}:{n}", line.strip()) for n, line in enumerate(text.splitlines(), 1) if MARKER in line]
    course_file = root / "course.yaml"
    if course_file.is_file():
        lines = course_file.read_text(encoding="utf-8").splitlines()
        span = _entry_span(lines, lab_id)
        if span:
            found += [(f"course.yaml:{n + 1}", lines[n].strip()) for n in range(*span) if MARKER in lines[n]]
    return found


def _unfinished_cells(rel: str, text: str) -> list[tuple[str, str]]:
    try:
        cells = json.loads(text).get("cells", [])
    except (ValueError, AttributeError):
        cells = None
    if not isinstance(cells, list) or not all(isinstance(c, dict) for c in cells):
        return [(rel, f"{MARKER} (not a readable notebook)")]
    out = []
    for i, cell in enumerate(cells):
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else str(source)
        gid = nbg(NotebookNode(cell)).get("grade_id")
        where = f"{rel} cells[{i}]" + (f" (grade_id {gid})" if gid else "")
        out += [(where, line.strip()) for line in source.splitlines() if MARKER in line]
    return out


def unfinished_problems(root: Path, lab_id: str) -> list[tuple[str, str]]:
    """:func:`unfinished` as ConfigError problems (what :func:`~ladderlab.course.labs.load_lab` raises)."""
    prefix = f"labs/{lab_id}/"
    return [(where.removeprefix(prefix), f"still to fill: {line}") for where, line in unfinished(root, lab_id)]


# --- the ladder cell's clauses (one place that knows how course.yaml stores them) ---------------------


def cell_clauses(track: Track, level: int) -> list[tuple[str, str]]:
    """The clauses ``(id, text)`` of the ladder cell ``track`` L``level`` (``ladder.tracks[].clauses``)."""
    return [(c.id, c.text) for c in track.clauses.get(level, [])]


def _chosen_clauses(track: Track, level: int, chosen: Sequence[str]) -> list[str]:
    menu = cell_clauses(track, level)
    ids = [cid for cid, _ in menu]
    listing = "".join(f"\n  {cid}: {text}" for cid, text in menu)
    if not chosen:
        raise UsageError(f"say which clauses of {track.name} L{level} the lab will show, only those its checks "
                         f"really judge: --clauses ID[,ID...], from{listing}")
    unknown = [c for c in chosen if c not in ids]
    if unknown:
        raise UsageError(f"--clauses: {', '.join(unknown)} is no clause of {track.name} L{level} "
                         f"(expected one of {', '.join(ids)})")
    if len(set(chosen)) != len(chosen):
        raise UsageError("--clauses: an id is given twice")
    return [c for c in ids if c in chosen]  # in the ladder's order


# --- the course.yaml entry, as text -------------------------------------------------------------------


def _entry_span(lines: list[str], lab_id: str) -> tuple[int, int] | None:
    """Line range [start, end) of the ``labs:`` item whose id is ``lab_id``."""
    start, end = _labs_block(lines)
    if start is None:
        return None
    item = re.compile(r"^(\s*)-\s+id:\s*['\"]?" + re.escape(lab_id) + r"['\"]?\s*(#.*)?$")
    for n in range(start, end):
        m = item.match(lines[n])
        if m:
            indent = len(m.group(1))
            stop = n + 1
            while stop < end and not re.match(rf"^\s{{0,{indent}}}-\s", lines[stop]):
                stop += 1
            return n, stop
    return None


def _labs_block(lines: list[str]) -> tuple[int | None, int]:
    """[first line after ``labs:``, the next top-level key or the end)."""
    for n, line in enumerate(lines):
        if re.match(r"^labs\s*:", line):
            end = next((k for k in range(n + 1, len(lines)) if _TOP_KEY.match(lines[k])), len(lines))
            return n + 1, end
    return None, len(lines)


def _yaml_str(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a YAML double-quoted scalar


def course_entry(lab_id: str, *, title: str, env: str, track: Track, level: int, points: int,
                 clauses: list[str], indent: str = "") -> str:
    """The lab's course.yaml entry as block YAML, with the cell's other clauses as a comment."""
    i = indent
    lines = [f"{i}- id: {lab_id}",
             f"{i}  title: {_yaml_str(title)}",
             f"{i}  environment: {env}",
             f"{i}  # published, as the lab has its folder; it loads once no marked place is left to fill",
             f"{i}  status: published",
             f"{i}  cells:",
             f"{i}  - track: {track.id}",
             f"{i}    level: {level}"]
    if clauses:
        menu = cell_clauses(track, level)
        lines.append(f"{i}    clauses: [{', '.join(clauses)}]")
        others = [cid for cid, _ in menu if cid not in clauses]
        if others:
            lines.append(f"{i}    # the cell's other clauses (name one only when a check judges it):")
            chunks = _chunks(others, 90 - len(i))
            lines += [f"{i}    #   {', '.join(c)}{',' if n < len(chunks) - 1 else ''}" for n, c in enumerate(chunks)]
    lines += [f"{i}  competencies: []  # ids from ladder.competencies.items the lab also shows, if any",
              f"{i}  points: {points}",
              f"{i}  # {MARKER}: say why every check must pass (each is one requirement), or drop pass_threshold",
              f"{i}  pass_threshold: 1.0"]
    return "\n".join(lines) + "\n"


def _chunks(words: list[str], width: int) -> list[list[str]]:
    """``words`` in lines of about ``width`` characters (joined by ", ")."""
    out: list[list[str]] = [[]]
    for word in words:
        if out[-1] and len(", ".join([*out[-1], word])) > width:
            out.append([])
        out[-1].append(word)
    return out


def course_text_with(text: str, entry: str) -> str:
    """``text`` (course.yaml) with ``entry`` added at the end of its ``labs:`` list, the rest untouched."""
    lines = text.splitlines(keepends=True)
    bare = [ln.rstrip("\n") for ln in lines]
    start, end = _labs_block(bare)
    if start is None:
        sep = "" if not text or text.endswith("\n") else "\n"
        return text + sep + "labs:\n" + entry
    if bare[start - 1].split(":", 1)[1].split("#", 1)[0].strip():
        raise UsageError("course.yaml: labs: is written inline (e.g. `labs: []`); write it as a block list "
                         "(`labs:` then `- id: ...` lines) so a lab can be added to it")
    # After the last line of the labs block that is neither blank nor a comment at column 0: a comment
    # heading the next key stays with it, an indented one ending the last entry stays with that entry.
    last = max((k for k in range(start, end) if bare[k].strip() and not bare[k].startswith("#")),
               default=start - 1)
    head = "".join(lines[: last + 1])
    if head and not head.endswith("\n"):
        head += "\n"
    return head + entry + "".join(lines[last + 1:])


def _item_indent(text: str) -> str:
    lines = text.splitlines()
    start, end = _labs_block(lines)
    for n in range(start or 0, end if start is not None else 0):
        m = re.match(r"^(\s*)-\s", lines[n])
        if m:
            return m.group(1)
    return ""


# --- the lab's files ------------------------------------------------------------------------------------


def _env_hosts(root: Path, env: str) -> dict[str, dict[str, Any]]:
    data = read_yaml(root / "environments" / env / "env.yaml", f"environments/{env}/env.yaml")
    hosts = data.get("hosts") if isinstance(data, dict) else None
    if not isinstance(hosts, dict) or not hosts:
        raise ConfigError(f"environments/{env}/env.yaml", [("hosts", "no hosts: a lab needs at least one")])
    return {str(k): (v if isinstance(v, dict) else {}) for k, v in hosts.items()}


def _work_host(hosts: Mapping[str, Mapping[str, Any]]) -> str:
    """The host the learner works on: the first with role ``target``, else the first."""
    return next((h for h, spec in hosts.items() if spec.get("role") == "target"), next(iter(hosts)))


def _check_id(slug: str) -> str:
    return slug[:64].rstrip("-")


def lab_yaml(lab_id: str, *, check: str, host: str, points: int) -> str:
    return f"""\
# The checks behind the check cells of {lab_id}.ipynb (docs/authoring.md walks through each part).
# {MARKER}: say how each check judges from outside the learner's reach (a probe host, the grader's own
# tools in the target's namespace, files read through the Docker API).
checks:
  {check}:
    title: "{MARKER}: what this check establishes, as the learner reads it"
    # {MARKER}: a check from graders/ (module.function), e.g. firewall.closed; its args must fit its signature
    grader: {PLACEHOLDER_GRADER}
    # points: this lab's total (course.yaml) is the sum of its checks' points; the check cell's nbgrader
    # points must equal these (the lab does not load otherwise)
    points: {points}
    args: {{host: {host}}}
    hints:
    - "{MARKER}: a general hint first, then more specific ones (never a seeded value or the check's logic)"
sandbox:
  timeout: 300
  cell_timeout: 60
# Every requirement the notebook's instructions state, each judged by named checks (tests/unit/test_requirements.py).
requirements:
- id: {check}
  text: "{MARKER}: one sentence, as the notebook's instructions state it"
  checks: [{check}]
"""


def decoy_yaml(*, requirement: str, check: str, host: str) -> str:
    return f"""\
# A plausible wrong solution: the source notebook with its solution cells replaced by these, breaking exactly
# one requirement (violates) so that the checks in must_fail reject it (ladderlab selftest proves they do).
description: "{MARKER}: the one mistake this decoy makes, as a learner would make it"
violates: {requirement}
must_fail: [{check}]
cells:
  {SOLUTION_CELL}: |
    # {MARKER}: the solution with exactly one requirement broken
    lab.sh({_yaml_str(host)}, "true", check=True)
"""


def solution_yaml(*, host: str) -> str:
    return f"""\
# Another correct solution, in a different style from the notebook's (a config file instead of commands,
# another tool, another layout); ladderlab selftest grades it to full marks.
description: "{MARKER}: what style this solution is written in"
cells:
  {SOLUTION_CELL}: |
    # {MARKER}: a correct solution written another way
    lab.sh({_yaml_str(host)}, "true", check=True)
"""


def _locked_md(grade_id: str, text: str) -> NotebookNode:
    cell: NotebookNode = nbformat.v4.new_markdown_cell(text)
    cell.metadata = {"deletable": False, "editable": False,
                     "nbgrader": {"grade": False, "grade_id": grade_id, "locked": True, "schema_version": 3,
                                  "solution": False, "task": False}}
    return cell


def _code(grade_id: str, text: str, *, solution: bool = False, points: int | None = None) -> NotebookNode:
    cell: NotebookNode = nbformat.v4.new_code_cell(text)
    meta: dict[str, Any] = {"grade": points is not None, "grade_id": grade_id, "locked": not solution,
                            "schema_version": 3, "solution": solution, "task": False}
    if points is not None:
        meta["points"] = points
        cell.metadata = {"deletable": False, "editable": False, "nbgrader": meta}
    else:
        cell.metadata = {"nbgrader": meta}
    return cell


def notebook(lab_id: str, *, title: str, track: Track, level: int, clause_texts: list[str],
             hosts: Mapping[str, Mapping[str, Any]], check: str, points: int) -> NotebookNode:
    """The nbgrader source notebook: instructions, the start cell, one task with its solution cell, and the
    hidden check cell (one ``lab.check`` call, nbgrader points = the check's)."""
    work = _work_host(hosts)
    quoted = " ".join(clause_texts) if clause_texts else track.levels[level]
    rows = "\n".join(f"| `{h}` | {spec.get('description') or MARKER + ': what this host is'} |"
                     for h, spec in hosts.items())
    intro = (f"# {track.name} L{level} · {title}\n\n"
             f'*Ladder: {track.name}, level {level} — "{quoted}"*\n\n'
             f"Your environment has these hosts on one private network:\n\n| host | what it is |\n|---|---|\n{rows}\n\n"
             f"**Goal.** On `{work}`:\n\n"
             f"1. {MARKER}: each requirement in one sentence, numbered, the same sentences as lab.yaml's "
             "`requirements` (mark one that cannot be judged from outside \"(not graded)\").\n\n"
             "Grading re-runs this notebook from the top against a **fresh** environment and then judges it with "
             "its own tools. Work done by hand in a terminal does not count: the notebook must do the work.")
    start = f'import ladderlab\n\nlab = ladderlab.start("{lab_id}")\nlab.params'
    task = (f"## 1. {MARKER}: the first task\n\n{MARKER}: what to do, on which host; where a value is seeded "
            "per learner, say which `lab.params` key holds it.")
    solution = ("### BEGIN SOLUTION\n"
                f"# {MARKER}: the reference solution (the self-test grades it to full marks)\n"
                f'lab.sh("{work}", "true", check=True)\n'
                "### END SOLUTION")
    graded = ("## Graded checks\n\nThe cells below are evaluated by the grader against a fresh environment after "
              "your notebook ran. Their code is not run by your kernel.")
    hidden = (f"# Hidden check: {check}, evaluated by the grader.\n### BEGIN HIDDEN TESTS\n"
              f'lab.check("{check}")\n### END HIDDEN TESTS')
    nb: NotebookNode = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
                   "language_info": {"name": "python"}}
    nb.cells = [_locked_md("intro", intro), _code("start", start), _locked_md("task-1", task),
                _code(SOLUTION_CELL, solution, solution=True), _locked_md("graded-md", graded),
                _code(f"check-{check}", hidden, points=points)]
    return nb


def readme(lab_id: str, *, title: str, env: str, track: Track, level: int, clauses: list[str],
           hosts: Mapping[str, Mapping[str, Any]], check: str, points: int) -> str:
    shown = f" (clauses: {', '.join(clauses)})" if clauses else ""
    host_list = ", ".join(f"`{h}`" for h in hosts)
    return f"""\
# {lab_id} — trainer notes

**Ladder:** {track.name}, level {level}{shown}.
**Environment:** `{env}` — {host_list}. {MARKER}: what runs where, and the seeded parameters.
**Time:** {MARKER}: minutes. **Pass:** every check (`pass_threshold: 1.0`).

{MARKER}: one paragraph: what "{title}" teaches, and why it shows the clauses above.

## What the learner does

{MARKER}: the tasks, in the notebook's order.

## How it is judged (lab.yaml)

| check | points | observed how |
|---|---|---|
| `{check}` | {points} | {MARKER}: from where, with what, and why the learner cannot fake it |

## Decoys (labs/{lab_id}/decoys)

| decoy | the mistake | must fail |
|---|---|---|
| `{DECOY_NAME}` | {MARKER} | {check} |

Every decoy names the one requirement it violates (`violates:`); `solutions/` holds correct solutions in
other styles, graded to full marks by `ladderlab selftest {lab_id}`.

## Common learner questions

- {MARKER}
"""


# --- the command ------------------------------------------------------------------------------------------


def _placeholder(ctx: object, **_args: object) -> object:  # pragma: no cover - never called, only bound
    raise NotImplementedError(f"{PLACEHOLDER_GRADER}: name a real check from graders/")


def validate_request(settings: Settings, course: Course, lab_id: str, env: str, points: int,
                     title: str | None) -> tuple[Track, int]:
    """The checks that need no file written; UsageError names what is wrong and what there is."""
    m = LAB_ID.match(lab_id)
    if not m:
        bad_level = re.match(r"^[a-z]+-([0-9]+)-", lab_id)
        if bad_level and not 1 <= int(bad_level.group(1)) <= 6:
            raise UsageError(f"lab id {lab_id!r}: level {bad_level.group(1)} is not a ladder level (1-6)")
        raise UsageError(f"lab id {lab_id!r}: expected <track code>-<level 1-6>-<slug>, lower case, e.g. "
                         "sec-3-postgres-least-privilege")
    if len(lab_id) > 80:
        raise UsageError(f"lab id {lab_id!r}: at most 80 characters")
    by_code = {t.code: t for t in course.ladder.tracks}
    track = by_code.get(m["code"])
    if track is None:
        raise UsageError(f"lab id {lab_id!r}: {m['code']!r} is no track code of course.yaml "
                         f"(expected one of {', '.join(sorted(by_code))})")
    level = int(m["level"])
    if not track.levels[level].strip():
        raise UsageError(f"lab id {lab_id!r}: the ladder cell {track.name} L{level} is empty; a lab cannot "
                         "demonstrate it")
    envs = sorted(p.parent.name for p in (settings.root / "environments").glob("*/env.yaml"))
    if env not in envs:
        raise UsageError(f"--env {env!r}: no environments/{env}/env.yaml (environments: {', '.join(envs) or 'none'}); "
                         "write the environment first (docs/authoring.md)")
    if any(lab.id == lab_id for lab in course.labs):
        raise UsageError(f"lab {lab_id!r} is already in course.yaml")
    if (settings.root / "labs" / lab_id).exists():
        raise UsageError(f"labs/{lab_id} already exists")
    if not 0 < points <= 100:
        raise UsageError(f"--points {points}: a lab's checks add up to 1-100 points (one check holds them all "
                         "at first)")
    if title is not None and (not 0 < len(title.strip()) <= 200 or not title.isprintable()):
        raise UsageError("--title: one line of 1-200 printable characters")
    return track, level


def scaffold_lab(settings: Settings, lab_id: str, *, env: str, registry: CheckRegistry,
                 title: str | None = None, points: int = DEFAULT_POINTS, clauses: Sequence[str] = (),
                 say: Callable[[str], None] = lambda _m: None) -> Scaffolded:
    """Write the new lab and its course.yaml entry, whole or not at all (see the module's docstring).

    ``registry`` is the check registry of ``graders/`` (the grading side loads it): the new lab is loaded
    against it, with :data:`PLACEHOLDER_GRADER` added, before anything is moved into place.
    """
    root = settings.root
    course_file = settings.course_file
    original = course_file.read_bytes()
    course = load_course(course_file)
    track, level = validate_request(settings, course, lab_id, env, points, title)
    chosen = _chosen_clauses(track, level, list(clauses))
    hosts = _env_hosts(root, env)
    work = _work_host(hosts)
    slug = LAB_ID.match(lab_id)["slug"]  # type: ignore[index]  # validated above
    check = _check_id(slug)
    title = title.strip() if title else f"{MARKER}: the lab's title"
    menu = dict(cell_clauses(track, level))
    clause_texts = [menu[c] for c in chosen]

    text = original.decode("utf-8")
    entry = course_entry(lab_id, title=title, env=env, track=track, level=level, points=points, clauses=chosen,
                         indent=_item_indent(text))
    new_text = course_text_with(text, entry)
    nb = notebook(lab_id, title=title, track=track, level=level, clause_texts=clause_texts, hosts=hosts,
                  check=check, points=points)
    files = {
        "lab.yaml": lab_yaml(lab_id, check=check, host=work, points=points),
        f"decoys/{DECOY_NAME}.yaml": decoy_yaml(requirement=check, check=check, host=work),
        f"solutions/{SOLUTION_NAME}.yaml": solution_yaml(host=work),
        "README.md": readme(lab_id, title=title, env=env, track=track, level=level, clauses=chosen, hosts=hosts,
                            check=check, points=points),
    }

    staging = Path(tempfile.mkdtemp(prefix=".new-lab-", dir=root))
    try:
        lab_dir = staging / "labs" / lab_id
        for rel, body in files.items():
            (lab_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            (lab_dir / rel).write_text(body, encoding="utf-8")
        nbformat.write(nb, str(lab_dir / f"{lab_id}.ipynb"))
        staged_course = staging / "course.yaml"
        staged_course.write_text(new_text, encoding="utf-8")
        # Validate what would be in place: the course as a whole, then the lab against the real graders
        # (plus the placeholder the author replaces), markers allowed.
        new_course = load_course(staged_course, "course.yaml")
        load_lab(Settings(root=staging, cache_dir=settings.cache_dir), new_course, lab_id,
                 registry={**registry, PLACEHOLDER_GRADER: _placeholder}, unfinished_ok=True)
        if course_file.read_bytes() != original:
            raise UsageError("course.yaml changed while the lab was being written; run the command again")
        target = root / "labs" / lab_id
        target.parent.mkdir(exist_ok=True)
        os.rename(lab_dir, target)  # fails if labs/<id> appeared meanwhile
        try:
            tmp_course = course_file.with_name(f".{course_file.name}.new-lab")
            shutil.copyfile(staged_course, tmp_course)
            os.replace(tmp_course, course_file)
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
    except OSError as exc:
        raise UsageError(f"could not write labs/{lab_id}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    written = [f"labs/{lab_id}/{rel}" for rel in ["lab.yaml", f"{lab_id}.ipynb", *list(files)[1:]]] + ["course.yaml"]
    say(f"wrote {', '.join(written)}")
    return Scaffolded(lab_id, written, unfinished(root, lab_id))
