"""Parts of the system failing, and the whole system stopping."""

import os
import signal
import time

import grpc
import pytest

from conftest import pid_alive, port_open


def test_listing_fails_fast_without_studies_service_while_patients_work_then_recovers(own_stack, pb):
    ch = own_stack.channel()
    gateway = pb.gateway_grpc.GatewayServiceStub(ch)
    patients = pb.patients_grpc.PatientServiceStub(ch)
    request = pb.gateway.ListPatientsWithStudiesRequest(page_size=10)
    assert len(gateway.ListPatientsWithStudies(request, timeout=10).patients) == 4

    os.kill(own_stack.pids()["studies-service"], signal.SIGKILL)
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as down:
        gateway.ListPatientsWithStudies(request, timeout=10)
    took = time.monotonic() - started
    assert down.value.code() == grpc.StatusCode.UNAVAILABLE, down.value
    assert "studies-service" in down.value.details()
    assert took < 2.5, f"took {took:.2f}s of a 10s deadline"

    created = patients.CreatePatient(pb.patients.CreatePatientRequest(patient=pb.patients.Patient(
        first_name="Still", last_name="Working", birth_date="1999-09-09", email="still@ejemplo.com")), timeout=10)
    assert patients.GetPatient(pb.patients.GetPatientRequest(id=created.id), timeout=10).id == created.id

    deadline = time.monotonic() + 30
    while True:  # clinic-dev restarts studies-service after RESTART_DELAY_MS
        try:
            page = gateway.ListPatientsWithStudies(request, timeout=5)
            break
        except grpc.RpcError:
            assert time.monotonic() < deadline, "the listing did not recover"
            time.sleep(0.2)
    assert len(page.patients) == 5 and len(page.patients[0].studies) == 2


def test_ctrl_c_leaves_no_process_or_port_behind(own_stack):
    pids = own_stack.pids()
    assert set(pids) == {"patients-service", "studies-service", "gateway", "fhir", "envoy"}
    postgres_port = int(own_stack.output.split("postgres://postgres@127.0.0.1:")[1].split("/")[0])
    ports = [*own_stack.ports.values(), postgres_port]
    assert all(port_open(p) for p in ports if p != own_stack.ports["ENVOY_ADMIN_PORT"])

    assert own_stack.stop(signal.SIGINT) == 0

    alive = [name for name, pid in pids.items() if pid_alive(pid)]
    assert not alive, f"still running: {alive}"
    listening = [p for p in ports if port_open(p)]
    assert not listening, f"ports still open: {listening}"


def test_envoys_active_health_checks_see_every_service_healthy(stack):
    """Envoy's gRPC health checks ask each cluster for its own service name."""
    import urllib.request

    deadline = time.monotonic() + 20
    while True:
        text = urllib.request.urlopen(f"http://127.0.0.1:{stack.ports['ENVOY_ADMIN_PORT']}/clusters", timeout=5).read().decode()
        flags = {line.split("::")[0]: line.rsplit("::", 1)[1] for line in text.splitlines() if "::health_flags::" in line}
        if set(flags) == {"patients", "studies", "gateway", "fhir"} and all(v == "healthy" for v in flags.values()):
            return
        assert time.monotonic() < deadline, flags
        time.sleep(0.2)


def test_a_service_logs_json_on_request_and_exits_cleanly_on_sigterm(tmp_path):
    import json
    import subprocess

    from conftest import ROOT, free_port

    from conftest import CLINIC_DEV

    subprocess.run([str(CLINIC_DEV), "credentials", "--home", str(tmp_path)], check=True, capture_output=True, timeout=30)
    env = dict(os.environ, LOG_FORMAT="json", LISTEN_ADDR=f"127.0.0.1:{free_port()}", JWT_JWKS_FILE=str(tmp_path / "jwks" / "jwks.json"),
               METRICS_ADDR=f"127.0.0.1:{free_port()}",
               PATIENTS_ADDR=f"http://127.0.0.1:{free_port()}", STUDIES_ADDR=f"http://127.0.0.1:{free_port()}")
    process = subprocess.Popen([str(ROOT / "target" / "debug" / "gateway")], env=env, stdout=subprocess.PIPE, text=True)
    started = [json.loads(process.stdout.readline()) for _ in range(2)]
    assert [l["message"] for l in started] == ["metrics at /metrics", "gateway listening"], started
    assert all(l["level"] == "INFO" and l["timestamp"] for l in started), started
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 0
    lines = [json.loads(line) for line in process.stdout.read().splitlines() if line.startswith("{")]
    assert any(line["message"] == "gateway stopped" for line in lines), lines


def test_a_lone_replica_that_missed_its_health_checks_still_gets_calls(own_stack, pb):
    """One replica (as `make up` runs it) too busy to answer Envoy's health
    checks for a while is marked unhealthy; calls must still reach it and
    succeed once it answers, not fail at once with "no healthy upstream"
    (which a panic threshold of 0 did to a whole 30 s overload run)."""
    import urllib.request

    stack = own_stack
    patients = pb.patients_grpc.PatientServiceStub(stack.channel("admin"))
    created = patients.CreatePatient(pb.patients.CreatePatientRequest(patient=pb.patients.Patient(
        first_name="Lone", last_name="Replica", birth_date="1970-01-01", email="lone@ejemplo.com")))

    def patients_health():
        text = urllib.request.urlopen(f"http://127.0.0.1:{stack.ports['ENVOY_ADMIN_PORT']}/clusters", timeout=5).read().decode()
        return [line.rsplit("::", 1)[1] for line in text.splitlines() if line.startswith("patients::") and "::health_flags::" in line]

    pid = stack.pids()["patients-service"]
    os.kill(pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 20
        while patients_health() == ["healthy"]:
            assert time.monotonic() < deadline, f"Envoy never noticed the stopped replica: {patients_health()}"
            time.sleep(0.1)
        pending = patients.GetPatient.future(pb.patients.GetPatientRequest(id=created.id), timeout=15)
        assert not pending.done() or pending.code() == grpc.StatusCode.OK, f"refused at once: {pending.code()} {pending.details()}"
    finally:
        os.kill(pid, signal.SIGCONT)
    assert pending.result().id == created.id
