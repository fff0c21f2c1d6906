"""Hub mode's logic without a hub: passwords, account names, what the jail hides, the jail's refusals."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import stat
from pathlib import Path

import pytest

from ladderlab.config import Settings
from ladderlab.errors import ConfigError, UsageError
from ladderlab.hub import accounts, auth, config, database, jail


def test_an_issued_password_verifies_and_no_other_does(tmp_path):
    path = tmp_path / "passwords.json"
    first = auth.issue(path, ["ada", "bob"])
    stored = auth.load(path)
    assert set(stored) == {"ada", "bob"} and first["ada"] not in path.read_text(), "only hashes are kept"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert auth.verify(first["ada"], stored["ada"])
    assert not auth.verify(first["bob"], stored["ada"])
    assert not auth.verify("", stored["ada"])
    again = auth.issue(path, ["bob"])
    assert auth.load(path)["ada"] == stored["ada"], "issuing bob a new password leaves ada's"
    assert auth.verify(again["bob"], auth.load(path)["bob"]) and not auth.verify(first["bob"], auth.load(path)["bob"])


@pytest.mark.parametrize("stored", ["", "plain", "md5$00$00", "scrypt$zz$00", "scrypt$00"])
def test_a_malformed_hash_never_verifies(stored):
    assert not auth.verify("anything", stored)


@pytest.mark.parametrize(("text", "says"), [("{", "not JSON"), ("[1]", "must map each learner"),
                                            ('{"ada": 1}', "must map each learner")])
def test_a_bad_passwords_file_names_itself(tmp_path, text, says):
    path = tmp_path / "passwords.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=says) as err:
        auth.load(path)
    assert str(path) in str(err.value)


def test_the_jail_hides_the_checkout_the_cache_and_nothing_twice(tmp_path):
    settings = Settings.from_env(tmp_path)
    hidden = config.hidden_paths(settings)
    assert str(tmp_path.resolve()) in hidden
    assert not [p for p in hidden if p != str(tmp_path.resolve()) and Path(p).is_relative_to(tmp_path.resolve())], \
        "the cache inside the checkout is covered by the checkout"


def test_the_jail_hides_the_hubs_private_state_and_its_database(tmp_path):
    settings = Settings.from_env(tmp_path / "checkout")
    hub_root = tmp_path / "srv"
    assert config.hidden_paths(settings, hub_root) == config.hidden_paths(settings), "nothing there yet: no hide"
    for d in ("private", "postgres", "home"):
        (hub_root / d).mkdir(parents=True)
    hidden = config.hidden_paths(settings, hub_root)
    assert str((hub_root / "private").resolve()) in hidden and str((hub_root / "postgres").resolve()) in hidden
    assert str((hub_root / "home").resolve()) not in hidden, "the learners' homes are reached (each its own)"
    # a hub root inside the checkout is covered by the checkout: nothing hidden twice
    inside = config.hidden_paths(settings, settings.root / "srv")
    assert inside == config.hidden_paths(settings)


def test_the_hubs_database_urls_reach_its_socket_only(tmp_path):
    db = database.HubDatabase(tmp_path / "postgres")
    urls = db.urls()
    assert set(urls) == {"LADDERLAB_LADDER_URL", "LADDERLAB_GRADEBOOK_URL", "LADDERLAB_QUEUE_URL"}
    assert urls["LADDERLAB_LADDER_URL"].endswith(f"/ladder?unix_sock={tmp_path}/postgres/run/.s.PGSQL.5432")
    assert urls["LADDERLAB_GRADEBOOK_URL"].startswith("postgresql+pg8000://ladder@/gradebook?")
    assert urls["LADDERLAB_QUEUE_URL"] == f"postgresql://ladder@/queue?host={tmp_path}/postgres/run"
    assert not db.running()
    (db.data).mkdir(parents=True)
    (db.data / "postmaster.pid").write_text("999999999\n")  # a pid no process has: a server that died
    assert not db.running()


def test_a_queue_url_of_no_known_kind_is_refused_by_name(tmp_path, monkeypatch):
    from ladderlab.service.paths import ServicePaths
    from ladderlab.service.queue import _huey

    monkeypatch.setenv("LADDERLAB_QUEUE_URL", "mysql://x@y/queue")
    with pytest.raises(UsageError, match=re.escape("LADDERLAB_QUEUE_URL: expected redis://... or postgresql://")):
        _huey(ServicePaths.of(Settings.from_env(tmp_path)))


def test_an_interpreter_under_a_closed_directory_is_shown_inside_it():
    hide, expose = config.interpreter_view()
    for h in hide:
        assert not Path(h).stat().st_mode & 0o001
    assert len(hide) == len(expose) <= 1
    if expose:
        assert Path(expose[0]).is_relative_to(hide[0])


def test_the_jail_parses_its_command_after_the_double_dash():
    plan = jail.parse(["--user", "ll-ada", "--hide", "/tmp", "--", "echo", "--hide", "x"])
    assert plan.user == "ll-ada" and plan.hide == (Path("/tmp").resolve(),) and plan.command == ("echo", "--hide", "x")


def test_the_roster_authenticator_reads_the_file_it_is_given(tmp_path):
    pytest.importorskip("jupyterhub")
    import asyncio

    path = tmp_path / "passwords.json"
    pw = auth.issue(path, ["ada"])["ada"]
    a = auth.RosterAuthenticator(passwords_file=str(path))
    assert asyncio.run(a.authenticate(None, {"username": "ada", "password": pw})) == "ada"
    assert asyncio.run(a.authenticate(None, {"username": "ada", "password": pw + "x"})) is None
    assert asyncio.run(a.authenticate(None, {"username": "eve", "password": pw})) is None
    assert json.loads(path.read_text())["ada"].startswith("scrypt$")


def test_the_learners_chain_allows_each_uid_its_subnets_and_rejects_the_rest():
    from ladderlab.environments import learnerguard as lg

    text = lg.ruleset({1001: ["172.30.5.0/24", "172.30.5.7/24"], 1002: []})
    lines = text.splitlines()
    assert lines[:2] == ["*filter", f":{lg.CHAIN} - [0:0]"] and lines[-2:] == [f"-A {lg.CHAIN} -j REJECT", "COMMIT"]
    rule = f"-A {lg.CHAIN} -m owner --uid-owner 1001 -d 172.30.5.0/24 -j RETURN"
    assert [x for x in lines if "--uid-owner" in x] == [rule], "one rule per distinct subnet; none for no subnet"
    assert "--uid-owner" not in lg.ruleset({1001: ["172.30.5.0/24"]}, v6=True), "IPv6: loopback and replies only"
    for bad in ({0: ["10.0.0.0/8"]}, {1001: ["fd00::/64"]}):
        with pytest.raises(lg.GuardError):
            lg.ruleset(bad)


def test_the_practice_record_keeps_each_checks_latest_result(tmp_path):
    from ladderlab.hub import cohortview

    settings = Settings.from_env(Path(__file__).resolve().parents[2])
    settings = settings.__class__(**{**settings.__dict__, "cache_dir": tmp_path})
    cohortview.record_practice(settings, "ada", "lab-1", [(False, "a"), (True, "b"), (None, "c")])
    cohortview.record_practice(settings, "ada", "lab-1", [(True, "a")])
    assert cohortview.read_practice(settings, "ada", "lab-1") == {"a": True, "b": True}, "c was not run"
    assert cohortview.read_practice(settings, "bo", "lab-1") == {}
    cohortview.practice_path(settings, "bo", "lab-1").parent.mkdir(parents=True)
    cohortview.practice_path(settings, "bo", "lab-1").write_text("[1, 2")
    assert cohortview.read_practice(settings, "bo", "lab-1") == {}, "a broken record is no progress, not a crash"


def test_trainers_are_kept_apart_from_learners_and_reach_the_hubs_config(tmp_path, monkeypatch, settings):
    from traitlets.config import Config

    from ladderlab.errors import UsageError
    from ladderlab.hub import run

    monkeypatch.setattr(run, "roster", lambda settings, cohort: ["ada", "bo"])
    issued = run.passwords(settings, "c1", tmp_path, new_trainers=["tess"])
    assert sorted(issued) == ["tess"], "naming a trainer issues only the trainer's password"
    assert run.trainers(tmp_path) == ["tess"]
    with pytest.raises(UsageError, match="cannot be a trainer too: ada"):
        run.passwords(settings, "c1", tmp_path, new_trainers=["ada"])
    with pytest.raises(UsageError):
        run.passwords(settings, "c1", tmp_path, new_trainers=["Not An Id"])
    assert run.trainers(tmp_path) == ["tess"], "a refused call changed nothing"
    assert sorted(run.passwords(settings, "c1", tmp_path)) == ["ada", "bo"]
    plan = config.HubPlan(root=tmp_path, settings=settings, learners=("ada", "bo"), cohort="c1", trainers=("tess",))
    c = Config()
    monkeypatch.setenv("LADDERLAB_CACHE_DIR", str(settings.cache_dir))  # the config sets it: restored after the test
    exec(run.write_config(plan).read_text(), {"c": c})  # noqa: S102 - the file ladderlab just wrote
    assert c.Authenticator.allowed_users == {"ada", "bo", "tess"}
    roles = {r["name"]: r for r in c.JupyterHub.load_roles}
    assert roles["ladderlab-trainer"]["users"] == ["tess"], "the trainer's role, by user"
    assert "custom:ladderlab:trainer" in roles["ladderlab-trainer"]["scopes"]
    assert "custom:ladderlab:trainer" not in roles["user"]["scopes"], "learners never hold the trainer scope"
    service = c.JupyterHub.services[0]
    assert service["environment"]["LADDERLAB_HUB_COHORT"] == "c1"
    (tmp_path / "private" / "trainers.json").write_text('{"tess": 1}')
    with pytest.raises(UsageError, match=r"trainers\.json: expected a list"):
        run.trainers(tmp_path)


def test_the_hand_out_places_released_notebooks_and_never_over_the_learners_work(tmp_path):
    """hub/workspace.place_all (what runs as the learner): new labs fetched, untouched ones updated, changed ones
    kept with the new release beside them, a folder the learner cannot write reported, and no path out of the
    home accepted."""
    from ladderlab.hub import workspace

    home = tmp_path / "home"
    home.mkdir()
    v1 = {"start-here.ipynb": '{"v": 1}', "lab-a/lab-a.ipynb": '{"a": 1}', "lab-b/lab-b.ipynb": '{"b": 1}'}
    assert workspace.place_all(home, v1) == dict.fromkeys(v1, "fetched")
    assert (home / "lab-a" / "lab-a.ipynb").read_text() == '{"a": 1}'
    (home / "lab-b" / "lab-b.ipynb").write_text('{"b": "my work"}')
    v2 = {**v1, "lab-a/lab-a.ipynb": '{"a": 2}', "lab-b/lab-b.ipynb": '{"b": 2}'}
    done = workspace.place_all(home, v2)
    assert done["start-here.ipynb"] == "kept" and done["lab-a/lab-a.ipynb"] == "updated"
    assert done["lab-b/lab-b.ipynb"].startswith("changed since you started")
    assert (home / "lab-b" / "lab-b.ipynb").read_text() == '{"b": "my work"}', "the learner's work stays"
    beside = [p.name for p in (home / "lab-b").iterdir() if ".updated-" in p.name]
    assert len(beside) == 1 and (home / "lab-b" / beside[0]).read_text() == '{"b": 2}'
    assert (home / "lab-a" / "lab-a.ipynb").read_text() == '{"a": 2}'
    locked = home / "lab-c"
    locked.mkdir(mode=0o500)
    if os.geteuid() != 0:  # root writes anyway: the learner's process is never root (the jail drops it)
        assert workspace.place_all(home, {"lab-c/lab-c.ipynb": "{}"})["lab-c/lab-c.ipynb"].startswith("not placed")
    for bad in ("../x.ipynb", "/etc/x.ipynb", "a/b/c.ipynb", "lab-a/lab-a.py"):
        with pytest.raises(ValueError, match="not a workspace notebook"):
            workspace.place_all(home, {bad: "{}"})
    released = tmp_path / "outbound"
    (released / "lab-a").mkdir(parents=True)
    (released / "lab-a" / "lab-a.ipynb").write_text('{"a": 3}')
    start = tmp_path / "start-here.ipynb"
    start.write_text('{"s": 1}')
    assert workspace.released(released, ["lab-a", "not-released"], start) == {
        "start-here.ipynb": '{"s": 1}', "lab-a/lab-a.ipynb": '{"a": 3}'}


def test_a_hub_learners_jupyter_has_no_nbgrader(tmp_path, settings):
    """The learners' Jupyter config: nbgrader's lab extension and every server extension off, readable by all,
    on the servers' JUPYTER_CONFIG_PATH."""
    from traitlets.config import Config

    plan = config.HubPlan(root=tmp_path, settings=settings, learners=("ada",))
    c = Config()
    config.configure(c, plan)
    conf = plan.learner_jupyter_config
    assert c.Spawner.environment["JUPYTER_CONFIG_PATH"] == str(conf)
    page = json.loads((conf / "labconfig" / "page_config.json").read_text())
    assert page == {"disabledExtensions": {"@jupyter/nbgrader": True}}
    server = json.loads((conf / "jupyter_server_config.json").read_text())["ServerApp"]["jpserver_extensions"]
    assert set(server) == set(config.NBGRADER_SERVER_EXTENSIONS) and not any(server.values())
    for path in (conf / "labconfig" / "page_config.json", conf / "jupyter_server_config.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
    from ladderlab.course import load_course

    course = load_course(settings.course_file)
    assert c.LadderlabSpawner.released_labs == [lab.id for lab in course.labs if lab.status == "published"]
    assert c.LadderlabSpawner.released_from.endswith(f"service/exchange/{course.id}/outbound")
    # A lab that is not published is not handed out.
    root = tmp_path / "course"
    root.mkdir()
    text = settings.course_file.read_text()
    first = course.labs[0].id
    at = text.index(f"id: {first}")
    (root / "course.yaml").write_text(text[:at] + text[at:].replace("status: published", "status: planned", 1))
    drafted = dataclasses.replace(settings, root=root)
    handed = config.released(drafted)[1]
    assert first not in handed and len(handed) == len(course.labs) - 1
    # What the spawner reads at each server start: the course as it is then, not as it was when the hub started.
    assert c.LadderlabSpawner.course_file == str(settings.course_file)
    assert config.published(root / "course.yaml") == handed


@pytest.mark.parametrize("child, says", [
    ("import sys; sys.stdin.read(); print('boom', file=sys.stderr); sys.exit(3)", "failed (exit 3): boom"),
    ("import sys; sys.stdin.read(); print('[1, 2]')", "answered something else"),
    ("import sys, json; sys.stdin.read(); print(json.dumps({'other.ipynb': 'fetched'}))", "answered something else"),
    ("import sys; sys.stdin.read(); print('x' * 3_000_000)", "said more than"),
    ("import time; time.sleep(30)", "failed (exit -9)"),
])
def test_a_hand_out_that_fails_or_answers_wrong_is_an_error(child, says):
    """What the learner's process answers is checked: a failure, a reply that is not one result per notebook
    sent, an endless reply or a hang are errors (HandOutError), never a result."""
    import sys

    from ladderlab.hub import workspace

    with pytest.raises(workspace.HandOutError, match=re.escape(says)):
        workspace.hand_out([sys.executable, "-c", child], {"a/a.ipynb": "{}"}, env={}, timeout=2)
    ok = "import sys, json; json.loads(sys.stdin.read()); print(json.dumps({'a/a.ipynb': 'fetched'}))"
    assert workspace.hand_out([sys.executable, "-c", ok], {"a/a.ipynb": "{}"}, env={}) == {"a/a.ipynb": "fetched"}


def test_the_spawner_hands_out_the_labs_published_when_the_server_starts(tmp_path, monkeypatch, settings):
    from types import SimpleNamespace

    from ladderlab.hub import spawner, workspace

    text = settings.course_file.read_text()
    labs = config.published(settings.course_file)
    first = labs[0]
    outbound = tmp_path / "outbound"
    for lab in labs:
        (outbound / lab).mkdir(parents=True)
        (outbound / lab / f"{lab}.ipynb").write_text("{}")
    course = tmp_path / "course.yaml"
    at = text.index(f"id: {first}")
    course.write_text(text[:at] + text[at:].replace("status: published", "status: planned", 1))
    sent: list[list[str]] = []
    monkeypatch.setattr(workspace, "hand_out", lambda command, notebooks, env: sent.append(sorted(notebooks)) or {})
    sp = spawner.LadderlabSpawner(user=SimpleNamespace(name="ada", url="/user/ada/"), released_from=str(outbound),
                                  released_labs=labs[1:], course_file=str(course))
    account = accounts.Account(name="ll-ada", learner="ada", uid=12345, gid=12345, home=tmp_path / "home")
    sp.hand_out(account)  # as the hub started: the first lab not published
    course.write_text(text)  # published (and released) while the hub runs
    sp.hand_out(account)
    course.write_text("labs: [")  # unreadable: the labs published when the hub started
    sp.hand_out(account)
    everything = sorted(f"{lab}/{lab}.ipynb" for lab in labs)
    assert sent == [[n for n in everything if not n.startswith(first + "/")], everything,
                    [n for n in everything if not n.startswith(first + "/")]]


def test_the_gradebook_is_the_course_roots_sqlite_unless_the_variable_names_another(tmp_path, monkeypatch, settings):
    from traitlets.config.loader import PyFileConfigLoader

    from ladderlab.course import load_course
    from ladderlab.course.labs import load_lab
    from ladderlab.grading.checks import load_graders
    from ladderlab.grading.nbgrader_ext import gradebook_url, init_course_root

    course = load_course(settings.course_file)
    lab = load_lab(settings, course, "sys-3-tested-cli-tool", registry=load_graders(settings.root))
    root = init_course_root(settings, tmp_path / "course", [lab])
    monkeypatch.delenv("LADDERLAB_GRADEBOOK_URL", raising=False)
    assert gradebook_url(root) == f"sqlite:///{root / 'gradebook.db'}"
    loaded = PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config()
    assert "db_url" not in loaded.CourseDirectory, "nbgrader's own default: the course root's gradebook.db"
    url = "postgresql+pg8000://ladder@/gradebook?unix_sock=/srv/x/postgres/run/.s.PGSQL.5432"
    monkeypatch.setenv("LADDERLAB_GRADEBOOK_URL", url)
    assert gradebook_url(root) == url
    loaded = PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config()
    assert loaded.CourseDirectory.db_url == url, "nbgrader's own commands follow the variable too"


def test_a_second_hub_on_the_same_root_is_refused(tmp_path, settings):
    from ladderlab.hub import run

    plan = config.HubPlan(root=tmp_path / "srv", settings=settings, learners=())
    fd = run._lock(plan)
    try:
        with pytest.raises(UsageError, match="a hub already runs on"):
            run._lock(plan)
    finally:
        os.close(fd)
    os.close(run._lock(plan))  # free again once the first is gone


def test_a_start_whose_databases_cannot_be_made_stops_the_server(tmp_path, monkeypatch):
    from ladderlab.errors import LadderlabError

    db = database.HubDatabase(tmp_path / "postgres")
    calls: list[str] = []
    monkeypatch.setattr(database, "binary", lambda name: name)  # no PostgreSQL needed on the machine
    monkeypatch.setattr(db, "_prepare", lambda: None)
    monkeypatch.setattr(db, "_as_postgres", lambda cmd, what, timeout=120: calls.append(what))
    monkeypatch.setattr(db, "_write_hba", lambda graders: None)
    running = iter([False, True])
    monkeypatch.setattr(db, "running", lambda: next(running))

    def refuse(database: str = "postgres"):
        raise OSError("no socket")

    monkeypatch.setattr(db, "_connect", refuse)
    with pytest.raises(LadderlabError, match="databases could not be made: OSError: no socket"):
        db.start(lambda _: None)
    assert calls == ["initdb", "pg_ctl start", "pg_ctl stop"]


def test_commands_on_a_hubs_cache_read_its_postgresql_and_say_so_when_it_is_down(tmp_path, monkeypatch, capsys):
    from ladderlab import cli

    for var in database.DATABASES.values():
        monkeypatch.delenv(var, raising=False)
    settings = Settings(root=Settings.from_env().root, cache_dir=tmp_path / "cache")
    monkeypatch.setenv("LADDERLAB_CACHE_DIR", str(settings.cache_dir))
    db = database.HubDatabase(tmp_path / "srv" / "postgres")
    db.data.mkdir(parents=True)
    assert cli._hub_records(settings, cli.cmd_ladder_verify) is None, "no hub noted in this cache"
    (db.data / "PG_VERSION").write_text("15\n")
    database.remember(settings, tmp_path / "srv")
    assert cli._hub_records(settings, cli.cmd_hub_start) is None, "the hub's own commands name their root"
    monkeypatch.setattr(os, "environ", dict(os.environ))  # what _hub_records sets stays in this test
    found = cli._hub_records(settings, cli.cmd_ladder_verify)
    assert found is not None and found.data == db.data
    assert {var: os.environ[var] for var in database.DATABASES.values()} == db.urls()
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items() if k not in db.urls()})
    # The server is not running: the record cannot be read, and the command says where it is and how to start it.
    assert cli.main(["ladder", "verify"]) == 1
    said = capsys.readouterr().err
    assert "the hub's PostgreSQL" in said and "not running" in said and "hub database --start" in said, said


def test_a_new_hub_database_beside_earlier_gradings_says_how_to_bring_them_over(tmp_path):
    from ladderlab.hub import run
    from ladderlab.service.ledger import GRADED, Ledger
    from ladderlab.service.paths import ServicePaths

    settings = Settings(root=Settings.from_env().root, cache_dir=tmp_path / "cache")
    paths = ServicePaths.of(settings)
    db = database.HubDatabase(tmp_path / "srv" / "postgres")
    said: list[str] = []
    db.created = ["ladder", "gradebook", "queue"]
    run._warn_of_earlier_gradings(settings, db, said.append)  # no ledger yet
    paths.ledger_db.parent.mkdir(parents=True)
    ledger = Ledger(paths.ledger_db)
    key = "ada+sys-3-tested-cli-tool+2026-11-24 10:00:00.000000 UTC+abc"
    ledger.add(key)
    run._warn_of_earlier_gradings(settings, db, said.append)  # queued, not graded
    assert said == []
    ledger.claim(key)
    ledger.finish(key, GRADED, score=10, max_score=10, passed=True)
    run._warn_of_earlier_gradings(settings, db, said.append)
    assert len(said) == 1 and "1 hand-in(s) were graded before" in said[0] and "ladder rebuild" in said[0], said
    db.created = []  # the databases were there already: nothing new to say
    run._warn_of_earlier_gradings(settings, db, said.append)
    assert len(said) == 1


@pytest.mark.parametrize(("listen", "allow", "why"), [
    ("0.0.0.0", "10.0.5.0/24", "wildcard"),  # noqa: S104 (refused: the point)
    ("::", "10.0.5.0/24", "wildcard"),
    ("hub.example", "10.0.5.0/24", "expected one IP address"),
    ("10.0.5.1", "0.0.0.0/0", "that is every address"),
    ("10.0.5.1", "graders", "expected the grading machines' network"),
])
def test_graders_get_one_private_address_and_their_network_only(listen, allow, why):
    with pytest.raises(UsageError, match=re.escape(why)):
        database.GraderAccess(listen, allow)


def test_the_hba_file_lets_in_the_grader_role_to_judging_from_the_graders_network_only(tmp_path):
    db = database.HubDatabase(tmp_path / "postgres")
    db.data.mkdir(parents=True)
    db._write_hba(None)
    rules = [line for line in db.hba.read_text().splitlines() if not line.startswith("#")]
    assert rules == ["local all all trust"], "no address at all without graders (initdb's file trusts 127.0.0.1)"
    db._write_hba(database.GraderAccess("10.0.5.1", "10.0.5.7/24"))
    rules = [line for line in db.hba.read_text().splitlines() if not line.startswith("#")]
    assert rules == ["local all all trust", "host all all 10.0.5.1/32 reject",
                     "host judging grader 10.0.5.0/24 scram-sha-256"], "the hub machine's own processes come from ADDR"
    assert db.hba.stat().st_mode & 0o777 == 0o600


def test_the_grader_url_is_there_only_for_a_hub_started_for_graders(tmp_path):
    db = database.HubDatabase(tmp_path / "postgres")
    db.base.mkdir(parents=True)
    with pytest.raises(UsageError, match="not started for graders on other machines"):
        db.grader_url()
    db.grader_password_file.write_text("ab12\n")
    db.graders_file.write_text('{"listen": "10.0.5.1", "allow": "10.0.5.0/24"}')
    assert db.grader_url() == "postgresql+pg8000://grader:ab12@10.0.5.1:5432/judging"
    db.graders_file.write_text('{"listen": "fd00::1", "allow": "fd00::/64"}')
    assert db.grader_url() == "postgresql+pg8000://grader:ab12@[fd00::1]:5432/judging"


def test_graders_flags_go_together_and_a_grader_needs_its_database(monkeypatch, capsys):
    from ladderlab import cli
    from ladderlab.service.judging import URL_ENV

    assert cli.main(["hub", "start", "c", "--root", "/nonexistent", "--graders-listen", "10.0.5.1"]) == 2
    assert "--graders-listen and --graders-from go together" in capsys.readouterr().err
    monkeypatch.delenv(URL_ENV, raising=False)
    assert cli.main(["service", "grader"]) == 2
    assert "no judging database: give --database URL or set LADDERLAB_JUDGING_URL" in capsys.readouterr().err
    assert cli.main(["service", "grader", "--database", "postgresql+pg8000://grader:s3cret@127.0.0.1:9/judging"]) == 1
    said = capsys.readouterr().err
    assert "does not answer" in said and "s3cret" not in said and "***" in said, said
