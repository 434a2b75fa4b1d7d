"""Keys and the TLS certificate rotate without a restart, at every entry
point: Envoy (which fetches the keys the gateway trusts) and each service's
own port (which re-read the JWKS file). An added key is trusted everywhere
within 10 s, a removed one refused everywhere within 10 s, a JWKS that is
empty or does not parse is refused and the last good one kept, and a
replaced certificate is served to new connections within 10 s."""

import base64
import hashlib
import json
import os
import re
import socket
import ssl
import time
import urllib.request
from datetime import datetime, timedelta, timezone

import grpc
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

WITHIN = 10.0


def write_atomically(path, text: str):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def b64(n: int) -> str:
    return base64.urlsafe_b64encode(n.to_bytes(32, "big")).rstrip(b"=").decode()


def new_key(kid: str):
    private = ec.generate_private_key(ec.SECP256R1())
    numbers = private.public_key().public_numbers()
    jwk = {"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid, "x": b64(numbers.x), "y": b64(numbers.y)}
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return pem, jwk


def token(pem, kid: str, subject: str) -> str:
    now = int(time.time())
    claims = {"iss": "clinic-dev", "aud": "clinic", "sub": subject, "roles": ["viewer"], "iat": now, "nbf": now, "exp": now + 600}
    return jwt.encode(claims, pem, algorithm="ES256", headers={"kid": kid})


def entry_points(stack, pb):
    """(name, target, a read of that entry point): Envoy and every service's own port."""
    ports = stack.ports
    return [
        ("envoy", stack.target, pb.patients_grpc.PatientServiceStub, "GetPatient", pb.patients.GetPatientRequest(id=1)),
        ("patients-service", f"127.0.0.1:{ports['PATIENTS_PORT']}", pb.patients_grpc.PatientServiceStub, "GetPatient", pb.patients.GetPatientRequest(id=1)),
        ("studies-service", f"127.0.0.1:{ports['STUDIES_PORT']}", pb.studies_grpc.StudyServiceStub, "ListStudies", pb.studies.ListStudiesRequest(page_size=1)),
        ("gateway", f"127.0.0.1:{ports['GATEWAY_PORT']}", pb.gateway_grpc.GatewayServiceStub, "ListPatientsWithStudies",
         pb.gateway.ListPatientsWithStudiesRequest(page_size=1)),
    ]


def codes(stack, pb, bearer: str) -> dict:
    out = {}
    for name, target, stub, method, request in entry_points(stack, pb):
        with grpc.insecure_channel(target) as channel:
            try:
                getattr(stub(channel), method)(request, timeout=5, metadata=[("authorization", f"Bearer {bearer}")])
                out[name] = grpc.StatusCode.OK
            except grpc.RpcError as e:
                out[name] = e.code()
    return out


def until(what: str, check, within: float = 15.0) -> float:
    """Seconds until `check()` holds (polled every 100 ms), failing after `within`."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < within, f"{what}: not within {within} s"
        time.sleep(0.1)
    return time.monotonic() - start


def envoy_jwks_fetches(stack) -> int:
    stats = urllib.request.urlopen(f"http://127.0.0.1:{stack.ports['ENVOY_ADMIN_PORT']}/stats?filter=jwks_fetch_success", timeout=5).read().decode()
    return sum(int(v) for v in re.findall(r"jwks_fetch_success: (\d+)", stats))


def refusals_logged(stack) -> int:
    logs = [(stack.home / "logs" / f"{name}.log") for name in ("patients-service", "studies-service", "gateway")]
    return min(log.read_text().count("JWKS changed but cannot be used") for log in logs)


def served_certificate(stack) -> bytes:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", stack.ports["ENVOY_TLS_PORT"]), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            return tls.getpeercert(binary_form=True)


def test_keys_and_the_certificate_rotate_without_a_restart_at_every_entry_point(own_stack, pb):
    stack = own_stack
    jwks_file = stack.home / "jwks" / "jwks.json"
    original = json.loads(jwks_file.read_text())
    old = stack.token("viewer", "rotation-old")
    assert set(codes(stack, pb, old).values()) == {grpc.StatusCode.OK}

    pem, jwk = new_key("rotation-2")
    new = token(pem, "rotation-2", "rotation-new")
    assert set(codes(stack, pb, new).values()) == {grpc.StatusCode.UNAUTHENTICATED}

    # Added: trusted everywhere, the old key still too.
    write_atomically(jwks_file, json.dumps({"keys": [*original["keys"], jwk]}))
    took = until("the added key is trusted everywhere", lambda: set(codes(stack, pb, new).values()) == {grpc.StatusCode.OK})
    print(f"added key trusted everywhere after {took:.1f} s")
    assert took <= WITHIN, f"{took:.1f} s"
    assert set(codes(stack, pb, old).values()) == {grpc.StatusCode.OK}

    # Removed: the old key's tokens refused everywhere.
    write_atomically(jwks_file, json.dumps({"keys": [jwk]}))
    took = until("the removed key is refused everywhere", lambda: set(codes(stack, pb, old).values()) == {grpc.StatusCode.UNAUTHENTICATED})
    print(f"removed key refused everywhere after {took:.1f} s")
    assert took <= WITHIN, f"{took:.1f} s"

    # Empty, then unparsable: refused; the last good keys stay everywhere.
    for bad in ('{"keys": []}', '{"keys": [ not json'):
        refused, fetched = refusals_logged(stack), envoy_jwks_fetches(stack)
        write_atomically(jwks_file, bad)
        until("every service saw the bad JWKS", lambda: refusals_logged(stack) > refused)
        until("Envoy fetched the keys since", lambda: envoy_jwks_fetches(stack) >= fetched + 2)
        assert set(codes(stack, pb, new).values()) == {grpc.StatusCode.OK}, bad
        assert set(codes(stack, pb, old).values()) == {grpc.StatusCode.UNAUTHENTICATED}, bad

    # A good version after the bad ones is read again.
    write_atomically(jwks_file, json.dumps({"keys": [*original["keys"], jwk]}))
    until("a good JWKS after bad ones is read", lambda: set(codes(stack, pb, old).values()) == {grpc.StatusCode.OK})

    # The TLS certificate: replaced in place, served to new connections.
    before = served_certificate(stack)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=1))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    tls = stack.home / "tls"
    write_atomically(tls / "server-key.pem", key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                               serialization.NoEncryption()).decode())
    write_atomically(tls / "server.pem", cert.public_bytes(serialization.Encoding.PEM).decode())
    replaced = cert.public_bytes(serialization.Encoding.DER)
    assert replaced != before
    took = until("the replaced certificate is served", lambda: served_certificate(stack) == replaced)
    print(f"replaced certificate served after {took:.1f} s")
    assert took <= WITHIN, f"{took:.1f} s"
    assert hashlib.sha256(served_certificate(stack)).hexdigest() == hashlib.sha256(replaced).hexdigest()
