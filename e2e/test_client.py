"""A Python client generated from proto/ with grpcio-tools, through Envoy."""

import time

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status


def channel(stack):
    return stack.channel()


def details(error: grpc.RpcError) -> dict:
    status = rpc_status.from_call(error)
    found = {}
    for detail in status.details:
        for kind in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest, error_details_pb2.PreconditionFailure):
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                found[kind.__name__] = message
    return found


def test_crud_and_rich_errors_with_a_generated_client(stack, pb):
    patients = pb.patients_grpc.PatientServiceStub(channel(stack))
    Patient = pb.patients.Patient

    created = patients.CreatePatient(pb.patients.CreatePatientRequest(
        patient=Patient(first_name="Diana Laura", last_name="Del Toro", birth_date="1988-08-29", email="python@ejemplo.com"),
        request_id="py-1"), timeout=10)
    again = patients.CreatePatient(pb.patients.CreatePatientRequest(
        patient=Patient(first_name="Diana Laura", last_name="Del Toro", birth_date="1988-08-29", email="python@ejemplo.com"),
        request_id="py-1"), timeout=10)
    assert again.id == created.id, "idempotent create"
    assert patients.GetPatient(pb.patients.GetPatientRequest(id=created.id), timeout=10) == created

    with pytest.raises(grpc.RpcError) as bad:
        patients.CreatePatient(pb.patients.CreatePatientRequest(
            patient=Patient(first_name="", last_name="Ok", birth_date="2999-01-01", email="x")), timeout=10)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    found = details(bad.value)
    assert found["ErrorInfo"].domain == "clinic" and found["ErrorInfo"].reason == "INVALID_FIELDS"
    assert {v.field for v in found["BadRequest"].field_violations} == {"patient.first_name", "patient.birth_date", "patient.email"}

    with pytest.raises(grpc.RpcError) as taken:
        patients.CreatePatient(pb.patients.CreatePatientRequest(
            patient=Patient(first_name="Other", last_name="Person", birth_date="1980-01-01", email="PYTHON@ejemplo.com")), timeout=10)
    assert taken.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert details(taken.value)["ErrorInfo"].reason == "EMAIL_ALREADY_EXISTS"

    with pytest.raises(grpc.RpcError) as stale:
        patients.UpdatePatient(pb.patients.UpdatePatientRequest(
            patient=Patient(id=created.id, first_name="Ana", etag="not-the-etag")), timeout=10)
    assert stale.value.code() == grpc.StatusCode.ABORTED
    assert details(stale.value)["ErrorInfo"].reason == "ETAG_MISMATCH"

    patients.DeletePatient(pb.patients.DeletePatientRequest(id=created.id, etag=created.etag), timeout=10)
    with pytest.raises(grpc.RpcError) as gone:
        patients.GetPatient(pb.patients.GetPatientRequest(id=created.id), timeout=10)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    assert details(gone.value)["ErrorInfo"].reason == "PATIENT_DELETED"
    with pytest.raises(grpc.RpcError) as never:
        patients.GetPatient(pb.patients.GetPatientRequest(id=created.id + 10**9), timeout=10)
    assert details(never.value)["ErrorInfo"].reason == "PATIENT_NOT_FOUND"


def test_the_listing_pages_patients_with_0_to_3_studies_each(stack, pb):
    ch = channel(stack)
    patients = pb.patients_grpc.PatientServiceStub(ch)
    studies = pb.studies_grpc.StudyServiceStub(ch)
    gateway = pb.gateway_grpc.GatewayServiceStub(ch)
    expected = {}
    for n in range(10):
        p = patients.CreatePatient(pb.patients.CreatePatientRequest(patient=pb.patients.Patient(
            first_name="Page", last_name="Walker", birth_date="1970-01-01", email=f"walker{n}@ejemplo.com")), timeout=10)
        expected[p.id] = [studies.CreateStudy(pb.studies.CreateStudyRequest(study=pb.studies.Study(
            patient_id=p.id, urgency_level=pb.studies.URGENCY_LEVEL_LOW, body_part=pb.studies.BODY_PART_CHEST,
            description="UNUSUAL RATIO", study_type=pb.studies.STUDY_TYPE_XRAY)), timeout=10).id for _ in range(n % 4)]

    seen, token = [], ""
    while True:
        page = gateway.ListPatientsWithStudies(pb.gateway.ListPatientsWithStudiesRequest(page_size=3, page_token=token), timeout=10)
        for entry in page.patients:
            assert all(s.patient_id == entry.patient.id for s in entry.studies)
            seen.append((entry.patient.id, [s.id for s in entry.studies]))
        token = page.next_page_token
        if not token:
            break
    ids = [pid for pid, _ in seen]
    assert ids == sorted(ids) and len(ids) == len(set(ids)), "each patient once, in id order"
    mine = [(pid, sids) for pid, sids in seen if pid in expected]
    assert mine == sorted(expected.items()), "exactly their studies, in id order"


def test_the_sample_data_is_loaded_as_make_up_loads_it(stack, pb):
    gateway = pb.gateway_grpc.GatewayServiceStub(channel(stack))
    page = gateway.ListPatientsWithStudies(pb.gateway.ListPatientsWithStudiesRequest(page_size=4), timeout=10)
    view = [(e.patient.first_name, e.patient.last_name, e.patient.birth_date, e.patient.email,
             [(pb.studies.UrgencyLevel.Name(s.urgency_level), pb.studies.BodyPart.Name(s.body_part), s.description,
               pb.studies.StudyType.Name(s.study_type)) for s in e.studies]) for e in page.patients]
    assert view == [
        ("Jose", "Villalobos", "1955-04-10", "pepe@ejemplo.com",
         [("URGENCY_LEVEL_HIGH", "BODY_PART_STOMACH", "NO FINDINGS", "STUDY_TYPE_XRAY"),
          ("URGENCY_LEVEL_HIGH", "BODY_PART_NECK", "NORMAL THYROID", "STUDY_TYPE_XRAY")]),
        ("Jessica", "Ramirez", "1971-07-01", "jessica@ejemplo.com",
         [("URGENCY_LEVEL_LOW", "BODY_PART_CHEST", "UNUSUAL RATIO", "STUDY_TYPE_XRAY")]),
        ("Diana Laura", "Del Toro", "1988-08-29", "diana@ejemplo.com",
         [("URGENCY_LEVEL_MID", "BODY_PART_BREASTS", "HIGH DENSITY ON LEFT SIDE", "STUDY_TYPE_MAMMOGRAM")]),
        ("Jorge Alberto", "Trevino", "1990-05-05", "jorge@ejemplo.com", []),
    ]


def test_import_reports_the_bad_row_and_leaves_nothing_half_imported(stack, pb, tmp_path):
    """A row the server refuses (an email already taken) after others were
    written: the command names file, line and field, and rolls back."""
    import os
    import subprocess

    from conftest import CLINIC_DEV, ROOT

    patients_file = tmp_path / "patients.csv"
    patients_file.write_text(
        "first_name, last_name, birth_date, email, id\n"
        "Ana, Import, 1990-01-01, ana.import@ejemplo.com, 1\n"
        "Pepe, Again, 1955-04-10, PEPE@ejemplo.com, 2\n"
    )
    studies_file = tmp_path / "studies.csv"
    studies_file.write_text("urgency_level, body_part, description, type, patient_id\nLOW, KNEE, OK, MRI, 1\n")
    env = dict(os.environ, CLINIC_ADDR=f"http://{stack.target}", CLINIC_HOME=str(stack.home))
    result = subprocess.run([str(CLINIC_DEV), "import", "--patients", str(patients_file), "--studies", str(studies_file)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert f"{patients_file}:3: email:" in result.stderr, result.stderr

    gateway = pb.gateway_grpc.GatewayServiceStub(channel(stack))
    emails, token = [], ""
    while True:
        page = gateway.ListPatientsWithStudies(pb.gateway.ListPatientsWithStudiesRequest(page_size=100, page_token=token), timeout=10)
        emails += [e.patient.email for e in page.patients]
        token = page.next_page_token
        if not token:
            break
    assert "ana.import@ejemplo.com" not in emails, "the row written before the refusal was rolled back"

    # Had line 2 been left behind, a second run would now fail at line 2.
    again = subprocess.run([str(CLINIC_DEV), "import", "--patients", str(patients_file)],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode != 0 and f"{patients_file}:3: email:" in again.stderr, again.stderr
