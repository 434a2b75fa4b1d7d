"""REST/JSON through Envoy's transcoder: every route of the contract, its
errors as JSON google.rpc.Status bodies with the HTTP status of their code,
under the same tokens and roles as gRPC. Plain urllib, as a script would."""

import json
import time
import urllib.error
import urllib.request
import uuid

import pytest


def rest(stack, method: str, path: str, body=None, role="admin", token=None, tls=False):
    """(HTTP status, parsed JSON body, headers) of one call."""
    base = f"https://{stack.tls_front}" if tls else f"http://{stack.target}"
    request = urllib.request.Request(base + path, method=method, data=None if body is None else json.dumps(body).encode())
    if body is not None:
        request.add_header("content-type", "application/json")
    if token or role:
        request.add_header("authorization", f"Bearer {token or stack.token(role)}")
    context = None
    if tls:
        import ssl

        context = ssl.create_default_context(cafile=str(stack.ca))
    try:
        with urllib.request.urlopen(request, timeout=15, context=context) as response:
            text = response.read().decode()
            return response.status, (json.loads(text) if text else {}), response.headers
    except urllib.error.HTTPError as error:
        text = error.read().decode()
        return error.code, json.loads(text), error.headers


def reason(body) -> str:
    return next((d.get("reason") for d in body.get("details", []) if d["@type"].endswith("ErrorInfo")), None)


def test_every_patient_route_with_camel_case_json_and_update_mask(stack):
    email = f"rest-{uuid.uuid4().hex[:8]}@ejemplo.com"
    status, created, _ = rest(stack, "POST", "/v1/patients?requestId=" + uuid.uuid4().hex,
                              {"firstName": "Rest", "lastName": "Client", "birthDate": "1985-03-04", "email": email})
    assert status == 200, created
    assert created["firstName"] == "Rest" and isinstance(created["id"], str) and created["etag"], created
    pid = created["id"]

    status, got, headers = rest(stack, "GET", f"/v1/patients/{pid}", role="viewer")
    assert status == 200 and got == created and headers["content-type"] == "application/json"

    status, page, _ = rest(stack, "GET", "/v1/patients?pageSize=2", role="viewer")
    assert status == 200 and len(page["patients"]) == 2 and page["nextPageToken"]
    status, after, _ = rest(stack, "GET", f"/v1/patients?pageSize=2&pageToken={page['nextPageToken']}", role="viewer")
    assert status == 200 and {p["id"] for p in after["patients"]}.isdisjoint({p["id"] for p in page["patients"]})

    status, updated, _ = rest(stack, "PATCH", f"/v1/patients/{pid}?updateMask=lastName",
                              {"lastName": "Renamed", "firstName": "Ignored", "etag": created["etag"]}, role="clinician")
    assert status == 200, updated
    assert (updated["lastName"], updated["firstName"]) == ("Renamed", "Rest"), "only the masked field changes"

    status, stale, _ = rest(stack, "PATCH", f"/v1/patients/{pid}?updateMask=lastName", {"lastName": "X", "etag": created["etag"]})
    assert (status, stale["code"], reason(stale)) == (409, 10, "ETAG_MISMATCH")

    status, duplicate, _ = rest(stack, "POST", "/v1/patients", {"firstName": "A", "lastName": "B", "birthDate": "1990-01-01", "email": email.upper()})
    assert (status, duplicate["code"], reason(duplicate)) == (409, 6, "EMAIL_ALREADY_EXISTS")

    status, deleted, _ = rest(stack, "DELETE", f"/v1/patients/{pid}?etag={updated['etag']}&force=true")
    assert status == 200 and deleted == {}
    status, gone, _ = rest(stack, "GET", f"/v1/patients/{pid}")
    assert (status, gone["code"], reason(gone)) == (404, 5, "PATIENT_DELETED")
    status, shown, _ = rest(stack, "GET", f"/v1/patients/{pid}?showDeleted=true")
    assert status == 200 and shown["deleteTime"] and shown["expireTime"], shown

    status, revisions, _ = rest(stack, "GET", f"/v1/patients/{pid}/revisions?pageSize=10")
    assert status == 200, revisions
    assert [r["kind"] for r in revisions["revisions"]] == ["CHANGE_KIND_DELETED", "CHANGE_KIND_UPDATED", "CHANGE_KIND_CREATED"]
    assert revisions["revisions"][-1]["patient"]["lastName"] == created["lastName"]

    status, restored, _ = rest(stack, "POST", f"/v1/patients/{pid}:undelete", {})
    assert status == 200 and restored["id"] == pid and "deleteTime" not in restored, restored
    # Changes are numbered a few milliseconds after their commit.
    give_up = time.monotonic() + 10
    while True:
        status, feed, _ = rest(stack, "GET", "/v1/patients/changes?afterSequence=0&pageSize=1000")
        assert status == 200, feed
        mine = [c["kind"] for c in feed["changes"] if c["patientId"] == pid]
        if len(mine) == 4 or time.monotonic() > give_up:
            break
    assert mine == ["CHANGE_KIND_CREATED", "CHANGE_KIND_UPDATED", "CHANGE_KIND_DELETED", "CHANGE_KIND_UNDELETED"]

    status, purged, _ = rest(stack, "POST", f"/v1/patients/{pid}:purge", {})
    assert status == 200 and purged == {}
    status, erased, _ = rest(stack, "GET", f"/v1/patients/{pid}?showDeleted=true")
    assert (status, reason(erased)) == (404, "PATIENT_NOT_FOUND")


def test_invalid_fields_are_400_with_every_field_violation(stack):
    status, body, _ = rest(stack, "POST", "/v1/patients", {"firstName": "", "lastName": "X", "birthDate": "2999-01-01", "email": "nope"})
    assert (status, body["code"], reason(body)) == (400, 3, "INVALID_FIELDS")
    bad_request = next(d for d in body["details"] if d["@type"].endswith("BadRequest"))
    fields = {v["field"] for v in bad_request["fieldViolations"]}
    assert fields == {"patient.first_name", "patient.birth_date", "patient.email"}, bad_request


def test_study_routes_listing_and_filters_by_repeated_query_parameters(stack):
    _, patient, _ = rest(stack, "POST", "/v1/patients", {"firstName": "Study", "lastName": "Owner", "birthDate": "1970-01-01",
                                                         "email": f"owner-{uuid.uuid4().hex[:8]}@ejemplo.com"})
    pid = patient["id"]
    study = {"patientId": pid, "urgencyLevel": "URGENCY_LEVEL_HIGH", "bodyPart": "BODY_PART_CHEST", "description": "REST", "studyType": "STUDY_TYPE_XRAY"}
    status, created, _ = rest(stack, "POST", "/v1/studies", study, role="clinician")
    assert status == 200 and created["urgencyLevel"] == "URGENCY_LEVEL_HIGH", created
    sid = created["id"]
    assert rest(stack, "GET", f"/v1/studies/{sid}", role="viewer")[1] == created
    status, listed, _ = rest(stack, "GET", f"/v1/studies?patientIds={pid}&patientIds=1&pageSize=100", role="viewer")
    assert status == 200 and sid in {s["id"] for s in listed["studies"]}
    assert {s["patientId"] for s in listed["studies"]} <= {pid, "1"}
    status, by_patient, _ = rest(stack, "GET", f"/v1/studies:byPatient?patientIds={pid}&studiesPerPatient=5", role="viewer")
    assert status == 200 and by_patient["patients"][0]["studies"][0]["id"] == sid, by_patient
    status, updated, _ = rest(stack, "PATCH", f"/v1/studies/{sid}?updateMask=urgencyLevel", {"urgencyLevel": "URGENCY_LEVEL_LOW"}, role="clinician")
    assert status == 200 and updated["urgencyLevel"] == "URGENCY_LEVEL_LOW" and updated["description"] == "REST"
    status, unknown, _ = rest(stack, "POST", "/v1/studies", dict(study, patientId="999999999"), role="clinician")
    assert (status, reason(unknown)) == (404, "PATIENT_NOT_FOUND")

    status, view, _ = rest(stack, "GET", "/v1/patientsWithStudies?pageSize=2", role="viewer")
    assert status == 200 and len(view["patients"]) == 2 and view["patients"][0]["patient"]["id"] == "1"
    status, one, _ = rest(stack, "GET", f"/v1/patientsWithStudies/{pid}", role="viewer")
    assert status == 200 and [s["id"] for s in one["studies"]] == [sid]

    status, refused, _ = rest(stack, "DELETE", f"/v1/patients/{pid}")
    assert (status, refused["code"], reason(refused)) == (400, 9, "PATIENT_HAS_STUDIES")
    assert any(d["@type"].endswith("PreconditionFailure") for d in refused["details"])
    assert rest(stack, "DELETE", f"/v1/studies/{sid}?etag={updated['etag']}", role="clinician")[0] == 200
    status, gone, _ = rest(stack, "GET", f"/v1/studies/{sid}", role="viewer")
    assert (status, reason(gone)) == (404, "STUDY_DELETED")
    status, shown, _ = rest(stack, "GET", f"/v1/studies/{sid}?showDeleted=true", role="viewer")
    assert status == 200 and shown["deleteTime"] and shown["expireTime"], shown
    status, revisions, _ = rest(stack, "GET", f"/v1/studies/{sid}/revisions?pageSize=10", role="viewer")
    assert [r["kind"] for r in revisions["revisions"]] == ["CHANGE_KIND_DELETED", "CHANGE_KIND_UPDATED", "CHANGE_KIND_CREATED"], revisions
    status, restored, _ = rest(stack, "POST", f"/v1/studies/{sid}:undelete", {})
    assert status == 200 and "deleteTime" not in restored, restored
    give_up = time.monotonic() + 10
    while True:
        status, feed, _ = rest(stack, "GET", "/v1/studies/changes?afterSequence=0&pageSize=1000")
        assert status == 200, feed
        mine = [c["kind"] for c in feed["changes"] if c["studyId"] == sid]
        if len(mine) == 4 or time.monotonic() > give_up:
            break
    assert mine == ["CHANGE_KIND_CREATED", "CHANGE_KIND_UPDATED", "CHANGE_KIND_DELETED", "CHANGE_KIND_UNDELETED"]
    assert rest(stack, "DELETE", f"/v1/studies/{sid}", role="clinician")[0] == 200
    assert rest(stack, "DELETE", f"/v1/patients/{pid}")[0] == 200

    status, events, _ = rest(stack, "GET", f"/v1/auditEvents?patientId={pid}&pageSize=100")
    assert status == 200 and {e["method"].rsplit("/", 1)[1] for e in events["events"]} >= {"CreateStudy", "DeletePatient", "GetStudy"}


@pytest.mark.parametrize("path", ["/v1/patients/1", "/v1/patients", "/v1/studies/1", "/v1/patientsWithStudies", "/v1/auditEvents"])
def test_no_token_is_401_and_a_missing_role_403_as_json(stack, path):
    status, body, _ = rest(stack, "GET", path, role=None)
    assert (status, body["code"]) == (401, 16), body
    status, body, _ = rest(stack, "GET", path, token="not-a-jwt")
    assert (status, body["code"]) == (401, 16), body
    status, body, _ = rest(stack, "GET", path, role="service")
    assert (status, body["code"]) == (403, 7), body


def test_writes_need_their_role(stack):
    status, body, _ = rest(stack, "POST", "/v1/patients", {"firstName": "A"}, role="viewer")
    assert (status, body["code"]) == (403, 7)
    status, body, _ = rest(stack, "DELETE", "/v1/patients/1", role="clinician")
    assert (status, body["code"]) == (403, 7)
    status, body, _ = rest(stack, "GET", "/v1/auditEvents", role="clinician")
    assert (status, body["code"]) == (403, 7)


def test_unknown_query_parameters_and_bad_json_are_400(stack):
    status, body, _ = rest(stack, "GET", "/v1/patients?pageSize=2&colour=blue", role="viewer")
    assert (status, body["code"]) == (400, 3) and "colour" in body["message"], body
    status, body, _ = rest(stack, "GET", "/v1/patients?pageSize=-1", role="viewer")
    assert (status, reason(body)) == (400, "INVALID_FIELDS")
    status, body, _ = rest(stack, "GET", "/v1/patients?pageToken=forged", role="viewer")
    assert (status, reason(body)) == (400, "INVALID_PAGE_TOKEN")


def test_rest_over_tls_with_the_local_ca(stack):
    status, page, headers = rest(stack, "GET", "/v1/patientsWithStudies?pageSize=1", role="viewer", tls=True)
    assert status == 200 and len(page["patients"]) == 1 and headers["x-request-id"]


def preflight(stack, origin: str, path="/v1/patients", method="GET"):
    request = urllib.request.Request(f"http://{stack.target}{path}", method="OPTIONS", headers={
        "origin": origin, "access-control-request-method": method,
        "access-control-request-headers": "authorization, content-type"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers
    except urllib.error.HTTPError as error:
        return error.code, error.headers


def test_cors_grants_only_the_configured_origins(stack):
    """The shared stack allows one foreign origin (CORS_ALLOWED_ORIGINS): its
    pages may call REST and grpc-web with a token; any other origin gets no
    grant. The listing page itself is same-origin and needs none."""
    from conftest import ALLOWED_ORIGIN

    status, headers = preflight(stack, ALLOWED_ORIGIN)
    assert status == 200 and headers["access-control-allow-origin"] == ALLOWED_ORIGIN, dict(headers)
    assert "authorization" in headers["access-control-allow-headers"]
    _, headers = preflight(stack, ALLOWED_ORIGIN, "/clinic.gateway.v1.GatewayService/ListPatientsWithStudies", "POST")
    assert headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "grpc-status" in headers["access-control-expose-headers"]
    _, headers = preflight(stack, "https://evil.example")
    assert headers.get("access-control-allow-origin") is None
