"""`make bench TARGET=…` measures a running system as its users reach it:
through Envoy, with a token of the system's own development key, reporting
the build profile the services say they run, writing nothing."""

import json
import os
import subprocess

from conftest import ROOT


def test_the_bench_measures_a_running_system_through_envoy(stack, tmp_path):
    before = stack.grpcurl("clinic.patients.v1.PatientService/ListPatients", data='{"page_size": 1000}').stdout
    out = tmp_path / "report.json"
    run = subprocess.run(
        [str(ROOT / "target" / "debug" / "clinic-bench"), "--seconds", "1", "--concurrency", "4", "--connections", "1",
         "--target", f"localhost:{stack.ports['ENVOY_PORT']}", "--target-metrics", f"127.0.0.1:{stack.ports['PATIENTS_METRICS_PORT']}",
         "--out", str(out)],
        cwd=ROOT, env=dict(os.environ, CLINIC_HOME=str(stack.home)), capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    report = json.loads((tmp_path / "target.json").read_text())
    assert report["build"] == {"profile": "debug", "version": "0.1.0"}
    scenarios = {s["name"]: s for s in report["scenarios"]}
    assert set(scenarios) == {"get_patient", "list_patients", "list_patients_with_studies"}
    for name, scenario in scenarios.items():
        assert scenario["rps"] > 0 and scenario["errors_by_code"] == {}, (name, scenario)
    after = stack.grpcurl("clinic.patients.v1.PatientService/ListPatients", data='{"page_size": 1000}').stdout
    assert json.loads(after) == json.loads(before), "the bench wrote to the system it measured"
