"""FHIR R4 at /fhir through Envoy, as clinical software would use it.

Every resource, Bundle and OperationOutcome the endpoint returns is checked
against the official R4 definitions (PyPI fhir.resources, its R4 line), plus
the required code bindings that library does not check; and a real FHIR
client library (fhirpy) drives the endpoint: search with paging, read,
create, update, conditional create."""

import concurrent.futures
import random
import re
import string
import uuid

import pytest
import requests
from fhir.resources import construct_fhir_element
from fhirpy import SyncFHIRClient

FHIR_JSON = "application/fhir+json"


def letters(n=6) -> str:
    """A tag that fits in a name (names hold letters only)."""
    return "".join(random.choices(string.ascii_lowercase, k=n))

MRN = "https://clinic.example/mrn"

# Required bindings fhir.resources does not enforce (NOTES: it accepts
# gender "robot"): the codes this endpoint writes, from the R4 value sets.
ISSUE_TYPES = {"invalid", "structure", "required", "value", "invariant", "security", "login", "unknown", "expired", "forbidden",
               "suppressed", "processing", "not-supported", "duplicate", "multiple-matches", "not-found", "deleted", "too-long",
               "code-invalid", "extension", "too-costly", "business-rule", "conflict", "transient", "lock-error", "no-store",
               "exception", "timeout", "incomplete", "throttled", "informational"}
BUNDLE_TYPES = {"document", "message", "transaction", "transaction-response", "batch", "batch-response", "history", "searchset", "collection"}
STUDY_STATUSES = {"registered", "available", "cancelled", "entered-in-error", "unknown"}


def check_bindings(resource: dict):
    kind = resource["resourceType"]
    if kind == "OperationOutcome":
        for issue in resource["issue"]:
            assert issue["code"] in ISSUE_TYPES and issue["severity"] in {"fatal", "error", "warning", "information"}, issue
    elif kind == "Bundle":
        assert resource["type"] in BUNDLE_TYPES
        for entry in resource.get("entry", []):
            if "resource" in entry:
                check_bindings(entry["resource"])
            if "search" in entry:
                assert entry["search"]["mode"] in {"match", "include", "outcome"}
            if "request" in entry:
                assert entry["request"]["method"] in {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"}
    elif kind == "Patient":
        for name in resource.get("name", []):
            assert name.get("use", "official") in {"usual", "official", "temp", "nickname", "anonymous", "old", "maiden"}
        for telecom in resource.get("telecom", []):
            assert telecom["system"] in {"phone", "fax", "email", "pager", "url", "sms", "other"}
    elif kind == "ImagingStudy":
        assert resource["status"] in STUDY_STATUSES
    elif kind == "CapabilityStatement":
        assert resource["status"] in {"draft", "active", "retired", "unknown"} and resource["kind"] in {"instance", "capability", "requirements"}


def valid(resource: dict) -> dict:
    """`resource`, after checking it against the R4 definitions."""
    construct_fhir_element(resource["resourceType"], resource)
    check_bindings(resource)
    return resource


class Fhir:
    def __init__(self, stack, role="admin"):
        self.base = f"http://{stack.target}/fhir"
        self.stack = stack
        self.role = role

    def call(self, method, path, body=None, role=None, headers=None, token=None, form=None):
        """(status, validated JSON body or None, headers)."""
        sent = {"accept": FHIR_JSON, **(headers or {})}
        who = role if role is not None else self.role
        if token or who:
            sent["authorization"] = f"Bearer {token or self.stack.token(who)}"
        if body is not None:
            sent["content-type"] = FHIR_JSON
        url = path if path.startswith("http") else self.base + path
        response = requests.request(method, url, json=body, data=form, headers=sent, timeout=15)
        if not response.content:
            return response.status_code, None, response.headers
        assert response.headers["content-type"].startswith(FHIR_JSON), response.headers
        return response.status_code, valid(response.json()), response.headers


def patient(family="Fhir", given=("Ana", "María"), birth="1980-05-06", email=None, identifiers=()):
    return {
        "resourceType": "Patient",
        "name": [{"use": "official", "family": family, "given": list(given)}],
        "birthDate": birth,
        "telecom": [{"system": "email", "value": email or f"fhir-{uuid.uuid4().hex[:10]}@ejemplo.com"}],
        **({"identifier": [{"system": s, "value": v} for s, v in identifiers]} if identifiers else {}),
    }


def study(patient_id, uid=None, modality="MG"):
    resource = {
        "resourceType": "ImagingStudy",
        "status": "available",
        "subject": {"reference": f"Patient/{patient_id}"},
        "modality": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": modality}],
        "description": "Screening",
        "extension": [
            {"url": "https://clinic.example/fhir/StructureDefinition/body-part",
             "valueCoding": {"system": "https://clinic.example/fhir/CodeSystem/body-part", "code": "BREASTS"}},
            {"url": "https://clinic.example/fhir/StructureDefinition/urgency",
             "valueCoding": {"system": "http://hl7.org/fhir/request-priority", "code": "routine"}},
        ],
    }
    if uid:
        resource["identifier"] = [{"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"}]
    return resource


def test_the_capability_statement_is_open_and_lists_what_is_served(stack):
    status, statement, headers = Fhir(stack).call("GET", "/metadata", role="")
    assert status == 200 and statement["fhirVersion"] == "4.0.1"
    served = {r["type"]: r for r in statement["rest"][0]["resource"]}
    assert set(served) == {"Patient", "ImagingStudy"}
    assert {i["code"] for i in served["Patient"]["interaction"]} == {"read", "vread", "search-type", "create", "update", "delete", "history-instance"}
    assert {p["name"] for p in served["Patient"]["searchParam"]} == {"_id", "identifier", "family", "given", "name", "birthdate", "email"}
    assert served["Patient"]["searchRevInclude"] == ["ImagingStudy:subject"]
    assert served["ImagingStudy"]["searchInclude"] == ["ImagingStudy:subject"]


def test_patient_create_read_update_vread_history_and_delete(stack):
    fhir = Fhir(stack)
    status, created, headers = fhir.call("POST", "/Patient", patient(identifiers=[(MRN, f"H-{uuid.uuid4().hex[:8]}")]), role="clinician")
    assert status == 201, created
    pid = created["id"]
    assert headers["location"].endswith(f"/fhir/Patient/{pid}/_history/1") and headers["etag"] == 'W/"1"'
    assert created["name"][0] == {"use": "official", "family": "Fhir", "given": ["Ana", "María"]}

    status, read, headers = fhir.call("GET", f"/Patient/{pid}", role="viewer")
    assert status == 200 and read == created and headers["etag"] == 'W/"1"'

    changed = {**read, "birthDate": "1981-01-02"}
    status, outcome, _ = fhir.call("PUT", f"/Patient/{pid}", changed, role="clinician", headers={"if-match": 'W/"7"'})
    assert status == 412 and outcome["issue"][0]["code"] == "conflict"
    status, updated, headers = fhir.call("PUT", f"/Patient/{pid}", changed, role="clinician", headers={"if-match": 'W/"1"'})
    assert status == 200 and updated["birthDate"] == "1981-01-02" and updated["meta"]["versionId"] == "2" and headers["etag"] == 'W/"2"'

    status, first, _ = fhir.call("GET", f"/Patient/{pid}/_history/1", role="viewer")
    assert status == 200 and first["birthDate"] == "1980-05-06" and first["meta"]["versionId"] == "1"

    status, outcome, _ = fhir.call("DELETE", f"/Patient/{pid}", role="clinician")
    assert status == 403 and outcome["issue"][0]["code"] == "forbidden"
    status, _, _ = fhir.call("DELETE", f"/Patient/{pid}")
    assert status == 204
    status, outcome, _ = fhir.call("GET", f"/Patient/{pid}", role="viewer")
    assert status == 410 and outcome["issue"][0]["code"] == "deleted"

    status, history, _ = fhir.call("GET", f"/Patient/{pid}/_history", role="viewer")
    assert status == 200 and history["type"] == "history"
    assert [e["request"]["method"] for e in history["entry"]] == ["DELETE", "PUT", "POST"]
    assert [e["response"]["etag"] for e in history["entry"]] == ['W/"3"', 'W/"2"', 'W/"1"']
    status, gone, _ = fhir.call("GET", f"/Patient/{pid}/_history/3", role="viewer")
    assert status == 410 and gone["issue"][0]["code"] == "deleted"


def test_errors_are_operation_outcomes_with_the_right_codes(stack):
    fhir = Fhir(stack)
    status, outcome, headers = fhir.call("GET", "/Patient/1", role="")
    assert status == 401 and outcome["issue"][0]["code"] == "login"
    status, outcome, _ = fhir.call("GET", "/Patient/1", token="not-a-token")
    assert status == 401 and outcome["issue"][0]["code"] == "login"
    status, outcome, _ = fhir.call("POST", "/Patient", patient(), role="viewer")
    assert status == 403 and outcome["issue"][0]["code"] == "forbidden"
    status, outcome, _ = fhir.call("GET", "/Patient/999999999", role="viewer")
    assert status == 404 and outcome["issue"][0]["code"] == "not-found"
    status, outcome, _ = fhir.call("GET", "/Observation/1", role="viewer")
    assert status == 404 and outcome["issue"][0]["code"] == "not-found"

    status, outcome, _ = fhir.call("POST", "/Patient", patient(birth="2999-01-01", given=()), role="clinician")
    assert status == 400 and outcome["issue"][0]["code"] == "invalid"
    assert set(outcome["issue"][0]["expression"]) == {"Patient.birthDate", "Patient.name[0].given"}, outcome
    status, outcome, _ = fhir.call("POST", "/Patient", {**patient(), "gender": "female"}, role="clinician")
    assert status == 400 and outcome["issue"][0]["expression"] == ["Patient.gender"]
    status, outcome, _ = fhir.call("POST", "/Patient", {"resourceType": "Observation"}, role="clinician")
    assert status == 400 and outcome["issue"][0]["expression"] == ["Patient.resourceType"]

    taken = patient()
    assert fhir.call("POST", "/Patient", taken, role="clinician")[0] == 201
    status, outcome, _ = fhir.call("POST", "/Patient", taken, role="clinician")
    assert status == 409 and outcome["issue"][0]["code"] == "duplicate"
    for text in (outcome["issue"][0]["diagnostics"],):
        assert "sql" not in text.lower() and "constraint" not in text.lower()

    status, outcome, _ = fhir.call("GET", "/Patient?gender=female", role="viewer")
    assert status == 400 and outcome["issue"][0]["code"] == "invalid" and outcome["issue"][0]["expression"] == ["gender"]
    status, bundle, _ = fhir.call("GET", "/Patient?gender=female&_count=1", role="viewer", headers={"prefer": "handling=lenient"})
    assert status == 200 and "gender" not in bundle["link"][0]["url"], "the self link says what was applied"


def test_conditional_create_is_atomic_under_concurrency(stack):
    fhir = Fhir(stack)
    mrn = f"C-{uuid.uuid4().hex[:8]}"
    body = patient(identifiers=[(MRN, mrn)])
    condition = {"if-none-exist": f"identifier={MRN}|{mrn}"}
    # Sixteen clients (each its own caller, so none is held to a share of
    # the service) send the same conditional create at once.
    tokens = [stack.token("clinician", f"fhir-client-{n}") for n in range(16)]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda t: fhir.call("POST", "/Patient", body, token=t, headers=condition), tokens))
    statuses = sorted(status for status, _, _ in answers)
    assert statuses == [200] * 15 + [201], [(s, b) for s, b, _ in answers if s not in (200, 201)]
    assert len({resource["id"] for _, resource, _ in answers}) == 1
    status, bundle, _ = fhir.call("GET", f"/Patient?identifier={MRN}|{mrn}", role="viewer")
    assert len(bundle["entry"]) == 1

    # Several matches: 412, nothing created.
    family = f"Twin{letters()}"
    for _ in range(2):
        assert fhir.call("POST", "/Patient", patient(family=family), role="clinician")[0] == 201
    status, outcome, _ = fhir.call("POST", "/Patient", patient(family=family), role="clinician", headers={"if-none-exist": f"family={family}"})
    assert status == 412 and outcome["issue"][0]["code"] == "multiple-matches"
    assert len(fhir.call("GET", f"/Patient?family={family}", role="viewer")[1]["entry"]) == 2


def test_patient_search_parameters_sorting_and_revinclude(stack):
    fhir = Fhir(stack)
    tag = letters()
    made = {}
    for family, given, birth in (("Treviño", "José", "1990-02-03"), ("Trevi", "Ana", "1985-07-08"), ("Ruiz", "Tréssa", "1970-01-01")):
        status, resource, _ = fhir.call("POST", "/Patient", patient(family=f"{family}{tag}", given=(given,), birth=birth,
                                                                    identifiers=[(MRN, f"{family}-{tag}")]), role="clinician")
        assert status == 201
        made[family] = resource["id"]
    ids = lambda bundle: [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]

    status, bundle, _ = fhir.call("GET", f"/Patient?family=trevino{tag}", role="viewer")
    assert status == 200 and bundle["type"] == "searchset" and ids(bundle) == [made["Treviño"]], "accents and case ignored"
    assert ids(fhir.call("GET", f"/Patient?family=TREV&birthdate=ge1986&_count=1000&name=trev", role="viewer")[1]) \
        .count(made["Treviño"]) == 1
    scoped = lambda query: [i for i in ids(fhir.call("GET", f"/Patient?{query}&_count=1000", role="viewer")[1]) if i in made.values()]
    assert scoped(f"name=tres") == [made["Ruiz"]], "name matches given names too"
    assert scoped("given=jos&birthdate=1990") == [made["Treviño"]]
    assert set(scoped("birthdate=lt1986-01-01&birthdate=ge1980")) == {made["Trevi"]}
    assert set(scoped(f"_id={made['Trevi']},{made['Ruiz']}")) == {made["Trevi"], made["Ruiz"]}
    assert scoped(f"identifier={MRN}|Ruiz-{tag}") == [made["Ruiz"]]
    assert scoped(f"family=trev&_sort=-birthdate") == [made["Treviño"], made["Trevi"]]
    assert scoped(f"family=trev&_sort=birthdate") == [made["Trevi"], made["Treviño"]]

    # POST _search: the same answer.
    status, posted, _ = fhir.call("POST", "/Patient/_search", role="viewer", form={"family": f"trevino{tag}"},
                                  headers={"content-type": "application/x-www-form-urlencoded"})
    assert status == 200 and ids(posted) == [made["Treviño"]]

    # _revinclude brings the patients' studies, marked as included.
    assert fhir.call("POST", "/ImagingStudy", study(made["Trevi"]), role="clinician")[0] == 201
    status, bundle, _ = fhir.call("GET", f"/Patient?_id={made['Trevi']}&_revinclude=ImagingStudy:subject", role="viewer")
    included = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "include"]
    assert [r["resourceType"] for r in included] == ["ImagingStudy"] and included[0]["subject"]["reference"] == f"Patient/{made['Trevi']}"


def test_following_next_links_never_repeats_or_skips_while_patients_are_added(stack):
    fhir = Fhir(stack)
    family = f"Page{letters()}"
    first = [fhir.call("POST", "/Patient", patient(family=family), role="clinician")[1]["id"] for _ in range(7)]
    seen, url = [], f"/Patient?family={family}&_count=3"
    while url:
        status, bundle, _ = fhir.call("GET", url, role="viewer")
        assert status == 200
        seen += [e["resource"]["id"] for e in bundle.get("entry", [])]
        # Written during the walk: never makes the walk repeat or skip one.
        fhir.call("POST", "/Patient", patient(family=family), role="clinician")
        url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
    assert len(seen) == len(set(seen)) and set(first) <= set(seen)


def test_imaging_study_read_search_include_and_conditional_create(stack):
    fhir = Fhir(stack)
    pid = fhir.call("POST", "/Patient", patient(), role="clinician")[1]["id"]
    uid = f"2.25.{uuid.uuid4().int}"
    status, created, headers = fhir.call("POST", "/ImagingStudy", study(pid, uid), role="clinician",
                                         headers={"if-none-exist": f"identifier=urn:dicom:uid|urn:oid:{uid}"})
    assert status == 201 and headers["etag"] == 'W/"1"', created
    assert created["modality"][0]["code"] == "MG" and created["identifier"][0]["value"] == f"urn:oid:{uid}"
    status, again, _ = fhir.call("POST", "/ImagingStudy", study(pid, uid), role="clinician",
                                 headers={"if-none-exist": f"identifier=urn:dicom:uid|urn:oid:{uid}"})
    assert status == 200 and again["id"] == created["id"]

    status, read, _ = fhir.call("GET", f"/ImagingStudy/{created['id']}", role="viewer")
    assert status == 200 and read == created
    for query in (f"subject=Patient/{pid}", f"patient={pid}&modality=MG", f"identifier=urn:oid:{uid}", f"_id={created['id']}"):
        status, bundle, _ = fhir.call("GET", f"/ImagingStudy?{query}", role="viewer")
        assert status == 200 and [e["resource"]["id"] for e in bundle["entry"]] == [created["id"]], query
    status, bundle, _ = fhir.call("GET", f"/ImagingStudy?subject={pid}&_include=ImagingStudy:subject", role="viewer")
    assert [(e["resource"]["resourceType"], e["search"]["mode"]) for e in bundle["entry"]] == [("ImagingStudy", "match"), ("Patient", "include")]

    status, outcome, _ = fhir.call("POST", "/ImagingStudy", study(pid, modality="XX"), role="clinician")
    assert status == 400 and outcome["issue"][0]["expression"] == ["ImagingStudy.modality[0]"]
    status, outcome, _ = fhir.call("POST", "/ImagingStudy", study(999999999), role="clinician")
    assert status == 404 and outcome["issue"][0]["code"] == "not-found"

    status, updated, _ = fhir.call("PUT", f"/ImagingStudy/{created['id']}", {**read, "description": "Follow-up"}, role="clinician")
    assert status == 200 and updated["description"] == "Follow-up" and updated["meta"]["versionId"] == "2"
    assert fhir.call("DELETE", f"/ImagingStudy/{created['id']}", role="clinician")[0] == 204
    assert fhir.call("GET", f"/ImagingStudy/{created['id']}", role="viewer")[0] == 410


def test_a_fhir_client_library_drives_the_endpoint(stack):
    client = SyncFHIRClient(f"http://{stack.target}/fhir", authorization=f"Bearer {stack.token('admin', 'fhirpy')}")
    family = f"Client{letters()}"
    made = client.resource("Patient", **patient(family=family, identifiers=[(MRN, family)]))
    made.save()
    assert made.id and made["meta"]["versionId"] == "1"

    # Conditional create the way fhirpy sends it (search parameters on the
    # POST): the existing patient, nothing new.
    same, created = client.resources("Patient").search(identifier=f"{MRN}|{family}").get_or_create(
        client.resource("Patient", **patient(family=family, identifiers=[(MRN, family)])))
    assert same.id == made.id and not created

    for _ in range(4):
        client.resource("Patient", **patient(family=family)).save()
    found = client.resources("Patient").search(family=family).limit(2).fetch_all()
    assert len(found) == 5 and len({p.id for p in found}) == 5, "every page followed, none twice"

    read = client.reference("Patient", made.id).to_resource()
    read["birthDate"] = "1979-12-31"
    read.save()
    assert client.reference("Patient", made.id).to_resource()["birthDate"] == "1979-12-31"
    valid(client.reference("Patient", made.id).to_resource().serialize())


def test_fhir_reads_are_in_the_audit_trail_under_the_callers_name(stack):
    fhir = Fhir(stack)
    pid = fhir.call("POST", "/Patient", patient(), role="clinician")[1]["id"]
    token = stack.token("viewer", "fhir-auditee")
    assert fhir.call("GET", f"/Patient/{pid}", token=token)[0] == 200
    out = stack.grpcurl("clinic.audit.v1.AuditService/ListAuditEvents", data=f'{{"patient_id": {pid}, "subject": "fhir-auditee"}}')
    assert "clinic.patients.v1.PatientService/GetPatient" in out.stdout, out.stdout


def test_the_fhir_examples_make_up_prints_work_as_shown(stack):
    """A read, a search with _revinclude and a conditional create, pasted
    into a shell after the printed command that sets TOKEN; the conditional
    create twice (the second finds the first's patient)."""
    import json
    import os
    import subprocess

    from conftest import ROOT, VENV_BIN

    examples = [line.strip() for line in stack.output.splitlines() if line.strip().startswith("curl ") and "/fhir/" in line]
    assert any("_revinclude" in e for e in examples) and any("If-None-Exist" in e for e in examples), stack.output
    assert any(re.search(r"/fhir/Patient/\d+$", e) for e in examples), examples
    export = next(line.strip() for line in stack.output.splitlines() if line.strip().startswith("export TOKEN="))
    env = dict(os.environ, PATH=f"{VENV_BIN}:{os.environ['PATH']}", CLINIC_HOME=str(stack.home))
    created = set()
    for example in examples + [e for e in examples if "If-None-Exist" in e]:
        result = subprocess.run(["bash", "-c", f"set -e\n{export}\n{example}"], cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
        assert result.returncode == 0, f"{example}\n{result.stderr}"
        answer = valid(json.loads(result.stdout))
        assert answer["resourceType"] != "OperationOutcome", (example, answer)
        if "If-None-Exist" in example:
            created.add(answer["id"])
    assert len(created) == 1, "the conditional create made one patient"


def test_the_fhir_process_counts_its_requests(stack):
    fhir = Fhir(stack)
    metrics = f"http://127.0.0.1:{stack.ports['FHIR_METRICS_PORT']}/metrics"

    def read_404s() -> float:
        text = requests.get(metrics, timeout=10).text
        line = next((l for l in text.splitlines() if l.startswith("fhir_requests_total{") and 'code="404"' in l
                     and 'resource="Patient"' in l and 'method="GET"' in l), None)
        return float(line.rsplit(" ", 1)[1]) if line else 0.0

    before = read_404s()
    assert fhir.call("GET", "/Patient/999999998", role="viewer")[0] == 404
    assert read_404s() == before + 1
    assert "fhir_request_duration_seconds_bucket" in requests.get(metrics, timeout=10).text


def test_deleting_a_patient_with_studies_needs_cascade(stack):
    fhir = Fhir(stack)
    pid = fhir.call("POST", "/Patient", patient(), role="clinician")[1]["id"]
    sid = fhir.call("POST", "/ImagingStudy", study(pid), role="clinician")[1]["id"]
    status, outcome, _ = fhir.call("DELETE", f"/Patient/{pid}")
    assert status == 409 and outcome["issue"][0]["code"] == "conflict"
    status, outcome, _ = fhir.call("DELETE", f"/Patient/{pid}?_cascade=everything")
    assert status == 400 and outcome["issue"][0]["code"] == "invalid"
    assert fhir.call("DELETE", f"/Patient/{pid}?_cascade=delete")[0] == 204
    assert fhir.call("GET", f"/Patient/{pid}", role="viewer")[0] == 410
    assert fhir.call("GET", f"/ImagingStudy/{sid}", role="viewer")[0] == 410, "the study went with its patient"
    status, outcome, _ = fhir.call("GET", f"/Patient/{pid}/_history/0", role="viewer")
    assert status == 404 and outcome["issue"][0]["code"] == "not-found"
