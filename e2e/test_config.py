"""Configuration is declared once, in the code: every binary's `--help` lists
each environment variable it reads with its default. docs/configuration.md, the compose
file and `.env.example` may only name variables the code knows, with the
code's defaults, so none of them can drift from it."""

import os
import re
import subprocess

import yaml

from conftest import ROOT

TARGET = ROOT / "target" / "debug"
BINARIES = {
    "patients-service": [TARGET / "patients-service"],
    "studies-service": [TARGET / "studies-service"],
    "gateway": [TARGET / "gateway"],
    "fhir": [TARGET / "fhir"],
    "patients-service migrate": [TARGET / "patients-service", "migrate"],
    "studies-service migrate": [TARGET / "studies-service", "migrate"],
    "clinic-dev up": [TARGET / "clinic-dev", "up"],
    "clinic-health": [TARGET / "clinic-health"],
}
# Read by the test harness and `make up` to find PostgreSQL's binaries
# (clinic-testkit), and by the OpenTelemetry SDK, not by a binary's own settings.
ALSO_READ = {"PG_BIN", "OTEL_EXPORTER_OTLP_ENDPOINT"}
ENV = re.compile(r"\[env: ([A-Z][A-Z0-9_]*)=?[^\]]*\]\s*(?:\[default: ([^\]]*)\])?")


def settings(binary: str) -> dict:
    """{variable: default or None} from the binary's --help, run with an
    empty environment so no value of ours shows up as a default."""
    out = subprocess.run([*map(str, BINARIES[binary]), "--help"], capture_output=True, text=True, env={"PATH": os.environ["PATH"]}, timeout=30)
    assert out.returncode == 0, out.stderr
    return {m.group(1): m.group(2) for m in ENV.finditer(out.stdout)}


def known() -> dict:
    return {binary: settings(binary) for binary in BINARIES}


def configuration() -> str:
    """The configuration guide, where every setting is documented."""
    return (ROOT / "docs" / "configuration.md").read_text()


def documented_variables() -> set:
    """Every upper-case name in backticks in the first column of the
    configuration guide's tables."""
    names = set()
    for line in configuration().splitlines():
        if line.startswith("| `"):
            names.update(re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1]))
    return names


def test_every_binary_lists_its_variables_with_their_defaults():
    code = known()
    assert code["patients-service"]["LISTEN_ADDR"] == "127.0.0.1:50051"
    assert code["studies-service"]["LISTEN_ADDR"] == "127.0.0.1:50052"
    assert code["gateway"]["LISTEN_ADDR"] == "127.0.0.1:50053"
    assert code["fhir"]["LISTEN_ADDR"] == "127.0.0.1:50054"
    assert code["clinic-dev up"]["ENVOY_PORT"] == "8080"
    for binary in ("patients-service", "studies-service", "gateway", "fhir"):
        for shared in ("REQUEST_TIMEOUT_MS", "SHUTDOWN_DRAIN_TIMEOUT_MS", "DOWNSTREAM_TIMEOUT_MS", "RUST_LOG", "LOG_FORMAT"):
            assert code[binary][shared] is not None, (binary, shared)


def test_the_configuration_guide_documents_every_variable_and_only_those_the_code_knows():
    code = set().union(*(v.keys() for v in known().values()))
    documented = documented_variables()
    assert documented - code - ALSO_READ == set(), "documented but unknown to the code"
    assert code - documented == set(), "read by the code but not documented"


def test_the_configuration_guides_defaults_are_the_codes():
    text = configuration()
    for binary, variables in known().items():
        for name, default in variables.items():
            if default is None:
                continue
            rows = [l for l in text.splitlines() if l.startswith(f"| `{name}`")]
            assert rows, name
            assert any(f"`{default}`" in row for row in rows), f"{binary}: docs/configuration.md's default of {name} is not `{default}`"


def test_compose_sets_only_variables_its_service_knows():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    code = known()
    for service in ("patients-service", "studies-service", "gateway", "fhir"):
        unknown = set(compose[service]["environment"]) - set(code[service]) - ALSO_READ
        assert unknown == set(), (service, unknown)
    for job, binary in (("patients-migrate", "patients-service migrate"), ("studies-migrate", "studies-service migrate")):
        unknown = set(compose[job]["environment"]) - set(code[binary])
        assert unknown == set(), (job, unknown)


def test_compose_services_listen_on_the_codes_default_ports():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    code = known()
    for service in ("patients-service", "studies-service", "gateway", "fhir"):
        port = code[service]["LISTEN_ADDR"].rsplit(":", 1)[1]
        assert compose[service]["environment"]["LISTEN_ADDR"] == f"0.0.0.0:{port}", service


def test_env_example_names_only_what_compose_interpolates():
    compose_text = (ROOT / "docker-compose.yml").read_text() + (ROOT / "deploy" / "keycloak" / "docker-compose.keycloak.yml").read_text()
    interpolated = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", compose_text))
    example = {line.split("=", 1)[0] for line in (ROOT / ".env.example").read_text().splitlines() if line and not line.startswith("#")}
    assert example - interpolated == set()
    assert interpolated - example == set(), "every variable compose reads is in .env.example"
