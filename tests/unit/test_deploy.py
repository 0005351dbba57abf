"""Deployment artefacts (Dockerfile, compose, k8s) keep the public contracts of DESIGN.md.

There is no Docker engine or cluster in CI, so these files are checked by reading them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from services.console.settings import ConsoleSettings
from services.journey.settings import JourneySettings
from services.messaging.settings import MessagingSettings
from shared.settings import APP_PORTS, APPS, DEFAULT_PORTS, SERVICES, Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
K8S_DIR = ROOT / "deploy" / "k8s"

# Fixed in DESIGN.md; users' firewalls and SDK configs depend on them.
PORTS = {"ingest": 8001, "profile": 8002, "journey": 8003, "messaging": 8004}
CONSOLE_PORT = 8000  # the web console: the port before ingest's
REQUIRED_ENV = (
    "TOUCHPOINT_DATABASE_URL",
    "TOUCHPOINT_KAFKA_BOOTSTRAP",
    "TOUCHPOINT_TOPIC_PREFIX",
    "TOUCHPOINT_SMTP_URL",
    "TOUCHPOINT_BOOTSTRAP_WRITE_KEY",
    "TOUCHPOINT_BOOTSTRAP_ADMIN_KEY",
)
# Required from the environment, never a default: the bootstrap keys and the secret.
BOOTSTRAP_KEYS = ("TOUCHPOINT_BOOTSTRAP_WRITE_KEY", "TOUCHPOINT_BOOTSTRAP_ADMIN_KEY",
                  "TOUCHPOINT_SECRET")
ONE_SHOT = {"migrate": ["migrate"], "topics": ["topics", "create"]}
ENV_NAME = re.compile(r"\bTOUCHPOINT_[A-Z][A-Z0-9_]*")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = compose["services"]
    return found


@pytest.fixture(scope="module")
def k8s_docs() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((K8S_DIR / name).read_text()) if d]
    return docs


def _k8s(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _settings_from(env: dict[str, Any]) -> Settings:
    """Build Settings from an env mapping, with stand-ins for the secrets."""
    values = {k.removeprefix("TOUCHPOINT_").lower(): str(v) for k, v in env.items()}
    for key in BOOTSTRAP_KEYS:
        values[key.removeprefix("TOUCHPOINT_").lower()] = "x" * 32
    return Settings.model_validate(values)


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines = [ln for ln in DOCKERFILE.read_text().splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [
        (ln.split(None, 1)[0].upper(), ln.split(None, 1)[1].strip())
        for ln in joined.splitlines()
        if ln.strip()
    ]


# --- compose -------------------------------------------------------------------------------


def test_settings_ports_match_design() -> None:
    assert DEFAULT_PORTS == PORTS
    assert tuple(SERVICES) == tuple(PORTS)
    assert APPS == ("console",) and APP_PORTS == {"console": CONSOLE_PORT}


def test_compose_runs_the_console(services: dict[str, Any]) -> None:
    console = services["console"]
    assert console["command"] == ["serve", "console"]
    assert f"{CONSOLE_PORT}:{CONSOLE_PORT}" in [str(p) for p in console["ports"]]
    assert console["restart"] == "unless-stopped"
    assert f":{CONSOLE_PORT}/healthz" in " ".join(console["healthcheck"]["test"])
    env = console["environment"]
    for name, port in PORTS.items():  # it finds the services as the CLI does
        assert env[f"TOUCHPOINT_{name.upper()}_URL"] == f"http://{name}:{port}"
        assert console["depends_on"][name]["condition"] == "service_healthy"
    assert env["TOUCHPOINT_BOOTSTRAP_ADMIN_KEY"].startswith("${")


def test_k8s_console(k8s_docs: list[dict[str, Any]]) -> None:
    pod = _k8s(k8s_docs, "Deployment")["console"]["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["args"] == ["serve", "console"]
    assert [p["containerPort"] for p in container["ports"]] == [CONSOLE_PORT]
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        assert container[probe]["httpGet"]["path"] == path
    env = {e["name"]: e["value"] for e in container["env"]}
    for name, port in PORTS.items():
        assert env[f"TOUCHPOINT_{name.upper()}_URL"] == f"http://{name}:{port}"
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    (svc_port,) = _k8s(k8s_docs, "Service")["console"]["spec"]["ports"]
    assert svc_port["port"] == CONSOLE_PORT


def test_compose_runs_the_whole_stack(services: dict[str, Any]) -> None:
    expected = {"kafka", "postgres", "mailpit", *ONE_SHOT, *PORTS}
    assert expected <= set(services)


def test_no_zookeeper_anywhere() -> None:
    for path in [COMPOSE_FILE, *K8S_DIR.glob("*.yaml")]:
        assert "zookeeper" not in path.read_text().lower(), path


def test_kafka_is_apache_kafka_in_kraft_mode(services: dict[str, Any]) -> None:
    kafka = services["kafka"]
    env = kafka["environment"]
    assert kafka["image"].startswith("apache/kafka:")
    assert {"broker", "controller"} <= set(env["KAFKA_PROCESS_ROLES"].split(","))
    assert env["CLUSTER_ID"] and env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{env['KAFKA_NODE_ID']}@")
    assert str(env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"]).lower() == "false"
    assert int(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == 1
    assert int(env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"]) == 1
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    check = " ".join(kafka["healthcheck"]["test"])
    assert "kafka-broker-api-versions.sh" in check or "kafka-topics.sh" in check


def test_postgres_matches_the_database_url(compose: dict[str, Any]) -> None:
    pg = compose["services"]["postgres"]
    assert pg["image"].startswith("postgres:16")
    assert "pg_isready" in pg["healthcheck"]["test"]
    volume = pg["volumes"][0].split(":")[0]
    assert volume in compose["volumes"]
    url = urlsplit(compose["services"]["ingest"]["environment"]["TOUCHPOINT_DATABASE_URL"])
    env = pg["environment"]
    assert (url.hostname, url.port) == ("postgres", 5432)
    assert (url.username, url.password) == (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"])
    assert url.path.lstrip("/") == env["POSTGRES_DB"]


def test_smtp_catcher_is_where_messaging_sends(services: dict[str, Any]) -> None:
    mailpit = services["mailpit"]
    assert mailpit["image"].startswith("axllent/mailpit")
    assert {"1025:1025", "8025:8025"} <= set(mailpit["ports"])
    assert services["messaging"]["environment"]["TOUCHPOINT_SMTP_URL"] == "smtp://mailpit:1025"


@pytest.mark.parametrize("name", list(PORTS))
def test_touchpoint_service(services: dict[str, Any], name: str) -> None:
    svc, port = services[name], PORTS[name]
    assert svc["build"] in (".", {"context": "."})
    assert svc["command"] == ["serve", name]
    assert f"{port}:{port}" in [str(p) for p in svc["ports"]]
    assert svc["restart"] == "unless-stopped"
    check = " ".join(svc["healthcheck"]["test"])
    assert f":{port}/healthz" in check
    deps = {dep: spec["condition"] for dep, spec in svc["depends_on"].items()}
    assert deps["kafka"] == deps["postgres"] == "service_healthy"
    assert deps["migrate"] == deps["topics"] == "service_completed_successfully"


@pytest.mark.parametrize("name", [*ONE_SHOT, *PORTS])
def test_touchpoint_env(services: dict[str, Any], name: str) -> None:
    env = services[name]["environment"]
    assert set(REQUIRED_ENV) <= set(env)
    assert env["TOUCHPOINT_ENV"] == "prod"
    assert env["TOUCHPOINT_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert env["TOUCHPOINT_TOPIC_PREFIX"] == "touchpoint."
    for key in BOOTSTRAP_KEYS:  # required from the environment, never a default secret
        assert re.fullmatch(rf"\$\{{{key}:\?[^}}]+\}}", env[key]), env[key]
    settings = _settings_from(env)
    assert settings.database_url.startswith("postgresql+asyncpg://")


@pytest.mark.parametrize(("name", "command"), ONE_SHOT.items())
def test_one_shot_services(services: dict[str, Any], name: str, command: list[str]) -> None:
    svc = services[name]
    assert svc["build"] in (".", {"context": "."})
    assert svc["command"] == command
    assert svc.get("restart", "no") == "no"
    needs = "postgres" if name == "migrate" else "kafka"
    assert svc["depends_on"][needs]["condition"] == "service_healthy"


def test_every_long_running_service_has_a_healthcheck(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        if name not in ONE_SHOT:
            check = svc.get("healthcheck", {})
            assert check.get("test") and not check.get("disable"), name


def test_no_default_for_secrets_in_compose() -> None:
    text = COMPOSE_FILE.read_text()
    for key in BOOTSTRAP_KEYS:
        assert not re.search(rf"\$\{{{key}:?-", text), key


# --- Dockerfile ----------------------------------------------------------------------------


def test_dockerfile_contract() -> None:
    instructions = _dockerfile()
    last_from = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    final = instructions[last_from:]
    ops = {op: args for op, args in final}  # last one of each wins, as in Docker
    assert ops["FROM"].startswith("python:3.11-slim")
    assert json.loads(ops["ENTRYPOINT"]) == ["touchpoint"]
    assert json.loads(ops["CMD"]) == ["serve", "ingest"]
    assert ops["USER"].split(":")[0] not in ("root", "0")
    assert "/healthz" in ops["HEALTHCHECK"] and "python" in ops["HEALTHCHECK"]
    assert {str(p) for p in PORTS.values()} <= set(ops["EXPOSE"].split())
    runs = " ".join(args for op, args in instructions if op == "RUN")
    assert re.search(r"pip install (--no-deps )?\.(\s|$)", runs)
    assert " -e " not in runs and "--editable" not in runs


def test_dockerignore_keeps_local_state_out() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".env", ".touchpoint"} <= set(ignored)


# --- Kubernetes ----------------------------------------------------------------------------


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    on_disk = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == on_disk
    assert kustomization["namespace"] == "touchpoint"


def _port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    found: int = next(p["containerPort"] for p in container["ports"] if p["name"] == port)
    return found


@pytest.mark.parametrize("name", list(PORTS))
def test_k8s_deployment(k8s_docs: list[dict[str, Any]], name: str) -> None:
    pod = _k8s(k8s_docs, "Deployment")[name]["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    port = PORTS[name]
    assert container["args"] == ["serve", name]
    assert [p["containerPort"] for p in container["ports"]] == [port]
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        http = container[probe]["httpGet"]
        assert http["path"] == path
        assert _port_number(container, http["port"]) == port
    for bound in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][bound])
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False

    service = _k8s(k8s_docs, "Service")[name]["spec"]
    assert service["selector"].items() <= pod["metadata"]["labels"].items()
    (svc_port,) = service["ports"]
    assert svc_port["port"] == port
    assert _port_number(container, svc_port["targetPort"]) == port


def test_k8s_jobs(k8s_docs: list[dict[str, Any]]) -> None:
    jobs = _k8s(k8s_docs, "Job")
    args = sorted(j["spec"]["template"]["spec"]["containers"][0]["args"] for j in jobs.values())
    assert ["migrate"] in args
    for job in jobs.values():
        assert job["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_k8s_env_is_complete_and_secrets_are_placeholders(k8s_docs: list[dict[str, Any]]) -> None:
    config = _k8s(k8s_docs, "ConfigMap")["touchpoint-config"]["data"]
    secret = _k8s(k8s_docs, "Secret")["touchpoint-secrets"]["stringData"]
    assert not set(config) & set(secret)
    assert set(REQUIRED_ENV) <= set(config) | set(secret)
    assert set(BOOTSTRAP_KEYS) | {"TOUCHPOINT_DATABASE_URL"} <= set(secret)
    assert all("CHANGE-ME" in value for value in secret.values())
    assert config["TOUCHPOINT_ENV"] == "prod"
    _settings_from({**config, **secret})
    with pytest.raises(ValueError, match="too short"):  # left unreplaced, prod refuses to boot
        Settings.model_validate({"env": "prod", "bootstrap_admin_key": secret[BOOTSTRAP_KEYS[1]]})
    with pytest.raises(ValueError, match="TOUCHPOINT_SECRET"):
        Settings.model_validate({"env": "prod", "secret": secret["TOUCHPOINT_SECRET"]})
    for workload in [*_k8s(k8s_docs, "Deployment").values(), *_k8s(k8s_docs, "Job").values()]:
        refs = workload["spec"]["template"]["spec"]["containers"][0]["envFrom"]
        assert {"configMapRef": {"name": "touchpoint-config"}} in refs
        assert {"secretRef": {"name": "touchpoint-secrets"}} in refs


# --- every env name we ship is one Settings reads -------------------------------------------


def test_every_touchpoint_env_name_is_a_settings_field() -> None:
    docs = [ROOT / "deploy" / "README.md", ROOT / "docs" / "deployment.md"]
    files = [COMPOSE_FILE, DOCKERFILE, *K8S_DIR.glob("*.yaml"), *docs]
    fields = (set(Settings.model_fields) | set(MessagingSettings.model_fields)
              | set(JourneySettings.model_fields) | set(ConsoleSettings.model_fields))
    for path in files:
        if not path.exists():
            continue
        for name in set(ENV_NAME.findall(path.read_text())):
            assert name.removeprefix("TOUCHPOINT_").lower() in fields, f"{path.name}: {name}"
