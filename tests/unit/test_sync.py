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


def _host_methods() -> set[str]:
    """The Context methods whose first argument is a host name (``ctx.observe(host)``...)."""
    import inspect

    from ladderlab.grading.checks import Context

    return {name for name, fn in vars(Context).items() if callable(fn) and not name.startswith("_")
            and list(inspect.signature(fn).parameters)[1:2] == ["host"]}


def host_parameters(graders: Path, methods: set[str]) -> dict[str, set[str]]:
    """``"module.function"`` -> the parameters of that graders/ function that name a lab host (or a list of
    hosts), derived from the source: those that reach a Context host method (``ctx.address(target)``),
    directly, through a loop, a comprehension, a lambda or a plain alias, or through a parameter of another
    graders/ function that does (``states_from(ctx, [*allowed, *denied], ...)``, ``pool.submit(guarded, ctx,
    target, port)``). Hosts packed into other data first (a dict of role -> host turned into tuples) are not
    followed."""
    import ast

    funcs: dict[str, ast.FunctionDef] = {}
    names: dict[str, dict[str, str]] = {}  # module -> local name -> "module.function"
    for path in sorted(graders.glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        local = names.setdefault(path.stem, {})
        for node in tree.body:
            if isinstance(node, ast.FunctionDef):
                funcs[f"{path.stem}.{node.name}"] = node
                local[node.name] = f"{path.stem}.{node.name}"
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("graders."):
                for alias in node.names:
                    local[alias.asname or alias.name] = f"{node.module.split('.', 1)[1]}.{alias.name}"
    params = {key: [a.arg for a in (*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs)]
              for key, fn in funcs.items()}
    found: dict[str, set[str]] = {key: set() for key in funcs}

    def scan(key: str) -> set[str]:
        fn, local = funcs[key], names[key.split(".", 1)[0]]
        alias = {p: {p} for p in params[key]}

        def roots(expr: ast.AST | None) -> set[str]:
            if isinstance(expr, ast.Name):
                return alias.get(expr.id, set())
            if isinstance(expr, ast.Starred):
                return roots(expr.value)
            if isinstance(expr, ast.List | ast.Tuple | ast.Set):
                return set().union(*(roots(e) for e in expr.elts))
            if isinstance(expr, ast.BoolOp):
                return set().union(*(roots(v) for v in expr.values))
            if isinstance(expr, ast.IfExp):
                return roots(expr.body) | roots(expr.orelse)
            if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) and expr.func.id in (
                    "sorted", "list", "set", "tuple", "reversed"):
                return set().union(*(roots(a) for a in expr.args))
            return set()

        for _ in range(3):  # aliases defined after their first use in the walk order
            for node in ast.walk(fn):
                if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                    if got := roots(node.value):
                        alias[node.targets[0].id] = got
                elif isinstance(node, ast.For | ast.comprehension) and isinstance(node.target, ast.Name) and \
                        (got := roots(node.iter)):
                    alias[node.target.id] = got
        hosts: set[str] = set()
        lambdas = set()  # the lambdas whose parameter reaches a host method: pool.map(lambda s: ..., sources)
        for lam in (n for n in ast.walk(fn) if isinstance(n, ast.Lambda)):
            lam_args = {a.arg for a in lam.args.args}
            for call in (n for n in ast.walk(lam) if isinstance(n, ast.Call)):
                if isinstance(call.func, ast.Attribute) and call.func.attr in methods and call.args and \
                        isinstance(call.args[0], ast.Name) and call.args[0].id in lam_args:
                    lambdas.add(id(lam))
        for node in ast.walk(fn):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr in methods:
                hosts |= roots(node.args[0] if node.args else None)
                hosts |= set().union(*(roots(k.value) for k in node.keywords if k.arg == "host"))
            callee, args = None, list(node.args)
            if isinstance(func, ast.Name) and func.id in local:
                callee = local[func.id]
            elif args and isinstance(args[0], ast.Name) and args[0].id in local:  # pool.submit(fn, *args)
                callee, args = local[args[0].id], args[1:]
            if callee in found:
                for i, arg in enumerate(args):
                    if i < len(params[callee]) and params[callee][i] in found[callee]:
                        hosts |= roots(arg)
                hosts |= set().union(*(roots(k.value) for k in node.keywords if k.arg in found[callee]))
            if any(isinstance(a, ast.Lambda) and id(a) in lambdas for a in node.args):  # pool.map(lambda s: ..., xs)
                hosts |= set().union(*(roots(a) for a in node.args if not isinstance(a, ast.Lambda)))
        return hosts & set(params[key])

    changed = True
    while changed:
        changed = False
        for key in funcs:
            new = scan(key)
            if new != found[key]:
                found[key], changed = new, True
    return found


def test_host_parameters_are_found_however_a_check_reaches_the_host(tmp_path):
    (tmp_path / "_helpers.py").write_text(
        "def probe_all(ctx, sources, port):\n"
        "    return list(pool.map(lambda s: ctx.observe(s).run('x'), sources))\n")
    (tmp_path / "dom.py").write_text(
        "from graders._helpers import probe_all\n"
        "def guard(ctx, who, port):\n    return ctx.tools(who)\n"
        "def check(ctx, *, server, peers, backup=None, extra, port=1, label='x'):\n"
        "    first = backup or server\n"
        "    pool.submit(guard, ctx, first, port)\n"
        "    addrs = [ctx.address(p) for p in sorted(peers)]\n"
        "    probe_all(ctx, [*extra], port)\n"
        "    return label\n")
    found = host_parameters(tmp_path, _host_methods())
    assert found["dom.check"] == {"server", "backup", "peers", "extra"}
    assert found["dom.guard"] == {"who"} and found["_helpers.probe_all"] == {"sources"}


def test_checks_name_hosts_their_environment_has():
    """Every argument (given in lab.yaml, or its default) that a check uses as a host names a host of the
    lab's environment; which arguments those are is read from graders/ itself, not listed here."""
    import inspect

    import yaml

    from ladderlab.grading.checks import load_graders

    found = host_parameters(ROOT / "graders", _host_methods())
    registry = load_graders(ROOT)
    for lab in COURSE.labs:
        lab_yaml = ROOT / "labs" / lab.id / "lab.yaml"
        if lab.status != "published":
            continue
        spec = load_env_spec(ENVS[lab.environment])
        hosts = set(spec.hosts)
        named = host_args = 0
        for cid, check in yaml.safe_load(lab_yaml.read_text())["checks"].items():
            args = check.get("args", {})
            signature = inspect.signature(registry[check["grader"]]).parameters
            host_args += len(found[check["grader"]])
            for key in found[check["grader"]]:
                value = args.get(key, signature[key].default)
                values = value.values() if isinstance(value, dict) else value if isinstance(value, list) else [value]
                names = [v for v in values if isinstance(v, str)]
                for name in [n for n in names if n.startswith("{") and n.endswith("}")]:  # a seeded host: each choice
                    names.remove(name)
                    names += getattr(spec.params.get(name[1:-1]), "values", [name])
                unknown = set(names) - hosts
                assert not unknown, f"labs/{lab.id}/lab.yaml: checks.{cid}.args.{key}: no host {unknown}"
                named += len(names)
        # a lab judged from its answers alone (comm-4: the incident is history) has checks that take no host
        assert named or not host_args, f"{lab.id}: no check names a host (is graders/ read right?)"


def test_grading_tool_images_exist():
    for tool in ("probe", "runner"):
        assert (ROOT / "environments" / "_common" / "images" / tool / "Dockerfile").is_file()
