"""grpcurl 1.8 (reflection v1alpha, no .proto at hand) through Envoy."""

import json
import os
import re
import subprocess

from conftest import ROOT, VENV_BIN

PUBLIC = {"clinic.patients.v1.PatientService", "clinic.studies.v1.StudyService", "clinic.gateway.v1.GatewayService", "clinic.audit.v1.AuditService", "grpc.health.v1.Health"}


def test_list_shows_every_public_service(stack):
    services = set(stack.grpcurl("list").stdout.split())
    assert PUBLIC <= services, services
    assert not any("events" in s for s in services), "internal services stay internal"


def test_describe_works_for_every_service_and_message(stack):
    for service in PUBLIC:
        text = stack.grpcurl("describe", service).stdout
        if service.startswith("clinic."):
            assert "//" in text, f"{service} is described with its comments"
        for request, response in re.findall(r"rpc \w+ \( (?:stream )?\.?([\w.]+) \) returns \( (?:stream )?\.?([\w.]+) \)", text):
            for message in (request, response):
                described = stack.grpcurl("describe", message).stdout
                assert "is a message" in described, described


def test_every_printed_example_works_as_shown(stack):
    """Each example runs in a shell after the printed command that sets TOKEN,
    from the project folder, as a user pasting them would."""
    examples = stack.examples()
    assert len(examples) >= 5, stack.output
    exports = [line.strip() for line in stack.output.splitlines() if line.strip().startswith("export TOKEN=")]
    assert len(exports) == 1, stack.output
    assert any("$TOKEN" in e for e in examples) and any("-cacert" in e for e in examples), examples
    env = dict(os.environ, PATH=f"{VENV_BIN}:{os.environ['PATH']}", CLINIC_HOME=str(stack.home))
    for example in examples:
        script = f"set -e\n{exports[0]}\n{example}"
        result = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
        assert result.returncode == 0, f"{example}\n{result.stdout}{result.stderr}"


def test_crud_and_listing_with_grpcurl(stack):
    created = json.loads(stack.grpcurl("clinic.patients.v1.PatientService/CreatePatient", data=json.dumps(
        {"patient": {"first_name": "José", "last_name": "Treviño", "birth_date": "1990-05-05", "email": "grpcurl@ejemplo.com"}})).stdout)
    pid = created["id"]
    assert created["firstName"] == "José"

    updated = json.loads(stack.grpcurl("clinic.patients.v1.PatientService/UpdatePatient", data=json.dumps(
        {"patient": {"id": pid, "last_name": "O'Brien", "etag": created["etag"]}, "update_mask": {"paths": ["last_name"]}})).stdout)
    assert updated["lastName"] == "O'Brien" and updated["etag"] != created["etag"]

    study = json.loads(stack.grpcurl("clinic.studies.v1.StudyService/CreateStudy", data=json.dumps(
        {"study": {"patient_id": pid, "urgency_level": "URGENCY_LEVEL_MID", "body_part": "BODY_PART_BREASTS",
                   "description": "HIGH DENSITY ON LEFT SIDE", "study_type": "STUDY_TYPE_MAMMOGRAM"}})).stdout)
    assert study["bodyPart"] == "BODY_PART_BREASTS"

    view = json.loads(stack.grpcurl("clinic.gateway.v1.GatewayService/GetPatientWithStudies", data=json.dumps({"id": pid})).stdout)
    assert view["patient"]["id"] == pid and [s["id"] for s in view["studies"]] == [study["id"]]

    refused = stack.grpcurl("clinic.patients.v1.PatientService/DeletePatient", data=json.dumps({"id": pid}), check=False)
    assert refused.returncode != 0 and "FailedPrecondition" in refused.stderr + refused.stdout
    assert "PATIENT_HAS_STUDIES" in refused.stderr + refused.stdout, "error details are decoded through reflection"

    stack.grpcurl("clinic.patients.v1.PatientService/DeletePatient", data=json.dumps({"id": pid, "force": True}))
    gone = stack.grpcurl("clinic.patients.v1.PatientService/GetPatient", data=json.dumps({"id": pid}), check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr + gone.stdout


def test_health_through_envoy_names_each_service(stack):
    for name in ["", *sorted(PUBLIC - {"grpc.health.v1.Health"})]:
        answer = json.loads(stack.grpcurl("grpc.health.v1.Health/Check", data=json.dumps({"service": name})).stdout)
        assert answer["status"] == "SERVING", name


def test_every_envoy_config_passes_envoy_validation(stack, tmp_path):
    """The local config, and the compose ones with the containers' folders
    (/etc/clinic, /etc/envoy) pointed at this stack's files."""
    import shutil

    shutil.copytree(stack.home / "tls", tmp_path / "tls")
    sds = (ROOT / "envoy" / "tls-sds.yaml").read_text().replace("/etc/clinic/", f"{tmp_path}/")
    (tmp_path / "tls-sds.yaml").write_text(sds)
    configs = [stack.home / "envoy.yaml"]
    for name in ("envoy.compose.yaml", "envoy.keycloak.yaml"):
        text = (ROOT / "envoy" / name).read_text().replace("/etc/envoy/clinic.pb", str(stack.home / "clinic.pb"))
        text = text.replace("/etc/envoy/tls-sds.yaml", str(tmp_path / "tls-sds.yaml"))
        (tmp_path / name).write_text(text)
        configs.append(tmp_path / name)
    for config in configs:
        result = subprocess.run([str(VENV_BIN / "envoy"), "--mode", "validate", "-c", str(config)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and "OK" in result.stdout + result.stderr, f"{config}:\n{result.stdout}{result.stderr}"
