"""One trace per request across Envoy and every service, received by a real
OTLP/gRPC endpoint; Prometheus metrics that move with the calls; JSON logs
that carry the trace."""

import json
import time
import urllib.request
from concurrent import futures

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from conftest import Stack, free_port


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An in-process OTLP/gRPC trace receiver that keeps every span."""

    def __init__(self):
        self.spans = []  # (service.name, span)

    def Export(self, request, context):
        for resource_spans in request.resource_spans:
            service = next((a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"), "?")
            for scope in resource_spans.scope_spans:
                self.spans.extend((service, span) for span in scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
def collector():
    port = free_port()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    received = Collector()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(received, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    yield port, received
    server.stop(0)


def test_one_listing_call_is_one_trace_across_envoy_and_every_service_with_sql(collector, tmp_path, pb):
    port, received = collector
    stack = Stack(tmp_path, env={"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}", "OTEL_BSP_SCHEDULE_DELAY": "200",
                                 "LOG_FORMAT": "json"})
    try:
        gateway = pb.gateway_grpc.GatewayServiceStub(stack.channel("viewer"))
        _, call = gateway.ListPatientsWithStudies.with_call(pb.gateway.ListPatientsWithStudiesRequest(page_size=2), timeout=10)
        request_id = dict(call.initial_metadata())["x-request-id"]

        def about_listing(span) -> bool:
            texts = [span.name] + [a.value.string_value for a in span.attributes]
            return any("ListPatientsWithStudies" in t for t in texts)

        def listing_trace():
            roots = [s for svc, s in received.spans if svc == "envoy" and about_listing(s)]
            for root in roots:
                spans = [(svc, s) for svc, s in received.spans if s.trace_id == root.trace_id]
                services = {svc for svc, _ in spans}
                if {"envoy", "gateway", "patients-service", "studies-service"} <= services and any(s.name.startswith("SQL") for _, s in spans):
                    return root.trace_id, spans
            return None

        deadline = time.monotonic() + 20
        while (found := listing_trace()) is None:
            assert time.monotonic() < deadline, sorted({(svc, s.name) for svc, s in received.spans})
            time.sleep(0.2)
        trace_id, spans = found
        ids = {s.span_id for _, s in spans}
        by_service = {}
        for svc, span in spans:
            by_service.setdefault(svc, []).append(span)
        # Every span but the trace's root hangs off another span of the trace.
        roots = [s for _, s in spans if not s.parent_span_id]
        assert len(roots) == 1 and roots[0] in by_service["envoy"], [(svc, s.name) for svc, s in spans]
        assert all(s.parent_span_id in ids for _, s in spans if s.parent_span_id), "parent links intact"
        gateway_rpc = next(s for s in by_service["gateway"] if "ListPatientsWithStudies" in s.name)
        for service, method in (("patients-service", "ListPatients"), ("studies-service", "ListStudiesByPatient")):
            rpc = next(s for s in by_service[service] if s.name.endswith(method))
            assert rpc.parent_span_id == gateway_rpc.span_id, f"{service} is a child of the gateway's span"
            sql = [s for s in by_service[service] if s.name.startswith("SQL")]
            assert sql and all(s.parent_span_id == rpc.span_id for s in sql[:1]), f"{service}'s SQL under its rpc"
            statement = next(a.value.string_value for a in sql[0].attributes if a.key == "db.statement")
            assert "select" in statement.lower() and "$1" in statement, statement
        assert gateway_rpc.parent_span_id in {s.span_id for s in by_service["envoy"]}

        # The services' JSON log lines of this request carry its trace id.
        lines = [json.loads(l) for l in (stack.home / "logs" / "gateway.log").read_text().splitlines() if l.startswith("{")]
        ours = [l for l in lines if l.get("message") == "rpc finished" and l.get("trace_id") == trace_id.hex()]
        assert ours and all(l["span_id"] for l in ours), lines[-5:]
        assert request_id
    finally:
        stack.cleanup()


def scrape(port: int) -> dict:
    """{(name, frozenset(labels)): value} of every sample at /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict, name: str, **labels) -> float:
    wanted = set(labels.items())
    return sum(v for (n, l), v in samples.items() if n == name and wanted <= set(l))


def test_every_service_serves_prometheus_metrics_that_move_with_calls(stack, pb):
    ports = {name: stack.ports[f"{name.upper()}_METRICS_PORT"] for name in ("patients", "studies", "gateway")}
    patients = pb.patients_grpc.PatientServiceStub(stack.channel("viewer"))
    gateway = pb.gateway_grpc.GatewayServiceStub(stack.channel("viewer"))
    patients.GetPatient(pb.patients.GetPatientRequest(id=1), timeout=10)
    before = {name: scrape(port) for name, port in ports.items()}

    for _ in range(3):
        patients.GetPatient(pb.patients.GetPatientRequest(id=1), timeout=10)
    with pytest.raises(grpc.RpcError):
        patients.GetPatient(pb.patients.GetPatientRequest(id=999_999_999), timeout=10)
    gateway.ListPatientsWithStudies(pb.gateway.ListPatientsWithStudiesRequest(page_size=2), timeout=10)
    after = {name: scrape(port) for name, port in ports.items()}

    get = dict(grpc_service="clinic.patients.v1.PatientService", grpc_method="GetPatient")
    moved = lambda svc, name, **labels: value(after[svc], name, **labels) - value(before[svc], name, **labels)
    assert moved("patients", "grpc_server_started_total", **get) == 4
    assert moved("patients", "grpc_server_handled_total", grpc_code="OK", **get) == 3
    assert moved("patients", "grpc_server_handled_total", grpc_code="NotFound", **get) == 1
    assert moved("patients", "grpc_server_handling_seconds_count", **get) == 4
    assert value(after["patients"], "grpc_server_handling_seconds_bucket", le="+Inf", **get) >= 4
    listing = dict(grpc_service="clinic.gateway.v1.GatewayService", grpc_method="ListPatientsWithStudies")
    assert moved("gateway", "grpc_server_handled_total", grpc_code="OK", **listing) == 1
    assert moved("gateway", "grpc_client_handled_total", grpc_code="OK", grpc_service="clinic.patients.v1.PatientService",
                 grpc_method="ListPatients") == 1
    assert moved("gateway", "grpc_client_handling_seconds_count", grpc_service="clinic.studies.v1.StudyService",
                 grpc_method="ListStudiesByPatient") == 1
    assert moved("studies", "grpc_server_handled_total", grpc_code="OK", grpc_method="ListStudiesByPatient") == 1
    for svc in ("patients", "studies"):
        assert value(after[svc], "db_pool_max_connections") > 0
        assert value(after[svc], "db_pool_connections", state="idle") + value(after[svc], "db_pool_connections", state="in_use") >= 1
        assert value(after[svc], "audit_events_written_total") > 0
    for gauge in ("patient_events_pending", "patient_events_oldest_pending_age_seconds", "patient_events_last_applied_sequence"):
        assert (gauge, frozenset()) in after["studies"], gauge

    envoy = urllib.request.urlopen(f"http://127.0.0.1:{stack.ports['ENVOY_ADMIN_PORT']}/stats/prometheus", timeout=5).read().decode()
    assert "envoy_cluster_upstream_rq_total" in envoy


def test_made_up_method_names_cannot_grow_any_process_metrics(stack):
    """Callers without a token send thousands of made-up paths, straight to
    every service's port and through Envoy (the health route reaches the
    gateway unauthenticated): every process keeps the same series, and no
    made-up name is ever a label."""
    ports = {name: stack.ports[f"{name.upper()}_METRICS_PORT"] for name in ("patients", "studies", "gateway")}
    targets = [f"127.0.0.1:{stack.ports[name]}" for name in ("PATIENTS_PORT", "STUDIES_PORT", "GATEWAY_PORT")] + [stack.target]

    def made_up_calls(tag: str, count: int):
        calls = []
        for target in targets:
            channel = grpc.insecure_channel(target)
            for i in range(count):
                path = (f"/grpc.health.v1.Health/Made{tag}{i}" if i % 2 else f"/made.up{tag}{i}.Service/M{tag}{i}")
                call = channel.unary_unary(path, request_serializer=lambda m: m, response_deserializer=lambda m: m)
                calls.append(call.future(b"", timeout=10))
        for call in calls:
            assert call.exception() is not None, "a made-up method answered"

    made_up_calls("warm", 5)  # the one `unknown` series each process may have
    before = {name: scrape(port) for name, port in ports.items()}
    made_up_calls("X", 1000)
    after = {name: scrape(port) for name, port in ports.items()}
    for name in ports:
        assert len(after[name]) == len(before[name]), f"{name}: {len(before[name])} series before, {len(after[name])} after"
        labels = {v for (_, l) in after[name] for _, v in l}
        assert not [v for v in labels if "MadeX" in v or "made.upX" in v], f"{name} labels a made-up name"
        unknown = dict(grpc_service="unknown", grpc_method="unknown")
        assert value(after[name], "grpc_server_started_total", **unknown) - value(before[name], "grpc_server_started_total", **unknown) >= 1000
