"""Identity, roles, the audit trail and TLS through Envoy, as outside clients
meet them. Forged tokens are made here with PyJWT, independently of the
Rust code that makes and checks the real ones."""

import base64
import hashlib
import hmac
import json
import os
import ssl
import socket
import subprocess
import time
import uuid

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from conftest import ROOT, VENV_BIN

# The contract's roles table, written out independently of the code.
VIEWER = {
    "/clinic.patients.v1.PatientService/GetPatient", "/clinic.patients.v1.PatientService/ListPatients",
    "/clinic.studies.v1.StudyService/GetStudy", "/clinic.studies.v1.StudyService/ListStudies",
    "/clinic.studies.v1.StudyService/ListStudiesByPatient",
    "/clinic.gateway.v1.GatewayService/ListPatientsWithStudies", "/clinic.gateway.v1.GatewayService/GetPatientWithStudies",
}
VIEWER |= {"/clinic.patients.v1.PatientService/ListPatientRevisions", "/clinic.studies.v1.StudyService/ListStudyRevisions"}
FEEDS = {
    "/clinic.patients.v1.PatientService/ListPatientChanges", "/clinic.patients.v1.PatientService/WatchPatientChanges",
    "/clinic.studies.v1.StudyService/ListStudyChanges", "/clinic.studies.v1.StudyService/WatchStudyChanges",
}
CLINICIAN = VIEWER | {
    "/clinic.patients.v1.PatientService/CreatePatient", "/clinic.patients.v1.PatientService/UpdatePatient",
    "/clinic.studies.v1.StudyService/CreateStudy", "/clinic.studies.v1.StudyService/UpdateStudy",
    "/clinic.studies.v1.StudyService/DeleteStudy",
}
ADMIN = CLINICIAN | FEEDS | {
    "/clinic.patients.v1.PatientService/DeletePatient", "/clinic.audit.v1.AuditService/ListAuditEvents",
    "/clinic.patients.v1.PatientService/UndeletePatient", "/clinic.patients.v1.PatientService/PurgePatient",
    "/clinic.studies.v1.StudyService/UndeleteStudy",
}
ALLOWED = {"viewer": VIEWER, "clinician": CLINICIAN, "admin": ADMIN, "service": FEEDS}


def public_rpcs(pb) -> list:
    """Every rpc of the public services, from the generated descriptors."""
    rpcs = []
    for module in (pb.patients, pb.studies, pb.gateway, pb.audit):
        for service in module.DESCRIPTOR.services_by_name.values():
            rpcs += [f"/{service.full_name}/{m.name}" for m in service.methods]
    return rpcs


def call(stack, method: str, token=None, headers=()):
    """`method` with an empty request through Envoy; its status code."""
    channel = grpc.insecure_channel(stack.target)
    metadata = list(headers) + ([("authorization", f"Bearer {token}")] if token else [])
    try:
        if "/Watch" in method:
            # A stream: its first message (or its end) tells.
            stream = channel.unary_stream(method, request_serializer=lambda _: b"", response_deserializer=lambda b: b)(
                b"", metadata=metadata, timeout=10)
            next(stream, None)
            stream.cancel()
            return grpc.StatusCode.OK
        channel.unary_unary(method, request_serializer=lambda _: b"", response_deserializer=lambda b: b)(b"", metadata=metadata, timeout=10)
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()
    finally:
        channel.close()


def b64(value) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def hs256(claims: dict, kid: str, secret: bytes) -> str:
    """An HMAC token keyed with public material (the classic confusion
    attack), made by hand: PyJWT rightly refuses to."""
    signing_input = f"{b64({'alg': 'HS256', 'typ': 'JWT', 'kid': kid})}.{b64(claims)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def forged_tokens(stack) -> dict:
    key = (stack.home / "signing" / "signing-key.pem").read_text()
    jwks = (stack.home / "jwks" / "jwks.json").read_text()
    kid = json.loads(jwks)["keys"][0]["kid"]
    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    now = int(time.time())
    valid = {"iss": "clinic-dev", "aud": "clinic", "sub": "mallory", "roles": ["admin"], "iat": now, "nbf": now, "exp": now + 600}

    def signed(key=key, kid=kid, **change):
        claims = {k: v for k, v in {**valid, **change}.items() if v is not None}
        return jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid})

    good = signed()
    header, _, signature = good.split(".")
    return {
        "not a JWT": "not-a-jwt",
        "alg none": f"{b64({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{b64(valid)}.",
        "HS256 keyed with the JWKS": hs256(valid, kid, jwks.encode()),
        "a kid not in the JWKS": signed(key=other, kid="intruder"),
        "another key under the trusted kid": signed(key=other),
        "a tampered payload": f"{header}.{b64({**valid, 'sub': 'root'})}.{signature}",
        "another issuer": signed(iss="https://evil.example"),
        "another audience": signed(aud="another-api"),
        "expired": signed(nbf=now - 7200, exp=now - 3600),
        "not yet valid": signed(nbf=now + 3600),
        # Envoy lets these two through; the services refuse them.
        "no exp": signed(exp=None),
        "no sub": signed(sub=None),
    }


def test_every_public_rpc_refuses_a_missing_or_bad_token_through_envoy(stack, pb):
    rpcs = public_rpcs(pb)
    assert len(rpcs) >= 14
    tokens = forged_tokens(stack)
    for method in rpcs:
        assert call(stack, method) == grpc.StatusCode.UNAUTHENTICATED, f"no token: {method}"
        for what, token in tokens.items():
            assert call(stack, method, token) == grpc.StatusCode.UNAUTHENTICATED, f"{what}: {method}"
    # Health and reflection stay open.
    assert call(stack, "/grpc.health.v1.Health/Check") == grpc.StatusCode.OK
    assert "clinic.patients.v1.PatientService" in stack.grpcurl("list", role=None).stdout


def test_each_role_may_call_exactly_what_the_contract_gives_it_through_envoy(stack, pb):
    for role, allowed in ALLOWED.items():
        token = stack.token(role, f"e2e-matrix-{role}")
        for method in public_rpcs(pb):
            code = call(stack, method, token)
            if method in allowed:
                assert code not in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED), f"{role} may call {method}: {code}"
            else:
                assert code == grpc.StatusCode.PERMISSION_DENIED, f"{role} must not call {method}: {code}"


def test_tls_on_its_own_port_with_the_local_ca_and_never_in_plaintext(stack):
    listed = stack.grpcurl("list", role=None, tls=True)
    assert "clinic.patients.v1.PatientService" in listed.stdout
    view = json.loads(stack.grpcurl("clinic.gateway.v1.GatewayService/ListPatientsWithStudies", data='{"page_size": 1}', role="viewer", tls=True).stdout)
    assert len(view["patients"]) == 1
    grpcurl = str(VENV_BIN / "grpcurl")
    plaintext = subprocess.run([grpcurl, "-plaintext", stack.tls_front, "list"], capture_output=True, text=True, timeout=30)
    assert plaintext.returncode != 0
    untrusted = subprocess.run([grpcurl, stack.tls_front, "list"], capture_output=True, text=True, timeout=30)
    assert untrusted.returncode != 0 and "certificate" in untrusted.stderr, untrusted.stderr
    context = ssl.create_default_context(cafile=str(stack.ca))
    context.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", stack.ports["ENVOY_TLS_PORT"]), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.selected_alpn_protocol() == "h2"
            assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_the_audit_trail_through_envoy_names_the_end_user_and_the_request_id_on_every_hop(stack, pb):
    """The listing view, asked through Envoy with a request id: one
    ListAuditEvents answers with its event (the method the user called) and
    those of both services, under the end user, with that id. Without an id
    Envoy makes one, and says which."""
    viewer = stack.channel(token=stack.token("viewer", "e2e-auditor-viewer"))
    gateway = pb.gateway_grpc.GatewayServiceStub(viewer)
    request_id = f"e2e-{uuid.uuid4()}"
    page = gateway.ListPatientsWithStudies(pb.gateway.ListPatientsWithStudiesRequest(page_size=2), timeout=10,
                                           metadata=[("x-request-id", request_id)])
    patient = page.patients[0].patient.id

    audit = pb.audit_grpc.AuditServiceStub(stack.channel("admin"))
    events = audit.ListAuditEvents(pb.audit.ListAuditEventsRequest(patient_id=patient, subject="e2e-auditor-viewer", page_size=50), timeout=10).events
    ours = [e for e in events if e.request_id == request_id]
    assert {e.method for e in ours} == {"clinic.gateway.v1.GatewayService/ListPatientsWithStudies", "clinic.patients.v1.PatientService/ListPatients",
                                        "clinic.studies.v1.StudyService/ListStudiesByPatient"}, events
    assert all(e.subject == "e2e-auditor-viewer" and e.code == "OK" and patient in e.patient_ids for e in ours)

    patients = pb.patients_grpc.PatientServiceStub(viewer)
    _, call_ = patients.GetPatient.with_call(pb.patients.GetPatientRequest(id=patient), timeout=10)
    generated = dict(call_.initial_metadata()).get("x-request-id")
    assert generated and uuid.UUID(generated), call_.initial_metadata()
    events = audit.ListAuditEvents(pb.audit.ListAuditEventsRequest(subject="e2e-auditor-viewer", page_size=10), timeout=10).events
    assert events[0].request_id == generated and events[0].method.endswith("/GetPatient"), events[0]

    refused = call(stack, "/clinic.audit.v1.AuditService/ListAuditEvents", stack.token("clinician"))
    assert refused == grpc.StatusCode.PERMISSION_DENIED


def test_make_token_prints_one_line_and_refuses_unknown_roles(stack):
    assert stack.token("viewer", "e2e-one-line").count(".") == 2
    unknown = subprocess.run(["make", "-s", "token", "ROLE=superuser", "SUBJECT=x"], capture_output=True, text=True, timeout=120,
                             env={**os.environ, "CLINIC_HOME": str(stack.home)}, cwd=ROOT)
    assert unknown.returncode != 0 and "not a role" in unknown.stderr, unknown.stderr
    short = stack.token("viewer", "e2e-short", ttl="90s")
    claims = jwt.decode(short, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 90 and claims["roles"] == ["viewer"] and claims["sub"] == "e2e-short"
