"""Hub mode, first slice (issue 15): a real JupyterHub (6.x) with its real proxy, ladderlab's roster login and
spawner. Two learners log in with the passwords ladderlab issued; each server runs as that learner's own
account inside the jail, where the checkout and the engine's socket are out of reach; a learner's token
reaches their own server and not the other's. What the spawned server is, is asked of the kernel (/proc).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import nbformat
import pytest
import requests

from ladderlab.hub import accounts, proxy
from ladderlab.hub.database import HubDatabase
from ladderlab.testing import private_cache, stop_process

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="the hub runs as root")]

LEARNERS = ("hub-a", "hub-b", "hub-c")
LAB = "sys-3-tested-cli-tool"
TRAINER = "hub-t"
#: The hub runs for graders on other machines (``--graders-listen``): its PostgreSQL listens on the hub's end of a
#: veth pair as on a private address; no grader connects from elsewhere, so every hand-in is judged by the hub
#: service's own judge through the judging table (tests/integration/test_remote_grader.py has one elsewhere).
GRADERS_IF, GRADERS_ADDR = "llhubg0", "10.251.78.1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "ladderlab.cli", *args], env=env, capture_output=True, text=True,
                       timeout=120, check=False)
    assert r.returncode == 0, (args, r.stderr[-2000:])
    return r


@pytest.fixture(scope="module")
def hub(settings, tmp_path_factory):
    """`ladderlab hub start` for a cohort of two, as a trainer runs it (a private cache holds the cohort)."""
    pytest.importorskip("jupyterhub", reason="the hub extra (make setup installs it)")
    chp = proxy.path(settings)
    assert chp.exists(), "`ladderlab setup --hub` installs the proxy (make test runs it)"
    work = tmp_path_factory.mktemp("hub")
    cache = private_cache(settings, work / "cache").cache_dir
    root = Path(tempfile.mkdtemp(prefix="ll-hub-"))
    root.chmod(0o755)
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, LADDERLAB_CACHE_DIR=str(cache), LADDERLAB_WORKSPACE=str(work / "workspace"),
               LADDERLAB_ROOT=str(settings.root), LADDERLAB_HUB_PROXY=str(chp), LADDERLAB_HUB_TEST_TOKEN=token)
    roster = work / "roster.csv"
    roster.write_text("id,name,email,team\n" + "".join(f"{n},{n},{n}@example.org,t\n" for n in LEARNERS))
    cli(env, "cohort", "create", "hubbers")
    cli(env, "cohort", "add", "hubbers", "--roster", str(roster))
    issued = cli(env, "hub", "passwords", "hubbers", "--root", str(root)).stdout
    passwords = dict(line.split("\t") for line in issued.strip().splitlines())
    assert sorted(passwords) == sorted(LEARNERS)
    issued = cli(env, "hub", "passwords", "hubbers", "--root", str(root), "--trainer", TRAINER).stdout
    passwords.update(line.split("\t") for line in issued.strip().splitlines())
    assert sorted(passwords) == sorted([*LEARNERS, TRAINER])
    subprocess.run(["ip", "link", "del", GRADERS_IF], capture_output=True, check=False)
    subprocess.run(["ip", "link", "add", GRADERS_IF, "type", "veth", "peer", "name", GRADERS_IF + "p"], check=True)
    subprocess.run(["ip", "addr", "add", f"{GRADERS_ADDR}/30", "dev", GRADERS_IF], check=True)
    subprocess.run(["ip", "link", "set", GRADERS_IF, "up"], check=True)
    log = (work / "start.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "ladderlab.cli", "hub", "start", "hubbers", "--root", str(root),
                             "--port", str(port), "--graders-listen", GRADERS_ADDR, "--graders-from",
                             f"{GRADERS_ADDR}/30"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    hub_log = root / "private" / "jupyterhub.log"

    def logs() -> str:
        return (work / "start.log").read_text()[-1500:] + (hub_log.read_text()[-3000:] if hub_log.exists() else "")
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if requests.get(f"{url}/hub/api/", timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, logs()
            time.sleep(0.5)
        yield {"url": url, "token": token, "passwords": passwords, "root": root, "log": hub_log, "proc": proc,
               "logs": logs, "cache": str(cache)}
    finally:
        stop_process(proc)
        log.close()
        for learner in [*LEARNERS, TRAINER]:
            accounts.remove(learner)
        HubDatabase(root / "postgres").stop()  # `hub start` stops it; not when it had to be killed
        shutil.rmtree(root, ignore_errors=True)
        subprocess.run(["ip", "link", "del", GRADERS_IF], capture_output=True, check=False)


def api(hub, method: str, path: str, **kw) -> requests.Response:
    return requests.request(method, f"{hub['url']}/hub/api{path}", headers={"Authorization": f"token {hub['token']}"},
                            timeout=30, **kw)


def login(hub, learner: str, password: str) -> requests.Session:
    s = requests.Session()
    page = s.get(f"{hub['url']}/hub/login", timeout=30)
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text)
    data = {"username": learner, "password": password, **({"_xsrf": xsrf.group(1)} if xsrf else {})}
    s.post(f"{hub['url']}/hub/login", data=data, timeout=30, allow_redirects=False)
    return s


def logged_in(s: requests.Session, hub) -> bool:
    r = s.get(f"{hub['url']}/hub/home", timeout=30, allow_redirects=False)
    return r.status_code == 200


def spawn(hub, learner: str) -> None:
    r = api(hub, "POST", f"/users/{learner}/server")
    assert r.status_code in (201, 202), r.text + hub["logs"]()
    deadline = time.monotonic() + 120
    while True:
        model = api(hub, "GET", f"/users/{learner}").json()
        server = (model.get("servers") or {}).get("", {})
        if server.get("ready"):
            return
        assert time.monotonic() < deadline, hub["logs"]()
        time.sleep(0.5)


def server_pid(learner: str) -> int:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if f"JUPYTERHUB_USER={learner}".encode() in environ and b"jupyterhub-singleuser" in cmdline \
                and b"ladderlab.hub.jail" not in cmdline:
            return int(entry.name)
    raise AssertionError(f"no server process for {learner}")


def test_only_a_roster_learner_with_their_own_password_logs_in(hub):
    a, b = LEARNERS[:2]
    assert logged_in(login(hub, a, hub["passwords"][a]), hub)
    assert not logged_in(login(hub, a, hub["passwords"][b]), hub), "b's password is not a's"
    assert not logged_in(login(hub, "hub-z", hub["passwords"][a]), hub), "not on the roster"
    assert not logged_in(login(hub, a, ""), hub)


def test_each_server_runs_jailed_as_its_learner_and_reaches_only_their_own(hub, settings, tmp_path):
    # b's home holds a trap for a hand-out written by root: the lab's folder is a link to a directory of root's.
    canary = tmp_path / "root-only"
    canary.mkdir()
    home_b = accounts.lookup(LEARNERS[1])
    assert home_b is not None
    trap = home_b.home / LAB
    trap.symlink_to(canary, target_is_directory=True)
    os.lchown(trap, home_b.uid, home_b.gid)
    try:
        for learner in LEARNERS:
            spawn(hub, learner)
    finally:
        trap.unlink()
    # Each home is the released course: the start page and one released notebook per published lab, the learner's
    # own files, with no solution and no hidden check in them.
    from ladderlab.course import load_course

    course = load_course(settings.course_file)
    published = sorted(lab.id for lab in course.labs if lab.status == "published")
    for learner in LEARNERS:
        account = accounts.lookup(learner)
        assert account is not None
        found = sorted(str(p.relative_to(account.home)) for p in account.home.rglob("*.ipynb")
                       if ".ladderlab" not in p.parts)
        expected = sorted(["start-here.ipynb", *(f"{lab}/{lab}.ipynb" for lab in published)])
        if learner == LEARNERS[1]:
            expected.remove(f"{LAB}/{LAB}.ipynb")
        assert found == expected, (learner, found)
        for name in found:
            path = account.home / name
            assert path.stat().st_uid == account.uid, (learner, name)
            text = path.read_text()
            assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text, (learner, name)
    assert list(canary.iterdir()) == [], "the hand-out wrote through b's link as root"
    # What a's code reaches, run where a's kernels run: not the engine's socket, the course, the cache's keys and
    # records, b's home, or b's server's files.
    a, b = LEARNERS[:2]
    targets = {"docker": "/var/run/docker.sock", "course": str(settings.root / "course.yaml"),
               "solutions": str(settings.root / "labs" / LAB / f"{LAB}.ipynb"),
               "cache": str(Path(hub["cache"]) / "keys"), "b-home": str(accounts.lookup(b).home / "start-here.ipynb"),
               "database": str(HubDatabase(hub["root"] / "postgres").socket),
               "hub-private": str(hub["root"] / "private" / "passwords.json")}
    probe = ("import json, os, socket\nout = {}\n"
             f"for name, path in {targets!r}.items():\n"
             "    try:\n"
             "        if name in ('docker', 'database'):\n"
             "            s = socket.socket(socket.AF_UNIX); s.connect(path); out[name] = 'reached'\n"
             "        elif os.path.isdir(path):\n"
             "            out[name] = 'listed ' + str(len(os.listdir(path)))\n"
             "        else:\n"
             "            open(path).read(1); out[name] = 'read'\n"
             "    except OSError as e:\n"
             "        out[name] = type(e).__name__\n"
             "print(json.dumps(out))")
    assert all(os.path.lexists(path) for path in targets.values()), targets  # each is there, from root's side
    r = subprocess.run([*jail_command(settings, a, hub), "--", sys.executable, "-c", probe], capture_output=True,
                       text=True, timeout=60, check=False, env={"PATH": os.environ["PATH"]})
    assert r.returncode == 0, r.stderr[-2000:]
    reached = json.loads(r.stdout.strip().splitlines()[-1])
    # The socket and the checkout's files are covered (/dev/null is no socket; an empty tmpfs holds nothing), the
    # cache's directory is a tmpfs no one may enter, b's home is b's (0700), and so are the hub's private state and
    # its PostgreSQL (the records, the gradebook and the queue).
    assert reached == {"docker": "ConnectionRefusedError", "course": "FileNotFoundError",
                       "solutions": "FileNotFoundError", "cache": "PermissionError", "b-home": "PermissionError",
                       "database": "PermissionError", "hub-private": "PermissionError"}, reached
    assert "not placed" in hub["log"].read_text(), "the hub says what it could not place"
    pids = {learner: server_pid(learner) for learner in LEARNERS}
    own_mnt = os.readlink("/proc/self/ns/mnt")
    for learner, pid in pids.items():
        account = accounts.lookup(learner)
        assert account is not None
        status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
        assert status["Uid"].split() == [str(account.uid)] * 4, (learner, status["Uid"])
        assert status["NoNewPrivs"].strip() == "1"
        assert os.readlink(f"/proc/{pid}/ns/mnt") != own_mnt, "the server is in its own mount namespace"
        mounts = Path(f"/proc/{pid}/mountinfo").read_text()
        checkout = str(settings.root.resolve())
        assert re.search(rf" {re.escape(checkout)} [^\n]* - tmpfs ", mounts), "the checkout is covered inside"
    # Each learner's token (minted by the hub for them) reaches their own server's API, not the other's.
    tokens = {learner: api(hub, "POST", f"/users/{learner}/tokens", json={"expires_in": 600}).json()["token"]
              for learner in LEARNERS}
    a, b = LEARNERS[:2]

    def contents(owner: str, as_learner: str) -> requests.Response:
        return requests.get(f"{hub['url']}/user/{owner}/api/contents", timeout=30, allow_redirects=False,
                            headers={"Authorization": f"token {tokens[as_learner]}"})

    assert contents(a, a).status_code == 200
    assert contents(b, b).status_code == 200
    assert contents(b, a).status_code in (302, 403), "a cannot reach b's server"
    home = accounts.lookup(a)
    assert home is not None
    (home.home / "mine.txt").write_text("a's work")
    listed = json.loads(contents(a, a).text)
    assert "mine.txt" in [item["name"] for item in listed["content"]], "a's server serves a's home"


def test_the_service_knows_each_caller_from_the_hub_and_never_from_the_request(hub):
    """The ladderlab service behind the hub: a learner's token says who they are; no token is a 401 in JSON,
    not a login page; a request that names a learner is refused."""
    tokens = {learner: api(hub, "POST", f"/users/{learner}/tokens", json={"expires_in": 600}).json()["token"]
              for learner in LEARNERS}
    base = f"{hub['url']}/services/ladderlab/api"

    def whoami(token: str | None, query: str = "") -> requests.Response:
        headers = {"Authorization": f"token {token}"} if token else {}
        return requests.get(f"{base}/whoami{query}", headers=headers, timeout=30, allow_redirects=False)

    deadline = time.monotonic() + 60
    while whoami(tokens[LEARNERS[0]]).status_code in (502, 503) and time.monotonic() < deadline:
        time.sleep(0.5)  # the hub starts its service beside itself
    for learner in LEARNERS:
        r = whoami(tokens[learner])
        assert r.status_code == 200, r.text + hub["logs"]()
        assert r.json() == {"learner": learner, "trainer": False}
    r = whoami(None)
    assert r.status_code == 401 and r.json()["error"] == 401, r.text
    r = whoami("not-a-token")
    assert r.status_code == 401, r.text
    r = whoami(tokens[LEARNERS[0]], f"?learner={LEARNERS[1]}")
    assert r.status_code == 400 and "never names a learner" in r.json()["message"]


@pytest.mark.docker
def test_a_learner_starts_and_stops_only_their_own_environment_through_the_service(hub, images, client, settings):
    """The service starts the caller's environment (the learner from the token, never from the request), gives
    back its connection (hosts, key), refuses a lab the course lacks, and stops it again; another learner sees
    none of it."""
    lab = LAB
    tokens = {learner: api(hub, "POST", f"/users/{learner}/tokens", json={"expires_in": 600}).json()["token"]
              for learner in [*LEARNERS, TRAINER]}
    a, b = LEARNERS[:2]

    def call(method: str, learner: str, path: str) -> requests.Response:
        return requests.request(method, f"{hub['url']}/services/ladderlab/api/{path}", timeout=300,
                                headers={"Authorization": f"token {tokens[learner]}"})

    def row(learner: str) -> dict:
        r = call("GET", TRAINER, "cohort")
        assert r.status_code == 200, r.text + hub["logs"]()
        return next(x for x in r.json()["learners"] if x["id"] == learner)

    # The cohort view is the trainers': a learner's token gets 403 for the page, the snapshot and its events.
    for path in ("cohort", "api/cohort", "api/cohort/events"):
        r = requests.get(f"{hub['url']}/services/ladderlab/{path}", timeout=30, allow_redirects=False,
                         headers={"Authorization": f"token {tokens[a]}"})
        assert r.status_code == 403, (path, r.status_code, r.text[:300])
    with requests.get(f"{hub['url']}/services/ladderlab/api/cohort/events", timeout=30, stream=True,
                      headers={"Authorization": f"token {tokens[TRAINER]}"}) as r:
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/event-stream"), r.text[:300]
        first = next(line for line in r.iter_lines(decode_unicode=True) if line.startswith("data: "))
    snap = json.loads(first[len("data: "):])
    assert snap["cohort"] == "hubbers" and sorted(x["id"] for x in snap["learners"]) == sorted(LEARNERS), snap
    assert row(a)["envs"] == [] and row(a)["labs"][lab]["state"] == "not submitted"
    stopped = None
    try:
        r = call("POST", a, f"labs/{lab}/env")
        assert r.status_code == 200, r.text + hub["logs"]()
        conn = r.json()
        assert conn["learner"] == a and conn["lab"] == lab and conn["hosts"] and conn["private_key"]
        assert conn["answers_path"] == "", "the answers stay with the service"
        labels = {c.labels.get("io.ladderlab.learner") for c in client.containers.list(
            filters={"label": f"io.ladderlab.env-id={conn['env_id']}"})}
        assert labels == {a}, labels
        again = call("POST", a, f"labs/{lab}/env").json()
        assert again["env_id"] == conn["env_id"], "a second start reattaches"
        assert call("GET", a, f"labs/{lab}/env").json() == {"running": [conn["env_id"]]}
        assert call("GET", b, f"labs/{lab}/env").json() == {"running": []}
        assert call("DELETE", b, f"labs/{lab}/env").json() == {"stopped": []}, "b cannot stop a's environment"
        assert call("POST", a, "labs/no-such-lab/env").status_code == 404
        # The learner API as a's kernel runs it: jailed as ll-hub-a, with the server's token and the service URL.
        jail = jail_command(settings, a, hub)
        env = kernel_env(hub, tokens[a])
        script = ("import json, ladderlab\n"
                  f"lab = ladderlab.start({lab!r}, show=False)\n"
                  "who = lab.sh('tools', 'id -un').stdout.strip()\n"
                  "lab.answer('note', 'kept by the service')\n"
                  "passed = lab.check('json-format')\n"
                  "lab.hint('json-format')\n"
                  "print(json.dumps({'env': lab.env_id, 'learner': lab.learner, 'who': who, 'passed': passed,\n"
                  "                  'hints': lab.hints_used()}))")
        env = {"PATH": os.environ["PATH"], "JUPYTERHUB_API_TOKEN": tokens[a],
               "LADDERLAB_SERVICE_URL": f"{hub['url']}/services/ladderlab/",
               **({"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {})}
        r = subprocess.run([*jail, "--", sys.executable, "-c", script], env=env, capture_output=True, text=True,
                           timeout=300, check=False)
        assert r.returncode == 0, r.stderr[-2000:] + subprocess.run(["iptables", "-S"], capture_output=True,
                                                                    text=True).stdout[-3000:]
        got = json.loads(r.stdout.strip().splitlines()[-1])
        assert got["env"] == conn["env_id"] and got["learner"] == a and got["who"], got
        assert got["passed"] is False, "the untouched workstation has no tool: the check ran, through the service"
        assert "json-format" in r.stdout and "answer 'note' recorded" in r.stdout, r.stdout
        assert "hint 1 of 2 for json-format" in r.stdout and got["hints"] == {"json-format": 1}, r.stdout
        cache = Path(hub["cache"])
        assert json.loads((cache / "state" / "answers" / a / f"{lab}.json").read_text()) == {
            "note": "kept by the service"}, "answers are the service's, out of the learner's reach"
        r = call("POST", b, f"labs/{lab}/check")
        assert r.status_code == 409 and "no environment of yours" in r.json()["message"], r.text
        # Hand-in through the service, as a's kernel does it: graded, the result shown; b cannot read it.
        home = accounts.lookup(a).home
        handed = home / f"{lab}.ipynb"
        shutil.copy(settings.root / "labs" / lab / f"{lab}.ipynb", handed)
        os.chown(handed, accounts.lookup(a).uid, accounts.lookup(a).gid)
        submit = ("import json, ladderlab\n"
                  f"lab = ladderlab.start({lab!r}, show=False)\n"
                  f"sub = lab.submit({str(handed)!r}, timeout=600)\n"
                  "keys = ('key', 'student', 'status', 'score', 'max_score', 'passed')\n"
                  "print(json.dumps({k: sub[k] for k in keys}))")
        r = subprocess.run([*jail, "--", sys.executable, "-c", submit], env=env, capture_output=True, text=True,
                           timeout=900, check=False)
        assert r.returncode == 0, r.stderr[-3000:] + hub["logs"]()
        sub = json.loads(r.stdout.strip().splitlines()[-1])
        assert sub["student"] == a and sub["passed"] is True and sub["score"] == sub["max_score"], sub
        seen = row(a)  # what the trainer sees of a now: the environment up, the checks run, the hand-in graded
        assert seen["envs"] == [lab], seen
        mine = seen["labs"][lab]
        assert (mine["state"], mine["score"], mine["passed"]) == ("graded", sub["score"], True), mine
        assert mine["practice"]["run"] == 1 and mine["practice"]["passed"] == 0, mine
        assert row(b)["envs"] == [] and row(b)["labs"][lab]["state"] == "not submitted"
        quoted = urllib.parse.quote(sub["key"], safe="")
        assert call("GET", b, f"submissions/{quoted}").status_code == 404, "b cannot read a's submission"
        assert call("GET", a, f"submissions/{quoted}").json()["status"] == sub["status"]
        # The learners' firewall: a's processes reach a's environment (above, over SSH); b's reach nothing of it.
        tools = conn["hosts"]["tools"]["address"]
        probe = ("import socket\ns = socket.socket(); s.settimeout(5)\n"
                 f"try:\n s.connect(({tools!r}, 22)); print('ok')\nexcept OSError as e: print(type(e).__name__)")
        jail_b = jail_command(settings, b, hub)
        reach = {who: subprocess.run([*cmd, "--", "/usr/bin/python3", "-c", probe], capture_output=True, text=True,
                                     timeout=60, check=False).stdout.strip()
                 for who, cmd in (("a", jail), ("b", jail_b))}
        assert reach == {"a": "ok", "b": "ConnectionRefusedError"}, reach
        rules = subprocess.run(["iptables", "-S", "LADDERLAB-LEARNERS"], capture_output=True, text=True).stdout
        uid_a, uid_b = accounts.lookup(a).uid, accounts.lookup(b).uid
        assert f"--uid-owner {uid_a} " in rules and f"--uid-owner {uid_b} " not in rules, rules
        kept = accounts.lookup(a).home / ".ladderlab" / "connect" / f"{lab}.json"
        assert kept.stat().st_mode & 0o777 == 0o600 and kept.stat().st_uid == accounts.lookup(a).uid
        # The trainer's cohort view in a browser: logged in to the hub, the page follows the service's events and
        # shows a's environment stopping without a reload.
        with trainer_view(hub) as page:
            cell = page.locator(f"#cohort tr[data-learner='{a}'] td.envs")
            assert cell.inner_text() == lab
            shown = page.locator(f"#cohort tr[data-learner='{a}'] td.lab[data-lab='{lab}']").inner_text()
            assert shown.startswith(f"graded {sub['score']:g}/{sub['max_score']:g} passed"), shown
            try:
                page.wait_for_selector("#live[data-state='live']", timeout=30_000)
            except Exception as exc:  # what the page said, and the console's errors (a 401: the events refused)
                live = page.locator("#live")
                errors = page.errors  # type: ignore[attr-defined]
                raise AssertionError(f"the page did not go live: {live.inner_text()!r}; errors {errors}") from exc
            page.evaluate("window.notReloaded = true")
            stopped = call("DELETE", a, f"labs/{lab}/env")
            page.wait_for_function("(sel) => document.querySelector(sel).textContent === ''",
                                   arg=f"#cohort tr[data-learner='{a}'] td.envs", timeout=30_000)
            assert page.evaluate("window.notReloaded") is True, "the page changed without a reload"
            assert console_errors(page) == [], page.errors  # type: ignore[attr-defined]
    finally:
        if stopped is None:
            stopped = call("DELETE", a, f"labs/{lab}/env")
    assert stopped.json() == {"stopped": [conn["env_id"]]}
    rules = subprocess.run(["iptables", "-S", "LADDERLAB-LEARNERS"], capture_output=True, text=True).stdout
    assert "--uid-owner" not in rules, "a's environment is gone, and so is a's way out"
    assert not client.containers.list(all=True, filters={"label": f"io.ladderlab.env-id={conn['env_id']}"})

@pytest.mark.docker
def test_three_learners_hand_in_and_the_trainer_watches_it_live(hub, images, client, settings):
    """Issue 15's acceptance: with the trainer's cohort page open, b starts the lab from a kernel, runs its
    checks and hands in unfinished work (one solution cell of several) while c, in chromium, opens the lab in
    JupyterLab on the hub, fills the solution cells, runs the notebook (c's environment comes up through the
    service), saves and hands in with ``lab.submit()``: the result and c's ladder are shown under the cell. The
    trainer's page shows both graded results, and b's checks run in practice, without a reload; c's ladder page
    shows c's ladder and no one else's. (a handed in in the test before.)"""
    from ladderlab import browser
    from tests.integration.test_engineer_browser import _fill, _run_all, _save, _solutions, _wait_idle, _wait_notebook

    a, b, c = LEARNERS
    tokens = {learner: api(hub, "POST", f"/users/{learner}/tokens", json={"expires_in": 1800}).json()["token"]
              for learner in LEARNERS}
    service = f"{hub['url']}/services/ladderlab"
    home_b, home_c = accounts.lookup(b), accounts.lookup(c)
    assert home_b is not None and home_c is not None
    released = home_c.home / LAB / f"{LAB}.ipynb"
    handed_out = nbformat.read(str(released), as_version=4)
    solutions = _solutions(settings.root / "labs" / LAB / f"{LAB}.ipynb")
    # b's work: the first solution cell done, the others not (b practises, checks, and hands in unfinished work).
    mine_b = home_b.home / LAB / f"{LAB}.ipynb"
    partial = nbformat.read(str(released), as_version=4)
    first = next(iter(solutions))
    done = [cell for cell in partial.cells if cell.metadata.get("nbgrader", {}).get("grade_id") == first]
    assert len(done) == 1, first
    done[0].source = solutions[first]
    mine_b.parent.mkdir(exist_ok=True)
    nbformat.write(partial, str(mine_b))
    for path in (mine_b.parent, mine_b):
        os.chown(path, home_b.uid, home_b.gid)
    submit_b = ("import json, ladderlab\n"
                f"lab = ladderlab.start({LAB!r}, show=False)\n"
                "lab.check()\n"
                f"sub = lab.submit({str(mine_b)!r}, timeout=600)\n"
                "print(json.dumps({k: sub[k] for k in ('student', 'status', 'score', 'max_score', 'passed')}))")
    b_proc = None
    try:
        with browser.pages(2) as (trainer, page):
            open_cohort_page(hub, trainer)
            trainer.wait_for_selector("#live[data-state='live']", timeout=30_000)
            trainer.evaluate("window.notReloaded = true")
            # c logs in through the hub and lands in JupyterLab on the released lab, in c's own home.
            hub_login(hub, page, c, f"/user/{c}/lab/tree/{LAB}/{LAB}.ipynb")
            server = {"base": f"{hub['url']}/user/{c}", "token": tokens[c], "log": hub["log"]}
            try:
                page.wait_for_url(re.compile(rf"/user/{c}/lab"), timeout=120_000)  # through the hub to c's server
                page.wait_for_selector("#jp-main-dock-panel", timeout=120_000)
                _wait_notebook(page, handed_out, server, f"{LAB}.ipynb", timeout=180)
            except Exception as exc:  # where c's browser is and what it shows (the screenshot is beside the cache)
                page.screenshot(path=str(Path(hub["cache"]).parent / "notebook.png"))
                raise AssertionError(f"c's notebook did not open: at {page.url}: "
                                     f"{page.locator('body').inner_text()[:1500]!r}") from exc
            # b hands in now (not while c's page loads: b's grading makes Docker bridges, and chromium aborts what
            # it is loading when the host's interfaces change).
            b_proc = subprocess.Popen([*jail_command(settings, b, hub), "--", sys.executable, "-c", submit_b],
                                      env=kernel_env(hub, tokens[b]), stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)
            # No nbgrader in a hub learner's JupyterLab: no instructor tool, no Assignments panel without an exchange.
            menus = page.locator(".lm-MenuBar-itemLabel").all_inner_texts()
            sidebars = " ".join(page.locator(".jp-SideBar .lm-TabBar-tab").evaluate_all(
                "els => els.map(e => (e.title || '') + ' ' + (e.dataset.id || '') + ' ' + e.textContent)"))
            assert "Nbgrader" not in menus and "assignment" not in sidebars.lower(), (menus, sidebars)
            panel = ".jp-NotebookPanel:not(.lm-mod-hidden)"
            cells = page.locator(f"{panel} .jp-CodeCell")
            todo = [i for i, text in enumerate(cells.locator(".cm-content").evaluate_all(
                "els => els.map(e => e.textContent)")) if "YOUR CODE HERE" in text]
            assert len(todo) == len(solutions), (todo, list(solutions))
            _fill(page, cells, todo, solutions)
            _save(page)
            saved = nbformat.read(str(released), as_version=4)
            by_id = {cell.metadata.get("nbgrader", {}).get("grade_id"): cell for cell in saved.cells}
            assert all(by_id[g].source.strip() == code.strip() for g, code in solutions.items()), "c's work is saved"
            _run_all(page)
            _wait_idle(page, timeout=600)
            printed = " ".join(page.locator(f"{panel} .jp-OutputArea-output").all_inner_texts())
            assert "\u2713 expiry-statuses:" in printed and "\u2713 json-format:" in printed, printed[-2000:]
            # The trainer sees c's environment come up (the page's events, no reload).
            trainer.wait_for_function("([sel, lab]) => document.querySelector(sel).textContent.includes(lab)",
                                      arg=[f"#cohort tr[data-learner='{c}'] td.envs", LAB], timeout=30_000)
            # Quotas: c may have 2 environments at once (the service's default); a third start is refused, saying why.
            other = "sec-1-iptables-hardening"

            def start(lab: str) -> requests.Response:
                return requests.post(f"{service}/api/labs/{lab}/env", timeout=300,
                                     headers={"Authorization": f"token {tokens[c]}"})

            assert start(other).status_code == 200
            r = start("sre-5-strace-debugging")
            assert r.status_code == 429 and "quota" in r.json()["message"] and LAB in r.json()["message"], r.text
            requests.delete(f"{service}/api/labs/{other}/env", timeout=300,
                            headers={"Authorization": f"token {tokens[c]}"})
            # Hand in from the notebook: a last cell, saved before it runs (what is handed in is the file).
            cells.last.locator(".jp-InputPrompt").click()
            page.keyboard.press("b")
            page.keyboard.press("Enter")
            page.keyboard.insert_text("sub = lab.submit()")
            page.keyboard.press("Escape")
            _save(page)
            page.keyboard.press("Shift+Enter")
            _wait_idle(page, timeout=900)
            last = page.locator(f"{panel} .jp-CodeCell", has_text="sub = lab.submit()")  # Shift+Enter added one below
            last.scroll_into_view_if_needed()  # JupyterLab renders only the cells in view
            try:
                last.locator(".jp-OutputArea-output", has_text="Your ladder").wait_for(timeout=30_000)
            except Exception as exc:
                page.screenshot(path=str(Path(hub["cache"]).parent / "handed-in.png"))
                raise AssertionError(f"no result under the cell: {last.inner_text()[-3000:]!r}") from exc
            shown = last.locator(".jp-OutputArea").inner_text()
            assert re.search(rf"{LAB}: (\d+)/\1, passed", shown), shown[-2000:]
            assert f"Your ladder, {c}" in shown and "nothing yet" not in shown, shown[-2000:]
            out, err = b_proc.communicate(timeout=900)
            assert b_proc.returncode == 0, err[-3000:]
            got_b = json.loads(out.strip().splitlines()[-1])
            assert got_b["student"] == b and got_b["passed"] is False and got_b["score"] < got_b["max_score"], got_b
            # The trainer's page: c graded and passed, b graded and not passed; never reloaded.
            for learner, verdict in ((c, "passed"), (b, "not passed")):
                trainer.wait_for_function(
                    "([sel, verdict]) => { const t = document.querySelector(sel).textContent;"
                    " return t.startsWith('graded') && t.includes(' ' + verdict); }",
                    arg=[f"#cohort tr[data-learner='{learner}'] td.lab[data-lab='{LAB}']", verdict], timeout=30_000)
            # b practised before handing in: the trainer sees b's checks run (the service recorded them).
            trainer.wait_for_function("sel => document.querySelector(sel).textContent.includes('checks ')",
                                      arg=f"#cohort tr[data-learner='{b}'] td.lab[data-lab='{LAB}']", timeout=30_000)
            assert trainer.evaluate("window.notReloaded") is True
            assert console_errors(trainer) == [], trainer.errors  # type: ignore[attr-defined]
            # c's own ladder page: c's ladder, the lab demonstrated; asking for another learner's is refused.
            tab = page.context.new_page()  # a tab of c's (JupyterLab's unsaved notebook would hold the page back)
            tab.goto(f"{service}/ladder")
            text = tab.locator("body").inner_text()
            assert f"Your ladder, {c}" in text and "nothing yet" not in text and a not in text, text
            assert tab.goto(f"{service}/ladder?learner={a}").status == 400
        # Each token gets its owner's ladder: a passed the lab in the test before, b did not.
        ladders = {who: requests.get(f"{service}/api/ladder", timeout=60,
                                     headers={"Authorization": f"token {tokens[who]}"}).json() for who in LEARNERS}
        assert {who: d["learner"] for who, d in ladders.items()} == {a: a, b: b, c: c}, ladders
        assert ladders[a]["shown"] and ladders[c]["shown"] and not ladders[b]["shown"], ladders
        records_on_postgres(hub, settings, passed=[a, c], failed=[b])
    finally:
        if b_proc is not None and b_proc.poll() is None:
            b_proc.kill()
        for learner in (b, c):
            requests.delete(f"{service}/api/labs/{LAB}/env", timeout=300,
                            headers={"Authorization": f"token {tokens[learner]}"})
    for learner in (b, c):
        assert not client.containers.list(all=True, filters={"label": f"io.ladderlab.learner={learner}"}), learner


def records_on_postgres(hub, settings, passed: list[str], failed: list[str]) -> None:
    """The hub's records are its PostgreSQL's (gradebook, evidence, queue), none in the cache's SQLite files; the
    chain verifies there through `ladderlab hub database`'s variables, as a manager runs it."""
    from nbgrader.api import Gradebook, MissingEntry
    from sqlalchemy import create_engine, text

    db = HubDatabase(hub["root"] / "postgres")
    urls = db.urls()
    with Gradebook(urls["LADDERLAB_GRADEBOOK_URL"]) as gb:
        for learner in passed + failed:
            sub = gb.find_submission(LAB, learner)
            assert (sub.score == sub.max_score > 0) is (learner in passed), (learner, sub.score, sub.max_score)
    sqlite_gradebook = Path(hub["cache"]) / "service" / "course" / "gradebook.db"
    with Gradebook(f"sqlite:///{sqlite_gradebook}") as gb:  # `cohort add` wrote the roster here before the hub
        for learner in passed + failed:
            with pytest.raises(MissingEntry):
                gb.find_submission(LAB, learner)
    engine = create_engine(urls["LADDERLAB_LADDER_URL"])
    try:
        with engine.connect() as conn:
            recorded = {row[0] for row in conn.execute(text("SELECT learner FROM ladder_evidence"))}
        assert set(passed) <= recorded, recorded
    finally:
        engine.dispose()
    assert not (Path(hub["cache"]) / "ladder.sqlite").exists()
    engine = create_engine(db.sqlalchemy_url("queue"))
    try:
        with engine.connect() as conn:
            tables = {row[0] for row in conn.execute(text(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"))}
        assert {"task", "schedule", "kv"} <= tables, tables  # Huey's SQL storage, where the gradings were queued
    finally:
        engine.dispose()
    assert not (Path(hub["cache"]) / "service" / "queue.db").exists()
    # Judged through the judging table (the hub runs for graders elsewhere; its own judge took them), which is
    # empty once they are recorded.
    logs = sorted((Path(hub["cache"]) / "service" / "logs").glob(f"*+{LAB}+*.log"))
    assert logs and all("judged by " in p.read_text() for p in logs), [p.read_text()[-800:] for p in logs]
    engine = create_engine(db.sqlalchemy_url("judging"))
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM judging")).scalar() == 0
    finally:
        engine.dispose()
    exports = cli(dict(os.environ, LADDERLAB_CACHE_DIR=hub["cache"]), "hub", "database", "--root",
                  str(hub["root"])).stdout
    env = dict(os.environ, LADDERLAB_CACHE_DIR=hub["cache"], LADDERLAB_ROOT=str(settings.root))
    for line in exports.strip().splitlines():
        var, _, value = line.removeprefix("export ").partition("=")
        env[var] = shlex.split(value)[0]
    assert set(urls) <= set(env), exports
    verified = json.loads(cli(env, "ladder", "verify", "--json").stdout)
    assert verified["ok"] and verified["entries"] >= len(passed), verified
    # Without the variables, ladderlab's commands on the hub's cache find its PostgreSQL themselves.
    plain = dict(os.environ, LADDERLAB_CACHE_DIR=hub["cache"], LADDERLAB_ROOT=str(settings.root))
    assert json.loads(cli(plain, "ladder", "verify", "--json").stdout) == verified


def jail_command(settings, learner: str, hub) -> list[str]:
    """The jail the hub starts ``learner``'s server in (what their kernels run in), ready for ``-- CMD``."""
    from ladderlab.hub.config import jail_view

    hide, expose = jail_view(settings, hub["root"])
    jail = [sys.executable, "-m", "ladderlab.hub.jail", "--user", f"ll-{learner}"]
    for path in hide:
        jail += ["--hide", path]
    for path in expose:
        jail += ["--expose", path]
    return jail


def kernel_env(hub, token: str) -> dict[str, str]:
    """A learner's kernel's environment on the hub: their server's token and the service's URL, nothing else."""
    return {"PATH": os.environ["PATH"], "JUPYTERHUB_API_TOKEN": token,
            "LADDERLAB_SERVICE_URL": f"{hub['url']}/services/ladderlab/",
            **({"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {})}


@contextlib.contextmanager
def trainer_view(hub):
    """Chromium, logged in to the hub as the trainer, on the service's cohort page (the hub's OAuth in between)."""
    from ladderlab import browser

    with browser.page(1280, 800) as page:
        yield open_cohort_page(hub, page)


def console_errors(page) -> list[str]:
    """The page's console errors, less the requests chromium aborted because Docker changed the host's interfaces
    (a stream the page reopens by itself)."""
    from tests.integration.test_engineer_browser import HOST_NETWORK_NOISE

    return [e for e in page.errors if not any(n in e for n in HOST_NETWORK_NOISE)]


def hub_login(hub, page, user: str, then: str) -> None:
    """``user`` logs in on the hub's login page with their issued password, and is sent on to ``then``."""
    page.goto(f"{hub['url']}/hub/login?next=" + urllib.parse.quote(then))
    page.fill("#username_input", user)
    page.fill("#password_input", hub["passwords"][user])
    page.click("#login_submit")


def open_cohort_page(hub, page):
    """``page`` logged in to the hub as the trainer, on the service's cohort page."""
    hub_login(hub, page, TRAINER, "/services/ladderlab/cohort")
    page.wait_for_selector("#cohort tbody tr", timeout=60_000)
    return page


def test_the_hub_stops_with_its_servers_on_sigterm_and_refuses_a_cohort_without_passwords(hub, settings):
    """Last in the module: SIGTERM to `ladderlab hub start` stops the hub, which stops every learner's server."""
    proc = hub["proc"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, hub["logs"]()
    for learner in LEARNERS:
        with pytest.raises(AssertionError, match="no server process"):
            server_pid(learner)
    assert subprocess.run(["iptables", "-S", "LADDERLAB-LEARNERS"], capture_output=True).returncode != 0, \
        "the hub took the learners' chain with it"
    db = HubDatabase(hub["root"] / "postgres")
    assert not db.running(), "the hub stopped its PostgreSQL"
    # After the course: the records stay, reachable with the hub's database started alone, and a command says what to
    # do when it is not running.
    env = dict(os.environ, LADDERLAB_CACHE_DIR=hub["cache"], LADDERLAB_ROOT=str(settings.root))
    cli(env, "hub", "database", "--root", str(hub["root"]), "--start")
    try:
        assert db.running()
        record = json.loads(cli(env, "ladder", "verify", "--json").stdout)
        assert record["ok"] and record["entries"] >= 2, record
    finally:
        cli(env, "hub", "database", "--root", str(hub["root"]), "--stop")
    r = subprocess.run([sys.executable, "-m", "ladderlab.cli", "ladder", "verify"], env=env, capture_output=True,
                       text=True, timeout=60, check=False)
    assert r.returncode != 0 and "hub database --start" in r.stderr, r.stderr
    env = dict(os.environ, LADDERLAB_CACHE_DIR=str(Path(hub["root"]) / "nowhere"),
               LADDERLAB_HUB_PROXY=str(proxy.path(settings)))
    r = subprocess.run([sys.executable, "-m", "ladderlab.cli", "hub", "start", "nosuch", "--root", str(hub["root"])],
                       env=env, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode != 0 and "nosuch" in r.stderr, r.stderr
