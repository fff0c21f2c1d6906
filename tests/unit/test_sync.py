"""course.yaml, labs/, graders/ and environments/ stay in sync (the testcontainers
"community definition" test, for labs)."""

from __future__ import annotations

from pathlib import Path

from ladderlab.config import Settings
from ladderlab.course import load_course
from ladderlab.environments.images import image_dir
from ladderlab.environments.spec import discover, load_env_spec

ROOT = Path(__file__).resolve().parents[2]
COURSE = load_course(ROOT / "course.yaml")
ENVS = discover(ROOT / "environments")


def test_every_lab_names_an_existing_environment():
    for lab in COURSE.labs:
        assert lab.environment in ENVS, f"{lab.id}: environments/{lab.environment}/env.yaml is missing"


def test_every_environment_is_used_by_a_lab():
    used = {lab.environment for lab in COURSE.labs}
    assert set(ENVS) == used, f"environments no lab uses: {set(ENVS) - used}"


def test_published_labs_have_their_folder_and_planned_ones_do_not_pretend():
    labs_dir = ROOT / "labs"
    on_disk = {p.name for p in labs_dir.iterdir() if p.is_dir()} if labs_dir.is_dir() else set()
    for lab in COURSE.labs:
        if lab.status == "published":
            assert lab.id in on_disk, f"labs/{lab.id}/ is missing"
            assert list((labs_dir / lab.id / "decoys").glob("*")), f"labs/{lab.id}/decoys/ is empty"
    assert on_disk <= {lab.id for lab in COURSE.labs}, f"labs/ folders not in course.yaml: {on_disk}"


def test_every_image_an_environment_names_has_a_dockerfile():
    settings = Settings(root=ROOT, cache_dir=ROOT / ".cache")
    for name, path in ENVS.items():
        for host in load_env_spec(path).hosts.values():
            _, directory = image_dir(settings, name, host.image)
            assert (directory / "Dockerfile").read_text().lstrip().startswith(("#", "ARG", "FROM"))


HOST_ARGS = ("host", "source", "target", "peer", "allowed", "denied", "sources")


def test_checks_name_hosts_their_environment_has():
    import yaml

    for lab in COURSE.labs:
        lab_yaml = ROOT / "labs" / lab.id / "lab.yaml"
        if lab.status != "published":
            continue
        hosts = set(load_env_spec(ENVS[lab.environment]).hosts)
        for cid, check in yaml.safe_load(lab_yaml.read_text())["checks"].items():
            for key in HOST_ARGS:
                value = check.get("args", {}).get(key)
                names = value if isinstance(value, list) else [value] if value else []
                unknown = set(names) - hosts
                assert not unknown, f"labs/{lab.id}/lab.yaml: checks.{cid}.args.{key}: no host {unknown}"


def test_grading_tool_images_exist():
    for tool in ("probe", "runner"):
        assert (ROOT / "environments" / "_common" / "images" / tool / "Dockerfile").is_file()
