"""The docker compose deployment: docker-compose.yml, .env.example, Dockerfile, .dockerignore.

No Docker engine is needed. The compose file is interpolated the way Compose does it (with the
values of .env.example), validated against the official Compose Specification JSON schema and
then checked for what the schema cannot know: services the README names, scalable workers,
health-gated dependencies, the MLflow server's flags (parsed by the installed MLflow's own
command-line parser) and every `autoaug` command (parsed by `pipeline.cli.build_parser()`).

compose-spec.json is vendored from github.com/compose-spec/compose-spec, schema/compose-spec.json
at commit 170098ba07d9f53c383a41bfd4c5166b0a4529a6 (2026-06-23; the file last changed in
a08f8d51631b7127ddac3d2c65537db429d0f1d0, 2025-10-28). Refresh it from there, never by hand.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
GPU_OVERRIDE = ROOT / "deploy" / "compose.gpu.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
README = ROOT / "README.md"
SCHEMA = HERE / "compose-spec.json"

EXPECTED_SERVICES = {"postgres", "mlflow", "pipeline", "worker", "api"}
AUTOAUG_SERVICES = ("pipeline", "worker", "api")  # the services that run autoaug's code


# --------------------------------------------------------------------------- interpolation
# The Compose Specification's rules: $VAR and ${VAR}; ${VAR:-default} (unset or empty) and
# ${VAR-default} (unset); ${VAR:?err} (unset or empty) and ${VAR?err} (unset) are errors;
# ${VAR:+alt} and ${VAR+alt}; defaults may nest further ${...}; $$ is a literal $. Values are
# interpolated, mapping keys are not.

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BRACED = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>.*))?", re.DOTALL)


class InterpolationError(ValueError):
    """A malformed expression, or a required variable (`:?` / `?`) that has no value."""


def _closing_brace(text: str, start: int) -> int:
    """Index of the `}` closing the `${` whose body starts at `start` (nested `${` counted)."""
    depth, i = 1, start
    while i < len(text):
        if text.startswith("${", i):
            depth, i = depth + 1, i + 2
            continue
        if text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise InterpolationError(f"unclosed '${{' in {text!r}")


def _substitute(body: str, env: dict[str, str]) -> str:
    match = _BRACED.fullmatch(body)
    if not match:
        raise InterpolationError(f"invalid interpolation '${{{body}}}'")
    name, op, arg = match["name"], match["op"], match["arg"] or ""
    is_set = name in env
    non_empty = is_set and env[name] != ""
    if op is None:
        return env.get(name, "")
    present = non_empty if op.startswith(":") else is_set
    kind = op[-1]
    if kind == "-":
        return env[name] if present else interpolate(arg, env)
    if kind == "?":
        if not present:
            raise InterpolationError(f"required variable {name} is missing a value: {arg}")
        return env[name]
    return interpolate(arg, env) if present else ""  # "+"


def interpolate(text: str, env: dict[str, str]) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] != "$":
            out.append(text[i])
            i += 1
        elif text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("${", i):
            end = _closing_brace(text, i + 2)
            out.append(_substitute(text[i + 2 : end], env))
            i = end + 1
        elif match := _NAME.match(text, i + 1):
            out.append(env.get(match.group(), ""))
            i = match.end()
        else:
            raise InterpolationError(f"invalid '$' at {i} in {text!r} (a literal dollar is '$$')")
    return "".join(out)


def interpolate_tree(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, dict):
        return {key: interpolate_tree(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(item, env) for item in node]
    return node


def variables_in(node: Any) -> set[str]:
    """Every variable a (not yet interpolated) tree refers to, defaults' variables included."""
    if isinstance(node, str):
        return set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", node.replace("$$", "")))
    if isinstance(node, dict):
        return set().union(*(variables_in(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(variables_in(v) for v in node))
    return set()


def read_env_file(path: Path) -> dict[str, str]:
    """A Compose .env file: KEY=VALUE lines, # comments, optional quotes and `export`."""
    env: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        assert sep and _NAME.fullmatch(key), f"{path.name}:{number}: not KEY=VALUE: {raw!r}"
        if value[:1] in ("'", '"') and value.endswith(value[0]) and len(value) >= 2:
            value = value[1:-1]
        else:
            value = re.split(r"\s+#", value, maxsplit=1)[0]
        env[key] = value
    return env


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def raw_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)


@pytest.fixture(scope="module")
def compose(raw_compose: dict[str, Any], env_example: dict[str, str]) -> dict[str, Any]:
    """docker-compose.yml as Compose sees it with `cp .env.example .env`."""
    result = interpolate_tree(raw_compose, env_example)
    assert isinstance(result, dict)
    return result


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    schema = json.loads(SCHEMA.read_text())
    assert "draft-07" in schema["$schema"]
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)


# --------------------------------------------------------------------------- helpers


def command_of(service: dict[str, Any]) -> list[str]:
    command = service.get("command")
    assert isinstance(command, list) and all(isinstance(a, str) for a in command), (
        f"command must be a list of strings (exec form), got {command!r}"
    )
    return command


def option_value(command: list[str], flag: str) -> str:
    assert flag in command, f"{flag} missing from {shlex.join(command)}"
    index = command.index(flag)
    assert index + 1 < len(command), f"{flag} has no value"
    return command[index + 1]


def depends_on(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    deps = service.get("depends_on", {})
    return {name: {} for name in deps} if isinstance(deps, list) else deps


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def mounts(service: dict[str, Any]) -> list[dict[str, Any]]:
    """Volumes in long form: type (bind | volume), source, target, read_only."""
    result = []
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            result.append({"read_only": False, **entry})
            continue
        parts = entry.split(":")
        source, target = parts[0], parts[1] if len(parts) > 1 else parts[0]
        options = parts[2].split(",") if len(parts) > 2 else []
        kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        result.append({"type": kind, "source": source, "target": target, "read_only": "ro" in options})
    return result


def published_ports(service: dict[str, Any]) -> list[tuple[str | None, str]]:
    """(host port or None, container port) of every `ports` entry."""
    result: list[tuple[str | None, str]] = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            published = entry.get("published")
            result.append((None if published is None else str(published), str(entry["target"])))
            continue
        parts = str(entry).split("/")[0].rsplit(":", 2)
        if len(parts) == 1:
            result.append((None, parts[0]))
        else:
            result.append((parts[-2], parts[-1]))
    return result


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("autoaug's parser has no subcommands")


# --------------------------------------------------------------------------- interpolation tests


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${A}/$A/${UNSET}", "a/a/"),
        ("${UNSET:-d} ${EMPTY:-d} ${A:-d}", "d d a"),
        ("${UNSET-d} ${EMPTY-d} ${A-d}", "d  a"),
        ("${UNSET:+x} ${EMPTY:+x} ${A:+x} ${EMPTY+x}", "  x x"),
        ("${A:?must} ${EMPTY?ok}", "a "),
        ("${UNSET:-${A}-${UNSET:-z}}", "a-z"),
        ("pg_isready -U $${POSTGRES_USER} costs $$5", "pg_isready -U ${POSTGRES_USER} costs $5"),
        ("${UNSET:-localhost:*,10.*}", "localhost:*,10.*"),
    ],
)
def test_interpolation_follows_the_compose_rules(text: str, expected: str) -> None:
    assert interpolate(text, {"A": "a", "EMPTY": ""}) == expected


@pytest.mark.parametrize("text", ["${EMPTY:?needed}", "${UNSET?needed}", "${A", "${1A}", "cost $ 5"])
def test_interpolation_errors(text: str) -> None:
    with pytest.raises(InterpolationError):
        interpolate(text, {"A": "a", "EMPTY": ""})


# --------------------------------------------------------------------------- schema


def test_compose_file_matches_the_compose_specification(
    compose: dict[str, Any], validator: jsonschema.Draft7Validator
) -> None:
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert not errors, "\n".join(errors)


def test_gpu_override_matches_the_compose_specification(
    env_example: dict[str, str], validator: jsonschema.Draft7Validator, services: dict[str, Any]
) -> None:
    override = interpolate_tree(yaml.safe_load(GPU_OVERRIDE.read_text()), env_example)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(override)]
    assert not errors, "\n".join(errors)
    assert set(override["services"]) <= set(services), "the override names unknown services"


@pytest.mark.parametrize(
    "breakage",
    [
        lambda c: c["services"]["worker"].update(comand=["autoaug"]),  # misspelt key
        lambda c: c["services"]["postgres"]["healthcheck"].update(interval=5),  # not a duration string
        lambda c: c["services"]["api"].update(ports="8000:8000"),  # not a list
        lambda c: c.update(volumes=["pgdata"]),  # not a mapping
    ],
)
def test_schema_validation_catches_broken_files(
    compose: dict[str, Any], validator: jsonschema.Draft7Validator, breakage: Any
) -> None:
    broken = copy.deepcopy(compose)
    breakage(broken)
    assert not validator.is_valid(broken)


# --------------------------------------------------------------------------- variables


def test_every_variable_has_a_value_in_env_example(raw_compose: dict[str, Any], env_example: dict[str, str]) -> None:
    used = variables_in(raw_compose)
    assert used, "the compose file interpolates nothing: the check below would be empty"
    missing = sorted(v for v in used if not env_example.get(v))
    assert not missing, f"used in docker-compose.yml but without a value in .env.example: {missing}"


def test_env_example_has_no_unused_variables(raw_compose: dict[str, Any], env_example: dict[str, str]) -> None:
    unused = sorted(set(env_example) - variables_in(raw_compose))
    assert not unused, f"in .env.example but never used by docker-compose.yml: {unused}"


def test_the_password_is_required(raw_compose: dict[str, Any], env_example: dict[str, str]) -> None:
    without = {k: v for k, v in env_example.items() if k != "POSTGRES_PASSWORD"}
    with pytest.raises(InterpolationError, match="POSTGRES_PASSWORD"):
        interpolate_tree(raw_compose, without)


def test_defaults_alone_give_the_same_file_as_env_example(
    raw_compose: dict[str, Any], compose: dict[str, Any], env_example: dict[str, str]
) -> None:
    """.env.example documents the defaults: only the required password has none in the file."""
    assert interpolate_tree(raw_compose, {"POSTGRES_PASSWORD": env_example["POSTGRES_PASSWORD"]}) == compose


# --------------------------------------------------------------------------- services


_COMPOSE_OPTIONS_WITH_VALUES = {"-f", "--file", "-p", "--project-name", "--profile", "--env-file", "-e",
                                "--env", "--scale", "--build-arg", "-u", "--user", "-w", "--workdir"}
_COMPOSE_SUBCOMMANDS_WITH_SERVICES = {"up", "run", "build", "logs", "start", "stop", "restart", "pull", "exec",
                                      "create", "rm", "kill"}


def services_named_in(text: str) -> set[str]:
    """Services that `docker compose <subcommand> ... SERVICE...` lines of a text name."""
    named: set[str] = set()
    for match in re.finditer(r"docker compose\s+([^`#\n]*)", text):
        words, positional, skip = shlex.split(match.group(1)), [], False
        for word in words:
            if skip:
                skip = False
            elif word.startswith("-"):
                skip = word in _COMPOSE_OPTIONS_WITH_VALUES
            else:
                positional.append(word)
        if positional and positional[0] in _COMPOSE_SUBCOMMANDS_WITH_SERVICES:
            # run / exec: SERVICE [COMMAND...]; the others: SERVICE...
            named.update(positional[1:2] if positional[0] in ("run", "exec") else positional[1:])
    return named


def test_services_named_in_reads_compose_command_lines() -> None:
    text = """
    docker compose build --build-arg TORCH_INDEX=x       # comment api
    docker compose -f docker-compose.yml -f deploy/compose.gpu.yml up --scale worker=2 -d worker
    `docker compose up -d postgres mlflow` and `docker compose run --rm pipeline dvc repro -f`
    docker compose config
    """
    assert services_named_in(text) == {"worker", "postgres", "mlflow", "pipeline"}


def test_every_service_the_readme_names_exists(services: dict[str, Any]) -> None:
    assert set(services) >= EXPECTED_SERVICES, f"missing services: {EXPECTED_SERVICES - set(services)}"
    named = services_named_in(README.read_text())
    assert named <= set(services), f"README.md names services the compose file lacks: {named - set(services)}"


def test_every_command_is_in_exec_form(services: dict[str, Any]) -> None:
    for name, service in services.items():
        if "command" in service:
            command_of(service)
        assert "entrypoint" not in service, f"{name}: no entrypoint overrides, commands only"


def test_worker_can_be_scaled(services: dict[str, Any]) -> None:
    worker = services["worker"]
    assert "container_name" not in worker, "a container_name makes `--scale worker=N` fail"
    assert all(host is None for host, _ in published_ports(worker)), "a fixed host port makes scaling fail"
    assert worker.get("restart") == "on-failure"
    assert command_of(worker)[:3] == ["autoaug", "worker", "search_policy"]


def test_the_pipeline_is_a_one_shot_dvc_repro(services: dict[str, Any]) -> None:
    from dvc.cli import parse_args

    pipeline = services["pipeline"]
    command = command_of(pipeline)
    assert command[:2] == ["dvc", "repro"]
    parse_args(command[1:])  # raises on an unknown dvc option
    assert pipeline.get("restart") == "no"


def test_depends_on_targets_exist_and_have_what_the_condition_needs(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for target, spec in depends_on(service).items():
            assert target in services, f"{name} depends on unknown service {target}"
            if spec.get("condition") == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target} to be healthy; it has no healthcheck"
    for name in ("pipeline", "worker"):
        assert {"postgres", "mlflow"} <= set(depends_on(services[name])), name


def test_named_volumes_are_declared_and_bind_sources_exist(compose: dict[str, Any], services: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        for mount in mounts(service):
            if mount["type"] == "volume":
                assert mount["source"] in declared, f"{name}: volume {mount['source']} not under top-level volumes"
            elif mount["type"] == "bind":
                assert (ROOT / mount["source"]).exists(), f"{name}: bind source {mount['source']} missing"


def test_postgres(services: dict[str, Any]) -> None:
    postgres = services["postgres"]
    assert str(postgres["image"]).startswith("postgres:16")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    data = [m for m in mounts(postgres) if m["target"] == "/var/lib/postgresql/data"]
    assert data and data[0]["type"] == "volume", "the database needs a named volume"
    env = environment(postgres)
    assert {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"} <= set(env)
    init = [m for m in mounts(postgres) if m["target"].startswith("/docker-entrypoint-initdb.d/")]
    assert init and init[0]["target"].endswith(".sh"), "the Optuna database is created by deploy/postgres-init.sh"
    assert "OPTUNA_DB" in (ROOT / init[0]["source"]).read_text()


def _postgres_url(url: str, services: dict[str, Any]) -> str:
    """Check a client URL against the postgres service; return its database name."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    env = environment(services["postgres"])
    assert parsed.drivername == "postgresql+psycopg", url
    assert parsed.host == "postgres" and parsed.port in (None, 5432), url
    assert parsed.username == env["POSTGRES_USER"] and parsed.password == env["POSTGRES_PASSWORD"], url
    assert parsed.database
    return parsed.database


def test_mlflow_server(services: dict[str, Any]) -> None:
    from mlflow.cli import server

    mlflow = services["mlflow"]
    command = command_of(mlflow)
    assert command[:2] == ["mlflow", "server"]
    params = server.make_context("server", command[2:]).params  # the installed MLflow's own parser
    database = _postgres_url(params["backend_store_uri"], services)
    assert database == environment(services["postgres"])["POSTGRES_DB"]
    assert "--serve-artifacts" in command and params["serve_artifacts"]
    artifacts = params["artifacts_destination"]
    assert any(m["type"] == "volume" and m["target"] == artifacts for m in mounts(mlflow)), (
        f"--artifacts-destination {artifacts} is not on a named volume"
    )
    assert params["host"] == "0.0.0.0"
    assert (None if not mlflow.get("ports") else published_ports(mlflow)[0][1]) == str(params["port"])
    assert "localhost:5000/health" in " ".join(mlflow["healthcheck"]["test"])
    allowed_hosts = params["allowed_hosts"].split(",")
    client_host = urlsplit(environment(services["worker"])["AUTOAUG_MLFLOW_URI"]).netloc
    assert client_host == f"mlflow:{params['port']}"
    for host in (client_host, f"localhost:{params['port']}", f"127.0.0.1:{params['port']}"):
        assert any(re.fullmatch(re.escape(p).replace(r"\*", ".*"), host) for p in allowed_hosts), (
            f"--allowed-hosts rejects {host}"
        )
    api_port = published_ports(services["api"])[0][0]
    assert f"http://localhost:{api_port}" in params["cors_allowed_origins"].split(",")
    assert mlflow.get("image") == services["pipeline"].get("image"), "the server and its clients share MLflow's version"


def test_pipeline_and_workers_share_the_tracking_stores(services: dict[str, Any]) -> None:
    postgres_env = environment(services["postgres"])
    for name in ("pipeline", "worker"):
        service = services[name]
        env = environment(service)
        assert env["AUTOAUG_MLFLOW_URI"] == "http://mlflow:5000", name
        database = _postgres_url(env["AUTOAUG_OPTUNA_STORAGE"], services)
        assert database in (postgres_env["POSTGRES_DB"], postgres_env.get("OPTUNA_DB")), (
            f"{name}: Optuna database {database} is never created"
        )
        checkout = [m for m in mounts(service) if m["target"] == "/workspace"]
        assert checkout and checkout[0]["source"] == "." and not checkout[0]["read_only"], name
    assert services["pipeline"]["image"] == services["worker"]["image"]


def test_api(services: dict[str, Any]) -> None:
    api = services["api"]
    command = command_of(api)
    args = subcommands(_parser())["serve"].parse_args(command[2:])
    assert args.host == "0.0.0.0"
    assert [str(args.port)] == [container for _, container in published_ports(api)]
    assert all(host is not None for host, _ in published_ports(api)), "the API's port is published"
    published = Path("/workspace") / (args.published or "published")
    readable = [m for m in mounts(api) if published.is_relative_to(m["target"])]
    assert readable and all(m["read_only"] for m in readable), "the API mounts published/ read-only"
    assert environment(api)["AUTOAUG_MLFLOW_UI_URL"].startswith("http://localhost:")


def _parser() -> argparse.ArgumentParser:
    from pipeline.cli import build_parser

    return build_parser()


@pytest.mark.parametrize("service", AUTOAUG_SERVICES)
def test_autoaug_commands_are_real(services: dict[str, Any], service: str) -> None:
    command = command_of(services[service])
    if command[0] != "autoaug":
        assert command[0] in ("dvc",), f"{service}: unexpected program {command[0]}"
        return
    parser = _parser()
    if len(command) > 1 and command[1] == "worker" and "worker" not in subcommands(parser):
        pytest.xfail("`autoaug worker` is not implemented yet")
    try:
        parser.parse_args(command[1:])
    except SystemExit as exc:  # argparse's way of saying: unknown command or option
        pytest.fail(f"{service}: `{shlex.join(command)}` is not a valid autoaug command (exit {exc.code})")


# --------------------------------------------------------------------------- image


def _dockerfile_args() -> dict[str, str | None]:
    args: dict[str, str | None] = {}
    for match in re.finditer(r"^ARG\s+([A-Za-z_][A-Za-z0-9_]*)(?:=(\S+))?", DOCKERFILE.read_text(), re.M):
        args[match[1]] = match[2]
    return args


def test_dockerfile(services: dict[str, Any]) -> None:
    text = DOCKERFILE.read_text()
    instructions = [line.split()[0].upper() for line in text.splitlines() if line and not line[0].isspace()
                    and not line.startswith("#")]
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert "ENTRYPOINT" not in instructions, "the services give their own commands"
    assert re.search(r"^WORKDIR /workspace$", text, re.M)
    assert re.search(r"apt-get install[^\n]*\bgit\b", text), "DVC needs git"
    assert "pip install -e ." in text
    args = _dockerfile_args()
    assert args.get("TORCH_INDEX") == "https://download.pytorch.org/whl/cpu"
    assert re.search(r'--index-url "?\$\{?TORCH_INDEX\}?"?', text)
    for name, service in services.items():
        build = service.get("build")
        if isinstance(build, dict):
            unknown = set(build.get("args") or {}) - set(args)
            assert not unknown, f"{name}: build args the Dockerfile does not declare: {unknown}"


def test_dockerfile_installs_torch_in_the_ranges_of_pyproject() -> None:
    import tomllib

    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    text = DOCKERFILE.read_text()
    for package in ("torch", "torchvision"):
        wanted = next(d for d in dependencies if re.match(rf"{package}\s*[<>=!~]", d))
        assert f'"{wanted}"' in text, f"Dockerfile should pip install {wanted!r} (pyproject.toml)"


def test_dockerignore() -> None:
    patterns = {
        line.strip().rstrip("/") for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for needed in (".venv", "data", "outputs", "published", "*.db", "mlruns", ".autoaug", ".git"):
        assert needed in patterns, f".dockerignore should exclude {needed}"
    copied = {"pyproject.toml", "README.md", "pipeline", "service", "*", "**"}
    assert not patterns & copied, f".dockerignore excludes what the image needs: {patterns & copied}"


def test_api_runs_several_workers(services: dict[str, Any], env_example: dict[str, str]) -> None:
    args = subcommands(_parser())["serve"].parse_args(command_of(services["api"])[2:])
    assert args.workers == int(env_example["API_WORKERS"]) >= 2
