"""The change feed through Envoy, as a service following Clinic would use it:
a generated Python client watching, a commit arriving on the open stream,
and a resume from the last sequence it saw."""

import queue
import threading
import uuid

import grpc


def test_a_watch_through_envoy_follows_commits_and_resumes_from_its_last_sequence(stack, pb):
    patients = pb.patients_grpc.PatientServiceStub(stack.channel("admin"))
    feed = pb.patients_grpc.PatientServiceStub(stack.channel("service"))
    head = feed.ListPatientChanges(pb.patients.ListPatientChangesRequest(after_sequence=0, page_size=1), timeout=10).head_sequence

    stream = feed.WatchPatientChanges(pb.patients.WatchPatientChangesRequest(after_sequence=head), timeout=60)
    received = queue.Queue()

    def follow():
        try:
            for message in stream:
                for change in message.changes:
                    received.put(change)
        except grpc.RpcError as e:
            received.put(e)

    threading.Thread(target=follow, daemon=True).start()
    email = f"feed-{uuid.uuid4().hex[:8]}@ejemplo.com"
    created = patients.CreatePatient(pb.patients.CreatePatientRequest(patient=pb.patients.Patient(
        first_name="Feed", last_name="Follower", birth_date="1980-01-01", email=email)), timeout=10)
    # Other writers may commit meanwhile: this patient's change is the one to check.
    while True:
        change = received.get(timeout=10)
        assert not isinstance(change, grpc.RpcError), change
        if change.patient_id == created.id:
            break
    assert change.sequence > head and change.patient.email == email
    assert change.kind == 1, "CHANGE_KIND_CREATED"
    stream.cancel()

    patients.UpdatePatient(pb.patients.UpdatePatientRequest(patient=pb.patients.Patient(id=created.id, first_name="Fed")), timeout=10)
    resumed = feed.WatchPatientChanges(pb.patients.WatchPatientChangesRequest(after_sequence=change.sequence), timeout=30)
    first = None
    for message in resumed:
        for nxt in message.changes:
            first = first or nxt.sequence
            if nxt.patient_id == created.id:
                break
        else:
            continue
        break
    assert first == change.sequence + 1, "the resume starts right after the last sequence seen"
    assert (nxt.sequence > change.sequence, nxt.revision, nxt.patient.first_name) == (True, 2, "Fed")
    resumed.cancel()


def test_clinicians_cannot_follow_the_feed_through_envoy(stack, pb):
    feed = pb.patients_grpc.PatientServiceStub(stack.channel("clinician"))
    try:
        next(iter(feed.WatchPatientChanges(pb.patients.WatchPatientChangesRequest(after_sequence=0), timeout=10)))
        raise AssertionError("a clinician followed the feed")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.PERMISSION_DENIED
