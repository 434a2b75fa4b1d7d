"""No log line at any level - the services', Envoy's, PostgreSQL's own -
holds a patient's name, email or birth date, including when requests fail."""

import json

import pytest

from conftest import Stack

FIRST, LAST, EMAIL, BIRTH = "Zyxwvuta", "Qoplikemsa", "zyxwvuta.qoplikemsa@ejemplo.com", "1937-03-21"


@pytest.fixture
def debug_stack(tmp_path):
    s = Stack(tmp_path, env={"RUST_LOG": "debug", "LOG_FORMAT": "json"})
    yield s
    s.cleanup()


def test_logs_of_a_whole_session_hold_no_patient_data(debug_stack):
    stack = debug_stack
    patient = {"first_name": FIRST, "last_name": LAST, "birth_date": BIRTH, "email": EMAIL}
    created = json.loads(stack.grpcurl("clinic.patients.v1.PatientService/CreatePatient", data=json.dumps({"patient": patient, "request_id": "log-check-1"})).stdout)
    # A duplicate email (a unique violation in Postgres), a reused request id,
    # invalid input echoing the data, an update and the listing.
    duplicate = dict(patient, email=EMAIL.upper())
    assert stack.grpcurl("clinic.patients.v1.PatientService/CreatePatient", data=json.dumps({"patient": duplicate}), check=False).returncode != 0
    assert stack.grpcurl("clinic.patients.v1.PatientService/CreatePatient", data=json.dumps({"patient": dict(patient, email="other@ejemplo.com"), "request_id": "log-check-1"}), check=False).returncode != 0
    bad = dict(patient, first_name=FIRST + "1", email=EMAIL + "@", birth_date=BIRTH + "x")
    assert stack.grpcurl("clinic.patients.v1.PatientService/CreatePatient", data=json.dumps({"patient": bad}), check=False).returncode != 0
    changed = {"patient": {"id": created["id"], "last_name": LAST + "x"}, "update_mask": {"paths": ["last_name"]}}
    stack.grpcurl("clinic.patients.v1.PatientService/UpdatePatient", data=json.dumps(changed))
    other = dict(patient, email="second@ejemplo.com")
    second = json.loads(stack.grpcurl("clinic.patients.v1.PatientService/CreatePatient", data=json.dumps({"patient": other})).stdout)
    clash = {"patient": {"id": second["id"], "email": EMAIL}, "update_mask": {"paths": ["email"]}}
    assert stack.grpcurl("clinic.patients.v1.PatientService/UpdatePatient", data=json.dumps(clash), check=False).returncode != 0
    stack.grpcurl("clinic.gateway.v1.GatewayService/ListPatientsWithStudies", data='{"page_size": 1000}')
    stack.grpcurl("clinic.patients.v1.PatientService/DeletePatient", data=json.dumps({"id": created["id"], "force": True}))
    stack.stop()

    logs = stack.logs()
    assert any(name.startswith("postgres:") for name in logs), "PostgreSQL's own log is checked too"
    assert sum(len(text) for text in logs.values()) > 1000, "the services did log"
    for name, text in logs.items():
        for secret in (FIRST, LAST, EMAIL, EMAIL.upper(), BIRTH):
            assert secret.lower() not in text.lower(), f"{name} contains {secret!r}"


def test_text_logs_written_to_files_hold_no_terminal_colour_codes(stack):
    """Log files are read with grep and shipped to collectors: the default
    text format is plain there, coloured only on a terminal."""
    stack.grpcurl("clinic.patients.v1.PatientService/ListPatients", data='{"page_size": 1}')
    logs = {name: text for name, text in stack.logs().items() if name.endswith("-service.log") or name == "gateway.log"}
    assert len(logs) == 3 and all(logs.values()), logs.keys()
    for name, text in logs.items():
        assert "\x1b[" not in text, f"{name} holds terminal escape codes"
