"""Two replicas of every service behind Envoy (`make up REPLICAS=2`): losing
one under load loses no read, writes succeed or fail retryably and leave
nothing half done, a consumer of the change feed whose replica is killed
mid-stream resumes and misses nothing, and a rolling restart fails
nothing."""

import os
import signal
import threading
import time
import uuid

import grpc

from conftest import Bearer, Stack, port_open


class Load:
    """Threads reading through Envoy (GetPatient and the listing) until
    stopped, each as a user of its own (a user's share of a replica is
    MAX_IN_FLIGHT_PER_CALLER calls); every failure is kept."""

    def __init__(self, stack, pb, threads=6):
        self.failures, self.calls, self.stopping = [], 0, threading.Event()
        self.lock = threading.Lock()
        channels = [stack.channel(token=stack.token("viewer", f"e2e-load-{n}")) for n in range(threads)]
        self.patients = [pb.patients_grpc.PatientServiceStub(c) for c in channels]
        self.gateway = [pb.gateway_grpc.GatewayServiceStub(c) for c in channels]
        self.pb = pb
        self.threads = [threading.Thread(target=self.run, args=(n,), daemon=True) for n in range(threads)]
        for t in self.threads:
            t.start()

    def run(self, n):
        while not self.stopping.is_set():
            try:
                if n % 3 == 0:
                    self.gateway[n].ListPatientsWithStudies(self.pb.gateway.ListPatientsWithStudiesRequest(page_size=4), timeout=10)
                else:
                    self.patients[n].GetPatient(self.pb.patients.GetPatientRequest(id=1 + n % 4), timeout=10)
                with self.lock:
                    self.calls += 1
            except grpc.RpcError as e:
                with self.lock:
                    self.failures.append((e.code(), e.details()))

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=15)
        return self.calls, self.failures


class Follower:
    """A consumer of the patients' feed, as a service following Clinic would
    write one: it watches from its last sequence, and when the stream ends
    (its replica killed, a drain) it resumes through Envoy from there. Every
    change received is kept, in order, to check for gaps and repeats."""

    def __init__(self, stack, pb, channel, after):
        self.pb, self.after, self.changes, self.ends = pb, after, [], []
        self.stopping = threading.Event()
        self.first = pb.patients_grpc.PatientServiceStub(channel)
        self.again = pb.patients_grpc.PatientServiceStub(stack.channel("service"))
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        feed = self.first
        while not self.stopping.is_set():
            stream = feed.WatchPatientChanges(self.pb.patients.WatchPatientChangesRequest(after_sequence=self.after), timeout=120)
            try:
                for message in stream:
                    self.changes.extend(message.changes)
                    self.after = self.changes[-1].sequence if self.changes else self.after
                    if self.stopping.is_set():
                        stream.cancel()
                        return
            except grpc.RpcError as e:
                if self.stopping.is_set():
                    return
                self.ends.append((e.code(), e.details()))
                time.sleep(0.1)
            feed = self.again

    def stop(self):
        self.stopping.set()
        self.thread.join(timeout=15)


def edge_failures(stack) -> str:
    """Envoy's access-log lines of calls that did not end well: what to read
    when a read failed."""
    log = stack.logs().get("envoy.log", "")
    bad = [line for line in log.splitlines() if '"flags":"-"' not in line and '"flags"' in line]
    bad += [line for line in log.splitlines() if '"grpc_status":"0"' not in line and '"grpc_status":"' in line and "Health" not in line]
    return "\n".join(bad[-20:])


def wait_until(what, check, timeout=30):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def all_hosts_healthy(stack) -> bool:
    """Whether Envoy's health checks see every replica of every service."""
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{stack.ports['ENVOY_ADMIN_PORT']}/clusters", timeout=5).read().decode()
    flags = [line.rsplit("::", 1)[1] for line in text.splitlines() if "::health_flags::" in line]
    return len(flags) == 8 and all(f == "healthy" for f in flags)


def wait_back(stack, name, old_pid, port, timeout=30):
    """Until `name` runs again with a new pid and its port answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = stack.pids().get(name)
        if pid and pid != old_pid and port_open(port):
            return
        time.sleep(0.1)
    raise AssertionError(f"{name} did not come back")


def test_two_replicas_survive_a_kill_and_a_rolling_restart_under_load(tmp_path, pb):
    stack = Stack(tmp_path, restart_delay_ms=500, env={"REPLICAS": "2"})
    try:
        pids = stack.pids()
        assert {"patients-service", "patients-service-2", "studies-service-2", "gateway-2"} <= set(pids), pids

        # SIGKILL one patients replica mid-load: reads are retried on the other.
        # Feed consumers watch meanwhile: two through Envoy, one on the very
        # replica that is killed.
        wait_until("every replica healthy at Envoy", lambda: all_hosts_healthy(stack))
        service = stack.token("service", "e2e-follower")
        admin_feed = pb.patients_grpc.PatientServiceStub(stack.channel("service"))
        start = admin_feed.ListPatientChanges(pb.patients.ListPatientChangesRequest(page_size=1), timeout=10).head_sequence
        direct = grpc.intercept_channel(grpc.insecure_channel(f"127.0.0.1:{stack.ports['PATIENTS_PORT']}"), Bearer(service))
        followers = [Follower(stack, pb, stack.channel(token=service), start) for _ in range(2)]
        followers.append(Follower(stack, pb, direct, start))
        load = Load(stack, pb)
        wait_until("the load running", lambda: load.calls > 50)
        os.kill(pids["patients-service"], signal.SIGKILL)
        writes = pb.patients_grpc.PatientServiceStub(stack.channel("clinician"))
        outcomes = []
        for n in range(20):
            request = pb.patients.CreatePatientRequest(patient=pb.patients.Patient(
                first_name="Fail", last_name="Over", birth_date="1980-01-01", email=f"failover{n}@ejemplo.com"),
                request_id=str(uuid.uuid4()))
            try:
                outcomes.append(("ok", writes.CreatePatient(request, timeout=10).id))
            except grpc.RpcError as e:
                assert e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED), e
                # Retryable: the same request id gives the one patient.
                outcomes.append(("retried", writes.CreatePatient(request, timeout=10).id))
        wait_back(stack, "patients-service", pids["patients-service"], stack.ports["PATIENTS_PORT"])
        calls, failures = load.stop()
        assert calls > 100 and failures == [], f"{len(failures)} of {calls} reads failed: {failures[:5]}\n{edge_failures(stack)}"
        listed = pb.patients_grpc.PatientServiceStub(stack.channel("admin")).ListPatients(
            pb.patients.ListPatientsRequest(page_size=1000, filter='last_name = "over"'), timeout=10).patients
        assert len(listed) == 20 and {p.id for p in listed} == {i for _, i in outcomes}, "every write once"

        # Every follower has every change since it started, once, in order,
        # across the kill: the 20 creates among them.
        head = admin_feed.ListPatientChanges(pb.patients.ListPatientChangesRequest(after_sequence=start), timeout=10).head_sequence
        wait_until("every follower caught up", lambda: all(f.after >= head for f in followers))
        for f in followers:
            f.stop()
        assert followers[-1].ends, "the follower on the killed replica saw its stream end"
        for f in followers:
            sequences = [c.sequence for c in f.changes if c.sequence <= head]
            assert sequences == list(range(start + 1, head + 1)), f"gap or repeat (ends: {f.ends})"
            created = {c.patient_id for c in f.changes if c.kind == 1 and c.patient.last_name == "Over"}
            assert created == {i for _, i in outcomes}, "every create seen"

        # A rolling restart (SIGTERM one replica at a time, as Kubernetes does),
        # a feed consumer watching through Envoy meanwhile.
        wait_until("every replica healthy at Envoy", lambda: all_hosts_healthy(stack))
        start = admin_feed.ListPatientChanges(pb.patients.ListPatientChangesRequest(page_size=1), timeout=10).head_sequence
        drained = Follower(stack, pb, stack.channel(token=service), start)
        load = Load(stack, pb)
        for name, port in (("patients-service", "PATIENTS_PORT"), ("patients-service-2", None), ("studies-service", "STUDIES_PORT"),
                           ("studies-service-2", None), ("gateway", "GATEWAY_PORT"), ("gateway-2", None)):
            pid = stack.pids()[name]
            base = stack.ports[port] if port else stack.ports[name.rsplit("-", 1)[0].upper().replace("-SERVICE", "") + "_PORT"] + 100
            os.kill(pid, signal.SIGTERM)
            wait_back(stack, name, pid, base)
            # The next replica goes only once Envoy sends this one traffic again.
            wait_until(f"{name} healthy at Envoy again", lambda: all_hosts_healthy(stack))
        calls, failures = load.stop()
        assert calls > 100 and failures == [], f"{len(failures)} of {calls} reads failed during the rolling restart: {failures[:5]}\n{edge_failures(stack)}"
        # Each drain ended the watch cleanly, with the status that names where
        # to resume; the consumer resumed there and missed nothing.
        writes.CreatePatient(pb.patients.CreatePatientRequest(patient=pb.patients.Patient(
            first_name="After", last_name="Restart", birth_date="1980-01-01", email=f"after-{uuid.uuid4().hex[:8]}@ejemplo.com")), timeout=10)
        head = admin_feed.ListPatientChanges(pb.patients.ListPatientChangesRequest(after_sequence=start), timeout=10).head_sequence
        wait_until("the drained follower caught up", lambda: drained.after >= head)
        drained.stop()
        assert drained.ends, "the drains ended the watch"
        for code, details in drained.ends:
            assert code == grpc.StatusCode.UNAVAILABLE and "resume after sequence" in details, (code, details)
        assert [c.sequence for c in drained.changes if c.sequence <= head] == list(range(start + 1, head + 1))
    finally:
        stack.cleanup()
