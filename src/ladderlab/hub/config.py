"""The hub's JupyterHub configuration (docs/hub-design.md, 3), as one function: ``configure(c, plan)``.

The shipped ``jupyterhub_config.py`` builds the plan from ``LADDERLAB_HUB_*`` variables; tests build it directly.
Everything listens on 127.0.0.1; the hub's state (database, cookie secret, proxy token, passwords) is in
``<root>/private`` (0700, root's); learners' homes are ``<root>/home/<id>``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ladderlab.config import Settings
from ladderlab.service.workspace import INSTRUCTOR_SERVER_EXTENSIONS, write_disabled


@dataclass(frozen=True)
class HubPlan:
    root: Path
    settings: Settings
    learners: tuple[str, ...]
    cohort: str = ""
    trainers: tuple[str, ...] = ()  # hub users in the group "trainers": the cohort view, no learner's server
    port: int = 8000
    hub_port: int = 8081
    proxy_api_port: int = 8001
    service_port: int = 8002
    proxy: str = "configurable-http-proxy"
    admin_token: str | None = None  # only tests: a service token with admin:users and tokens
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def private(self) -> Path:
        return self.root / "private"

    @property
    def database(self) -> Path:
        """The hub's PostgreSQL (:mod:`ladderlab.hub.database`): 0700, the postgres account's."""
        return self.root / "postgres"

    @property
    def homes(self) -> Path:
        return self.root / "home"

    @property
    def learner_jupyter_config(self) -> Path:
        """The learners' servers' own Jupyter config (readable by all, written by the hub): nbgrader off."""
        return self.root / "public" / "jupyter"


def prepare(plan: HubPlan) -> None:
    """The hub's directories: private/ 0700, home/ 0755 (each home inside is the learner's own, 0700)."""
    plan.private.mkdir(parents=True, exist_ok=True)
    plan.private.chmod(0o700)
    plan.homes.mkdir(parents=True, exist_ok=True)
    plan.homes.chmod(0o755)
    write_learner_jupyter_config(plan.learner_jupyter_config)


#: nbgrader's server extensions, all off in a learner's server on a hub: its instructor tools have no course there,
#: and its Assignments panel would look for an exchange on the server's own disk, which a hub learner does not
#: share with anyone (hand-in is ``lab.submit()`` through the ladderlab service).
NBGRADER_SERVER_EXTENSIONS = (*INSTRUCTOR_SERVER_EXTENSIONS, "nbgrader.server_extensions.assignment_list",
                              "nbgrader.server_extensions.validate_assignment")


def write_learner_jupyter_config(conf: Path) -> None:
    """``conf`` (on the learners' ``JUPYTER_CONFIG_PATH``): nbgrader's JupyterLab extension and its server
    extensions disabled. Written at every start, 0755/0644, root's: a learner reads it and cannot change it."""
    files = write_disabled(conf, ["@jupyter/nbgrader"], NBGRADER_SERVER_EXTENSIONS)
    for d in (conf.parent, conf, conf / "labconfig"):
        d.chmod(0o755)
    for f in files:
        f.chmod(0o644)


def hidden_paths(settings: Settings, hub_root: Path | None = None) -> list[str]:
    """What a learner's server must not reach: the checkout (labs, solutions, course), the cache (records,
    keys, state), the Docker engine's socket and, of the hub's root, its private state and its PostgreSQL."""
    paths = [str(settings.root.resolve()), str(settings.cache_dir.resolve())]
    if hub_root is not None:
        paths += [str(d) for d in (hub_root / "private", hub_root / "postgres") if d.is_dir()]
    paths += [p for p in ("/var/run/docker.sock", "/run/docker.sock") if os.path.lexists(p)]
    unique: list[str] = []
    for p in (os.path.realpath(p) for p in paths):
        if p not in unique and not any(Path(p).is_relative_to(u) for u in unique):
            unique = [u for u in unique if not Path(u).is_relative_to(p)] + [p]
    return unique


def interpreter_view() -> tuple[list[str], list[str]]:
    """(hide, expose) so that a learner can run this venv's base interpreter: when it lives under a directory
    other users cannot enter (pyenv's under /root, 0700), that directory is hidden and the interpreter's prefix
    shown read-only inside it. Nothing when every directory on the way is open."""
    base = Path(sys.base_prefix).resolve()
    for ancestor in [*reversed(base.parents), base]:
        if not ancestor.stat().st_mode & 0o001:
            return [str(ancestor)], [str(base)]
    return [], []


def jail_view(settings: Settings, hub_root: Path | None = None) -> tuple[list[str], list[str]]:
    """(hide, expose) of a learner's jail: the checkout, the cache, the engine's socket and the hub's private
    state and database hidden; the checkout's ``.venv`` and ``src`` (and the base interpreter, when it lives under
    a closed directory) shown read-only."""
    hide, expose = interpreter_view()
    root = settings.root.resolve()
    return (hidden_paths(settings, hub_root) + hide,
            [str(p) for p in (root / ".venv", root / "src") if p.is_dir()] + expose)


def released(settings: Settings) -> tuple[Path, list[str]]:
    """Where nbgrader released the course's labs (the service's exchange), and the published labs: what each
    learner's home is given when their server starts (:mod:`ladderlab.hub.workspace`)."""
    from ladderlab.course import load_course
    from ladderlab.service.paths import ServicePaths

    course = load_course(settings.course_file, "course.yaml")
    outbound = ServicePaths.of(settings).exchange / course.id / "outbound"
    return outbound, published(settings.course_file)


def published(course_file: Path) -> list[str]:
    """The course's published labs, read now (the spawner reads them at each server start: a lab published and
    released while the hub runs reaches homes at their next start)."""
    from ladderlab.course import load_course

    return [lab.id for lab in load_course(course_file, "course.yaml").labs if lab.status == "published"]


def configure(c: Any, plan: HubPlan) -> None:
    from ladderlab.hub.accounts import ID_PATTERN

    prepare(plan)
    venv_bin = Path(sys.executable).parent
    c.JupyterHub.ip = "127.0.0.1"
    c.JupyterHub.port = plan.port
    c.JupyterHub.hub_ip = "127.0.0.1"
    c.JupyterHub.hub_port = plan.hub_port
    c.JupyterHub.db_url = f"sqlite:///{plan.private / 'jupyterhub.sqlite'}"
    c.JupyterHub.cookie_secret_file = str(plan.private / "cookie_secret")
    c.JupyterHub.pid_file = str(plan.private / "jupyterhub.pid")
    c.JupyterHub.cleanup_servers = True
    c.ConfigurableHTTPProxy.command = [plan.proxy]
    c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{plan.proxy_api_port}"
    c.ConfigurableHTTPProxy.pid_file = str(plan.private / "proxy.pid")
    c.JupyterHub.authenticator_class = "ladderlab.hub.auth.RosterAuthenticator"
    c.RosterAuthenticator.passwords_file = str(plan.private / "passwords.json")
    c.Authenticator.allowed_users = set(plan.learners) | set(plan.trainers)
    c.Authenticator.admin_users = set()
    c.Authenticator.username_pattern = ID_PATTERN.pattern
    c.JupyterHub.spawner_class = "ladderlab.hub.spawner.LadderlabSpawner"
    c.LadderlabSpawner.home_root = str(plan.homes)
    c.LadderlabSpawner.hide, c.LadderlabSpawner.expose = jail_view(plan.settings, plan.root)
    c.LadderlabSpawner.server_command = [str(venv_bin / "jupyterhub-singleuser")]
    released_from, labs = released(plan.settings)
    c.LadderlabSpawner.released_from = str(released_from)
    c.LadderlabSpawner.released_labs = labs
    c.LadderlabSpawner.course_file = str(plan.settings.course_file)
    c.LadderlabSpawner.start_here = str(plan.settings.root / "start-here.ipynb")
    c.Spawner.environment = {"PATH": f"{venv_bin}:/usr/local/bin:/usr/bin:/bin",
                             "LADDERLAB_SERVICE_URL": f"http://127.0.0.1:{plan.port}/services/ladderlab/",
                             "JUPYTER_CONFIG_PATH": str(plan.learner_jupyter_config),
                             **plan.extra_env}
    c.Spawner.default_url = "/lab"
    c.Spawner.http_timeout = 60
    c.Spawner.start_timeout = 120
    service_env = {k: v for k, v in os.environ.items()
                   if (k.startswith("LADDERLAB_") or k == "PYTHONPATH") and k != "LADDERLAB_HUB_TEST_TOKEN"}
    c.JupyterHub.services = [{
        "name": "ladderlab", "url": f"http://127.0.0.1:{plan.service_port}", "display": True, "oauth_no_confirm": True,
        "command": [sys.executable, "-m", "ladderlab.hub.service"],
        "oauth_client_allowed_scopes": ["custom:ladderlab:trainer"],  # a trainer's browser gets it, a learner's not
        "environment": {**service_env, "LADDERLAB_ROOT": str(plan.settings.root), "LADDERLAB_HUB_COHORT": plan.cohort,
                        "LADDERLAB_CACHE_DIR": str(plan.settings.cache_dir),
                        "PATH": f"{venv_bin}:/usr/sbin:/usr/bin:/sbin:/bin"},
    }]
    c.JupyterHub.custom_scopes = {"custom:ladderlab:trainer": {"description": "a trainer's view of ladderlab"}}
    # Scopes reach a server's token only when its owner holds them too: learners get the service, trainers more.
    c.JupyterHub.load_groups = {"trainers": {"users": sorted(plan.trainers)}}
    c.JupyterHub.load_roles = [{"name": "user", "scopes": ["self", "access:services!service=ladderlab"]},
                               # by user, not by group: the hub resets a role's users to the list at every start,
                               # so a trainer taken off the list loses the view (a group's members would stay)
                               {"name": "ladderlab-trainer", "users": sorted(plan.trainers),
                                "scopes": ["custom:ladderlab:trainer", "access:services!service=ladderlab"]}]
    c.Spawner.server_token_scopes = ["users:activity!user", "access:servers!server",
                                     "access:services!service=ladderlab", "custom:ladderlab:trainer"]
    if plan.admin_token:
        c.JupyterHub.services.append({"name": "ladderlab-test", "api_token": plan.admin_token})
        c.JupyterHub.load_roles.append({"name": "ladderlab-test", "services": ["ladderlab-test"],
                                        "scopes": ["admin:users", "admin:servers", "tokens"]})
