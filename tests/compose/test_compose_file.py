"""docker-compose.yml, kept honest without a container engine: valid against the Compose
Specification's schema (vendored, see NOTICE), and every command, port and variable
agrees with what the Procfile, the HAProxy configuration and the settings expect."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from django.urls import resolve

from config.haproxy import (
    COMPOSE_CONFIG as COMPOSE_HAPROXY,
)
from config.haproxy import (
    COMPOSE_WEB_PORT,
    COMPOSE_WEB_SERVICE,
    haproxy_binary,
    haproxy_compose_config_render,
)
from config.web import serve_command
from tests.live.conftest import REPO, procfile_command

SCHEMA = Path(__file__).with_name("compose-spec.json")
COMPOSE_FILE = REPO / "docker-compose.yml"
APP_SERVICES = ("migrate", "web", "publisher", "worker", "beat", "flower")
# What the file's ${VAR:?...} variables need to be interpolated at all.
REQUIRED_VARIABLES = {"SECRET_KEY": "a-secret-key-only-for-this-test"}


def interpolate(value, variables: dict):
    """Compose's interpolation: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, $$."""
    if isinstance(value, dict):
        return {key: interpolate(item, variables) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, variables) for item in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match) -> str:
        if match["escaped"]:
            return "$"
        name, operator, word = match["name"], match["operator"], match["word"] or ""
        present = variables.get(name)
        if operator in (":-", "-"):
            use_default = present is None or (operator == ":-" and present == "")
            return word if use_default else present
        if operator in (":?", "?"):
            if present is None or (operator == ":?" and present == ""):
                raise KeyError(f"{name}: {word}")
            return present
        if present is None:
            raise KeyError(f"{name} is not set and has no default")
        return present

    return re.sub(
        r"(?P<escaped>\$\$)|\$\{(?P<name>\w+)(?:(?P<operator>:-|-|:\?|\?)(?P<word>[^}]*))?\}",
        one,
        value,
    )


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def compose(raw) -> dict:
    """The file as `docker compose config` would see it with only the required variables
    set: anchors merged, every default filled in."""
    return interpolate(raw, REQUIRED_VARIABLES)


def validator() -> jsonschema.Draft7Validator:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_the_file_is_valid_compose(raw, compose):
    for document in (raw, compose):
        errors = sorted(validator().iter_errors(document), key=lambda error: error.path)
        assert errors == [], [f"{list(error.path)}: {error.message}" for error in errors]


@pytest.mark.parametrize(
    "breakage",
    [
        lambda doc: doc["services"]["web"].update(restart_policy="always"),
        lambda doc: doc["services"]["haproxy"].update(ports="8000:8000"),
        lambda doc: doc["services"]["publisher"]["deploy"].update(replicas=[2]),
        lambda doc: doc.update(servces={}),
    ],
    ids=["unknown-key", "ports-not-a-list", "replicas-not-a-number", "misspelt-top-level"],
)
def test_the_schema_refuses_what_compose_would_refuse(compose, breakage):
    broken = json.loads(json.dumps(compose))
    breakage(broken)
    assert list(validator().iter_errors(broken)), "the schema let a broken file through"


def test_every_reference_names_something_the_file_declares(compose):
    services, volumes = compose["services"], compose.get("volumes", {})
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in volumes, f"{name} mounts undeclared volume {source}"


def procfile_argv(name: str, **variables) -> list[str]:
    """The Procfile's command for `name` as a container runs it (`python`, `celery`)."""
    argv = procfile_command(name, variables)
    if argv[0] == sys.executable and argv[1:3] == ["-m", "celery"]:
        return ["celery", *argv[3:]]
    if argv[0] == sys.executable:
        return ["python", *argv[1:]]
    return argv


def test_the_processes_run_as_the_procfile_runs_them(compose):
    services = compose["services"]
    assert services["publisher"]["command"] == procfile_argv("publisher")
    assert services["worker"]["command"] == procfile_argv("worker")
    # beat adds a pid file for its health check; everything else is the Procfile's.
    beat = services["beat"]["command"]
    assert beat[: len(procfile_argv("beat"))] == procfile_argv("beat")
    # flower's Procfile line adds a shell fallback that keeps `make run` going without it.
    flower_line = procfile_argv("flower", FLOWER_PORT="5555")
    flower = flower_line[: flower_line.index("||")]
    assert services["flower"]["command"] == [
        part.replace("127.0.0.1", "0.0.0.0") for part in flower
    ]
    assert services["flower"]["ports"] == ["5555:5555"]


def test_two_publishers_one_active(compose):
    assert compose["services"]["publisher"]["deploy"]["replicas"] == 2


def settings_under(environment: dict) -> dict:
    """The settings a process of the file builds from its environment (a real Django
    start in a child process; nothing connects at import)."""
    code = (
        "import json, django; django.setup(); from django.conf import settings as s;"
        "print(json.dumps({'databases': s.DATABASES, 'layer': s.CHANNEL_LAYERS,"
        " 'caches': s.CACHES, 'broker': s.CELERY_BROKER_URL,"
        " 'broker_options': s.CELERY_BROKER_TRANSPORT_OPTIONS,"
        " 'forwarded': getattr(s, 'FORWARDED_ALLOW_IPS', None)}, default=str))"
    )
    keep = {key: os.environ[key] for key in ("PATH", "HOME") if key in os.environ}
    env = {**keep, "DJANGO_SETTINGS_MODULE": "config.settings", **environment}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_haproxy_runs_the_committed_configuration_rendered_from_the_template(compose):
    committed = COMPOSE_HAPROXY.read_text()
    assert committed == haproxy_compose_config_render(), (
        "config/compose/haproxy.cfg is stale: python -m config.haproxy render-compose"
    )
    check = subprocess.run(
        [haproxy_binary(), "-c", "-f", str(COMPOSE_HAPROXY)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    haproxy = compose["services"]["haproxy"]
    mounted = {mount.split(":")[0]: mount.split(":")[1] for mount in haproxy["volumes"]}
    config_in_container = mounted[f"./{COMPOSE_HAPROXY.relative_to(REPO)}"]
    assert haproxy["command"][-2:] == ["-f", config_in_container]
    # Published on the port HAProxy binds, in front of the port every web container serves.
    assert f"bind 0.0.0.0:{COMPOSE_WEB_PORT}\n" in committed
    assert haproxy["ports"] == [f"8000:{COMPOSE_WEB_PORT}"]
    assert f" {COMPOSE_WEB_SERVICE}:{COMPOSE_WEB_PORT} " in committed


def test_web_containers_serve_what_haproxy_checks_and_forwards_to(compose):
    web = compose["services"][COMPOSE_WEB_SERVICE]
    # What the Procfile's web line becomes with one process (config/web.py), in a container.
    assert ["python", *web["command"][1:]] == [
        "python",
        *serve_command("0.0.0.0", COMPOSE_WEB_PORT)[1:],
    ]
    assert web["expose"] == [str(COMPOSE_WEB_PORT)]
    assert "ports" not in web, "only HAProxy may reach the web containers (they trust it)"
    check_uri = re.search(r"http-check send meth GET uri (\S+)", COMPOSE_HAPROXY.read_text())[1]
    assert resolve(check_uri).url_name == "api-realtime-live"
    assert f"http://127.0.0.1:{COMPOSE_WEB_PORT}{check_uri}'" in " ".join(
        web["healthcheck"]["test"]
    )


def app_environment(compose, service: str) -> dict:
    return {key: str(value) for key, value in compose["services"][service]["environment"].items()}


def test_every_variable_the_file_sets_is_one_the_product_reads(compose):
    read = set()
    for source in [*(REPO / "config" / "settings").glob("*.py"), REPO / "config" / "serve.py"]:
        read.update(re.findall(r"[\"']([A-Z][A-Z0-9_]+)[\"']", source.read_text()))
    for service in APP_SERVICES:
        unknown = set(app_environment(compose, service)) - read
        assert unknown == set(), f"{service} sets variables nothing reads: {unknown}"


def test_the_settings_of_the_file_point_at_its_services(compose):
    services = compose["services"]
    built = settings_under(app_environment(compose, "publisher"))
    assert built["databases"]["default"]["HOST"] == "postgres"
    assert built["databases"]["replica"]["HOST"] == "postgres-replica"
    assert services["postgres-replica"]["entrypoint"][-1].endswith("postgres-replica-start.sh")
    # Redis only through the sentinels, which watch the `redis` service under one name.
    listed = app_environment(compose, "web")["REDIS_SENTINELS"].split(",")
    sentinels = [(host, int(port)) for host, port in (item.split(":") for item in listed)]
    sentinel_services = sorted(name for name in services if name.startswith("sentinel-"))
    assert sorted(host for host, _ in sentinels) == sentinel_services
    master = app_environment(compose, "web")["REDIS_SENTINEL_MASTER"]
    script = (REPO / "config" / "compose" / "sentinel-start.sh").read_text()
    assert 'SENTINEL_PORT="${SENTINEL_PORT:-26379}"' in script
    assert 'REDIS_MASTER_HOST="${REDIS_MASTER_HOST:-redis}"' in script
    for name in sentinel_services:
        assert services[name]["environment"]["REDIS_SENTINEL_MASTER"] == master
    assert {port for _, port in sentinels} == {26379}
    layer = json.dumps(built["layer"])
    assert all(f'["{host}", {port}]' in layer for host, port in sentinels), layer
    assert f'"{master}"' in layer
    assert built["broker"].startswith("sentinel://sentinel-1:26379")
    assert built["broker_options"]["master_name"] == master
    assert "sentinel" in json.dumps(built["caches"]).lower()
