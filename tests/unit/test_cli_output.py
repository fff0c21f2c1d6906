"""What the command line prints is the data, verbatim: ids, DIDs, paths and learner text are never read as
rich markup (``[bold]``) or emoji codes (``:key:``), and piped output is not cut to 80 columns.

The commands run in-process (``cli.main``) with stdout and stderr captured; the ladder record and the
course key live in a temporary cache."""

from __future__ import annotations

import json

import pytest

from ladderlab import cli
from ladderlab.config import Settings
from ladderlab.ladder.badges import did_key
from ladderlab.ladder.keys import load_or_create, public_pem
from ladderlab.ladder.store import Store

from .test_ladder_unit import ev

#: A learner id as a gradebook could hold it: markup and an emoji code in one.
ODD = "[bold]ada:key:"
LONG = "ada-" + "x" * 90  # longer than an 80-column terminal


@pytest.fixture
def local(tmp_path, settings, monkeypatch):
    monkeypatch.setenv("LADDERLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("LADDERLAB_LADDER_URL", f"sqlite:///{tmp_path / 'ladder.sqlite'}")
    monkeypatch.delenv("COLUMNS", raising=False)
    here = Settings.from_env(settings.root)
    store = Store.open(here)
    store.append(ev(learner=ODD, lab="sec-1-iptables-hardening"))
    store.append(ev(learner=LONG, lab="sec-1-iptables-hardening"))
    return here


def run(capsys, *args):
    code = cli.main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_badges_key_prints_the_issuer_did_exactly(local, capsys):
    key = load_or_create(local)
    did = did_key(key.public_key())
    assert did.startswith("did:key:z6Mk")
    code, out, err = run(capsys, "badges", "key")
    assert code == 0
    assert out == public_pem(key)
    assert err == f"ladderlab: issuer: {did}\n"  # was "did🔑z6Mk...": the console read ":key:" as an emoji


def test_learner_text_is_printed_verbatim_in_tables_and_messages(local, capsys, tmp_path):
    code, out, _ = run(capsys, "ladder")
    assert code == 0
    assert ODD in out and LONG in out and "\N{KEY}" not in out and "\x1b[" not in out
    header = [cell.strip() for cell in next(line for line in out.splitlines() if "learner" in line).split("\u2503")]
    for learner in (ODD, LONG):  # every column kept whole: the security level sits under "sec"
        row = [cell.strip() for cell in next(line for line in out.splitlines() if learner in line).split("\u2502")]
        # sec-1 shows one of Security L1's clauses: the level stands, and says it is shown in part
        assert row[header.index("learner")] == learner and row[header.index("sec")] == "1 (in part)"

    code, out, _ = run(capsys, "ladder", "--json")
    assert {p["learner"] for p in json.loads(out)["learners"]} == {ODD, LONG}

    code, _, err = run(capsys, "badges", "issue", "--learner", ODD, "--out", str(tmp_path / "badges"))
    assert code == 0 and f"ladderlab: {ODD}: security level 1 -> {tmp_path / 'badges' / ODD}" in err

    code, _, err = run(capsys, "ladder", "--cohort", "[red]nope:key:")
    assert code == 2
    assert err.startswith("error: no cohort '[red]nope:key:' in course.yaml")


def test_errors_quote_bad_input_verbatim(local, capsys):
    code, _, err = run(capsys, "grade", "sec-1-iptables-hardening", "--notebook", "x.ipynb", "--student", ODD)
    assert code == 2
    assert err.startswith(f"error: learner id {ODD!r} is invalid")


def test_a_credential_is_reported_with_its_path_verbatim(local, capsys, tmp_path):
    odd_dir = tmp_path / "[bold]in:key:"
    code, _, _ = run(capsys, "badges", "issue", "--learner", ODD, "--out", str(odd_dir))
    assert code == 0
    token = odd_dir / ODD / "security-1.jwt"
    code, out, _ = run(capsys, "badges", "verify", str(token))
    assert code == 0 and out.startswith(f"VALID {token}: ") and f" for {ODD} " not in out  # subject is a DID
    token.write_text(token.read_text().strip()[:-4] + "AAAA")
    code, out, _ = run(capsys, "badges", "verify", str(token))
    assert code == 1 and out.startswith(f"INVALID {token}: ")


def test_param_without_a_value_is_refused_before_anything_runs(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["env", "up", "firewall", "--param", "nope"])
    assert exc.value.code == 2
    assert "--param: expected NAME=VALUE, got 'nope'" in capsys.readouterr().err


def test_who_a_ladder_command_selects(settings):
    from ladderlab.course import load_course
    from ladderlab.errors import UsageError
    from ladderlab.ladder.views import members

    course = load_course(settings.course_file).model_copy(update={"cohorts": {"spring": ["ada", "bo"]}})
    assert members(course) is None  # everyone in the record
    assert members(course, cohort="spring") == ["ada", "bo"]
    assert members(course, learner="ada", cohort="spring") == ["ada"]
    assert members(course, learner="cy", cohort="spring") == []  # not in that cohort: nobody
    assert members(course, learner="cy") == ["cy"]
    with pytest.raises(UsageError, match=r"no cohort .autumn. in course.yaml or .ladderlab cohort. "
                                         r"\(cohorts: spring\)"):
        members(course, cohort="autumn")
