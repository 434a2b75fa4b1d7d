"""Envoy as a hardened edge: what a careless or hostile client sends cannot
change how the system treats it, and what Envoy logs holds no personal data."""

import json
import re

import yaml

from conftest import ROOT

LISTING = "clinic.gateway.v1.GatewayService/ListPatientsWithStudies"


def rendered(stack) -> dict:
    return yaml.safe_load((stack.home / "envoy.yaml").read_text())


def test_client_sent_envoy_headers_cannot_change_timeouts_or_retries(stack):
    result = stack.grpcurl(LISTING, data='{"page_size": 1}', headers=[
        "x-envoy-upstream-rq-timeout-ms: 1",
        "x-envoy-upstream-rq-per-try-timeout-ms: 1",
        "x-envoy-max-retries: 50",
        "x-envoy-retry-on: 5xx,resource-exhausted",
    ], check=False)
    assert result.returncode == 0, result.stderr


def test_too_many_headers_or_underscores_are_refused(stack):
    many = [f"x-h{i}: v" for i in range(120)]
    assert stack.grpcurl(LISTING, data="{}", headers=many, check=False).returncode != 0
    assert stack.grpcurl(LISTING, data="{}", headers=["x_smuggled: 1"], check=False).returncode != 0
    assert stack.grpcurl(LISTING, data="{}").returncode == 0


def test_the_edge_is_configured_with_limits_timeouts_and_safe_retries(stack):
    config = rendered(stack)
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    assert config["overload_manager"]["actions"]
    listener = config["static_resources"]["listeners"][0]
    assert listener["per_connection_buffer_limit_bytes"] <= 65536
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["use_remote_address"] is True and hcm["xff_num_trusted_hops"] == 0
    assert hcm["request_headers_timeout"] and hcm["stream_idle_timeout"]
    seconds = lambda d: float(d.rstrip("s"))
    assert seconds(hcm["request_timeout"]) <= 15, "a request body must arrive in time"
    assert seconds(hcm["stream_idle_timeout"]) <= 60, "an idle stream is cut"
    assert hcm["http2_protocol_options"]["max_concurrent_streams"] <= 128
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    for route in routes:
        retry_on = route["route"].get("retry_policy", {}).get("retry_on", "")
        assert "resource-exhausted" not in retry_on, route["match"]
    reflection = next(r for r in routes if r["match"].get("prefix") == "/grpc.reflection.")
    assert reflection["route"]["max_stream_duration"]["max_stream_duration"]
    for cluster in config["static_resources"]["clusters"]:
        thresholds = cluster["circuit_breakers"]["thresholds"][0]
        assert thresholds["max_requests"] > 64, "Envoy must not shed before the services do"
        assert thresholds["retry_budget"]["budget_percent"]["value"] <= 25


def test_envoys_access_log_is_json_without_query_strings(stack):
    stack.grpcurl(LISTING, data='{"page_size": 1}')
    lines = [l for l in (stack.home / "logs" / "envoy.log").read_text().splitlines() if l.startswith("{")]
    assert lines, "Envoy logs one JSON object per request"
    entry = json.loads(lines[-1])
    assert entry["path"].startswith("/") and "?" not in entry["path"]
    assert set(entry) <= {"time", "method", "path", "status", "grpc_status", "flags", "duration_ms", "upstream", "request_id"}


def test_a_request_whose_body_never_finishes_is_cut_off_at_the_edge(stack):
    """A slow-body caller holds nothing for long: Envoy answers 408 once its
    request timeout (10 s) passes without the whole body."""
    import socket
    import time

    token = stack.token("clinician")
    with socket.create_connection(("127.0.0.1", stack.ports["ENVOY_PORT"]), timeout=30) as s:
        s.sendall((f"POST /v1/patients HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                   f"Authorization: Bearer {token}\r\nContent-Length: 1000\r\n\r\n{{").encode())
        started = time.monotonic()
        answer = s.recv(4096).decode(errors="replace")
        took = time.monotonic() - started
    assert answer.startswith("HTTP/1.1 408"), answer[:200]
    assert 5 < took < 15, f"cut off after {took:.1f} s"
