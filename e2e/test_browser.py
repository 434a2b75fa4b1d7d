"""Browsers' side of the front door: a grpc-web client generated from our
protos (protobuf-es + connect-web) under Node, and the listing page in
Debian's headless Chromium driven by playwright-core."""

import json
import os
import signal
import subprocess
import uuid

from conftest import ROOT

WEB = ROOT / "web"


def node(*args, timeout=60) -> dict:
    result = subprocess.run(["node", *map(str, args)], cwd=WEB, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def browse(url: str, **options) -> dict:
    """What the page shows at `url`, as `web/test/page.mjs` reads it."""
    return node("test/page.mjs", json.dumps({"url": url, **options}), timeout=90)


def test_a_generated_grpc_web_client_under_node(stack):
    seen = node("dist-test/grpcweb.mjs", f"http://{stack.target}", stack.token("viewer", "e2e-grpc-web"))
    names = [p["name"] for p in seen["listing"]]
    assert names[:4] == ["Jose Villalobos", "Jessica Ramirez", "Diana Laura Del Toro", "Jorge Alberto Trevino"], seen
    assert [p["studies"] for p in seen["listing"]][:4] == [2, 1, 1, 0]
    assert seen["getPatient"] == "pepe@ejemplo.com"
    assert seen["withoutToken"] == "Unauthenticated"
    assert seen["missing"] == {"code": "NotFound", "reason": "google.rpc.ErrorInfo"}, "error details reach grpc-web clients"


def test_the_page_shows_the_patients_with_their_studies_and_pages(stack, tmp_path):
    # More patients than one page holds (10), so there is a page 2.
    from test_http import rest

    for n in range(12):
        status, body, _ = rest(stack, "POST", "/v1/patients", {"firstName": "Page", "lastName": f"Filler {chr(65 + n)}",
                                                               "birthDate": "2000-01-01", "email": f"page-{uuid.uuid4().hex[:8]}@ejemplo.com"})
        assert status == 200, body
    token = stack.token("viewer", "e2e-page")
    seen = browse(f"http://{stack.front}/#token={token}", screenshot=str(tmp_path / "page.png"))
    first = seen["first"]
    assert seen["errors"] == [], seen["errors"]
    patients = {p["name"]: p["studies"] for p in first["patients"]}
    assert patients["Jose Villalobos"] == [["XRAY", "STOMACH", "HIGH", "NO FINDINGS"], ["XRAY", "NECK", "HIGH", "NORMAL THYROID"]]
    assert patients["Diana Laura Del Toro"] == [["MAMMOGRAM", "BREASTS", "MID", "HIGH DENSITY ON LEFT SIDE"]]
    assert patients["Jorge Alberto Trevino"] == []
    assert len(first["patients"]) == 10 and first["page"] == "Page 1"
    assert first["message"] is None and not first["tokenForm"]
    assert first["who"] == "Signed in as e2e-page (viewer)"
    assert "#token" not in first["url"], "the token leaves the address bar"
    assert first["search"], "a search box"
    assert first["next"] and not first["back"]
    assert seen["next"]["page"] == "Page 2" and seen["next"]["back"]
    assert {p["name"] for p in seen["next"]["patients"]}.isdisjoint(patients)
    assert seen["back"]["patients"] == first["patients"], "back shows the first page again"
    assert (tmp_path / "page.png").stat().st_size > 10_000

    phone = browse(f"http://{stack.front}/#token={token}", width=390, height=844)
    assert not phone["first"]["overflows"], "readable on a phone: nothing wider than the screen"


def test_the_page_searches_by_name_ignoring_case_and_accents(stack):
    from test_http import rest

    status, _, _ = rest(stack, "POST", "/v1/patients", {"firstName": "Zenaida", "lastName": "Quiñónez", "birthDate": "1977-07-07",
                                                        "email": f"zq-{uuid.uuid4().hex[:8]}@ejemplo.com"})
    assert status == 200
    token = stack.token("viewer", "e2e-page-search")
    for typed in ["QUIÑO", "quino", "zen qui"]:
        seen = browse(f"http://{stack.front}/#token={token}", search=typed)
        assert [p["name"] for p in seen["searched"]["patients"]] == ["Zenaida Quiñónez"], (typed, seen["searched"])
        assert seen["errors"] == []
    seen = browse(f"http://{stack.front}/#token={token}", search='nobody "at" all')
    assert seen["searched"]["patients"] == [] and seen["searched"]["empty"] == "No patients match the search."


def test_the_page_asks_for_a_token_and_says_when_it_is_refused(stack):
    seen = browse(f"http://{stack.front}/")
    assert seen["first"]["tokenForm"] and "needs a token" in seen["first"]["message"]
    seen = browse(f"http://{stack.front}/#token=not-a-token")
    assert seen["first"]["tokenForm"] and "token was refused" in seen["first"]["message"], seen["first"]
    assert seen["first"]["patients"] == []


def test_the_page_says_which_service_is_down(own_stack):
    token = own_stack.token("viewer", "e2e-page-outage")
    os.kill(own_stack.pids()["studies-service"], signal.SIGKILL)
    seen = browse(f"http://{own_stack.front}/#token={token}")
    message = seen["first"]["message"]
    assert message and "A service is down" in message and "studies-service" in message, seen["first"]
    assert seen["first"]["patients"] == [] and not seen["first"]["tokenForm"]
