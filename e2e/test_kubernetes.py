"""No cluster runs here, so the Kubernetes manifests are checked the way a
cluster would first see them, and against the code they deploy: every
overlay renders with `kubectl kustomize` (after the local overlay's own
secrets script), every object passes `kubernetes-validate --strict` (the
CloudNativePG `Cluster`, a custom resource the validator does not know, is
checked for what Clinic relies on instead), and the probes, ports,
environment, images, users and Envoy's config agree with the code and the
Dockerfile; the health names the probes ask are asked of a running system."""

import base64
import json
import os
import re
import shutil
import subprocess

import pytest
import yaml

from conftest import CLINIC_DEV, ROOT, VENV_BIN
from test_config import ALSO_READ, settings

K8S = ROOT / "deploy" / "k8s"
SERVICES = ("patients-service", "studies-service", "gateway", "fhir")
# What each readiness probe asks: the gateway and the FHIR endpoint their own
# name (their empty name follows the services behind them, or nothing).
READY_NAMES = {"gateway": "clinic.gateway.v1.GatewayService", "fhir": "clinic.fhir"}
DATABASE_OWNERS = {"patients-service": ("clinic_patients", "patients"), "studies-service": ("clinic_studies", "studies")}
# Standard variables the services read through libraries (log filter and
# format are the code's own and listed by --help).
LIBRARY_VARIABLES = {"OTEL_SERVICE_NAME", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG"}


def kubectl():
    path = shutil.which("kubectl")
    assert path, "kubectl is needed to render deploy/k8s (kubectl kustomize); install it (see README, Deployment)"
    return path


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """{overlay: [objects]} rendered from a copy of deploy/k8s, with the local
    overlay's secrets made by its own script, as its README block says."""
    work = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, work, ignore=shutil.ignore_patterns("secrets"))
    made = subprocess.run([str(work / "overlays" / "local" / "make-secrets.sh")], env=dict(os.environ, CLINIC_DEV=str(CLINIC_DEV)),
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    out = {}
    for overlay in ("base", "overlays/local"):
        result = subprocess.run([kubectl(), "kustomize", str(work / overlay)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"{overlay}: {result.stderr}"
        out[overlay] = [o for o in yaml.safe_load_all(result.stdout) if o]
    return out


def by_kind(objects, kind):
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def is_custom(o):
    return "." in o["apiVersion"].split("/")[0] and not o["apiVersion"].split("/")[0].endswith(".k8s.io")


def test_every_object_passes_strict_schema_validation(rendered, tmp_path):
    for overlay, objects in rendered.items():
        standard = [o for o in objects if not is_custom(o)]
        path = tmp_path / (overlay.replace("/", "-") + ".yaml")
        path.write_text(yaml.safe_dump_all(standard))
        result = subprocess.run([str(VENV_BIN / "kubernetes-validate"), "--strict", "--quiet", str(path)], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{overlay}:\n{result.stdout}{result.stderr}"
        kinds = {o["kind"] for o in standard}
        assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy", "ConfigMap"} <= kinds
    custom = {o["kind"] for o in rendered["overlays/local"] if is_custom(o)}
    assert custom == {"Cluster"}, "only CloudNativePG's Cluster is kept out of the strict check"


def test_strict_validation_rejects_a_misspelt_field(tmp_path):
    """The validator is not a rubber stamp: an unknown field fails."""
    deployment = next(yaml.safe_load_all((K8S / "base" / "patients-service.yaml").read_text()))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = deployment["spec"]["template"]["spec"]["containers"][0].pop("readinessProbe")
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(deployment))
    result = subprocess.run([str(VENV_BIN / "kubernetes-validate"), "--strict", "--quiet", str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0


def container(deployment):
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(c):
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def port_of(address):
    return int(address.rsplit(":", 1)[1])


def test_services_listen_on_the_codes_ports_and_probe_the_health_names_the_code_serves(rendered):
    deployments = by_kind(rendered["base"], "Deployment")
    services = by_kind(rendered["base"], "Service")
    for name in SERVICES:
        code = settings(name)
        c = container(deployments[name])
        env = env_of(c)
        grpc_port, metrics_port = port_of(code["LISTEN_ADDR"]), port_of(code["METRICS_ADDR"])
        assert env["LISTEN_ADDR"] == f"0.0.0.0:{grpc_port}", name
        assert env["METRICS_ADDR"] == f"0.0.0.0:{metrics_port}", name
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports == {"grpc": grpc_port, "metrics": metrics_port}, name
        assert c["startupProbe"]["grpc"] == {"port": grpc_port, "service": "liveness"}, name
        assert c["livenessProbe"]["grpc"] == {"port": grpc_port, "service": "liveness"}, name
        readiness = c["readinessProbe"]["grpc"]
        assert readiness["port"] == grpc_port
        expected = READY_NAMES.get(name, "")
        assert readiness.get("service", "") == expected, name
        # Headless, so a caller's DNS look-up sees every pod.
        service = services[name]
        assert service["spec"]["clusterIP"] == "None", name
        assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"grpc": grpc_port, "metrics": metrics_port}
        assert service["spec"]["selector"] == deployments[name]["spec"]["selector"]["matchLabels"]


def test_each_service_sets_only_variables_it_knows_and_finds_its_peers_by_service_name(rendered):
    deployments = by_kind(rendered["base"], "Deployment")
    config = by_kind(rendered["base"], "ConfigMap")
    shared = next(cm for n, cm in config.items() if n.startswith("clinic-config"))["data"]
    ports = {name: port_of(settings(name)["LISTEN_ADDR"]) for name in SERVICES}
    for name in SERVICES:
        code = settings(name)
        c = container(deployments[name])
        env = env_of(c)
        unknown = (set(env) | set(shared)) - set(code) - ALSO_READ - LIBRARY_VARIABLES
        assert unknown == set(), (name, unknown)
        for variable, peer in (("PATIENTS_ADDR", "patients-service"), ("STUDIES_ADDR", "studies-service")):
            if variable in code and variable in env:
                assert env[variable] == f"http://{peer}:{ports[peer]}", (name, variable)
        needed = {"PATIENTS_ADDR", "STUDIES_ADDR"} & set(code)
        assert needed <= set(env), (name, needed - set(env))
        if name in DATABASE_OWNERS:
            assert env["DATABASE_URL"] == {"secretKeyRef": {"name": f"clinic-{name.split('-')[0]}-db", "key": "DATABASE_URL"}}
        else:
            assert "DATABASE_URL" not in env
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        assert os.path.dirname(env["JWT_JWKS_FILE"]) in mounts
    token = env_of(container(deployments["studies-service"]))["SERVICE_TOKEN_FILE"]
    assert os.path.dirname(token) in {m["mountPath"] for m in container(deployments["studies-service"])["volumeMounts"]}


def test_images_and_users_are_the_dockerfiles(rendered):
    dockerfile = (ROOT / "Dockerfile").read_text()
    uid = int(re.search(r"useradd [^\n]*--uid (\d+)", dockerfile).group(1))
    assert "FROM envoyproxy/envoy:" in dockerfile and "AS envoy" in dockerfile
    deployments = by_kind(rendered["base"], "Deployment")
    for name in SERVICES:
        assert container(deployments[name])["image"] == f"clinic/{name}:0.1.0"
        assert deployments[name]["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == uid
    assert container(deployments["envoy"])["image"] == "clinic/envoy:0.1.0"
    local = by_kind(rendered["overlays/local"], "Deployment")
    assert {container(d)["image"] for d in local.values()} == {f"clinic/{n}:dev" for n in (*SERVICES, "envoy")}


def test_every_pod_is_hardened_sized_replicated_autoscaled_and_budgeted(rendered):
    objects = rendered["overlays/local"]
    deployments = by_kind(objects, "Deployment")
    hpas, pdbs = by_kind(objects, "HorizontalPodAutoscaler"), by_kind(objects, "PodDisruptionBudget")
    drain_ms = int(settings("patients-service")["SHUTDOWN_PRE_STOP_DELAY_MS"]) + int(settings("patients-service")["SHUTDOWN_DRAIN_TIMEOUT_MS"])
    assert set(deployments) == {*SERVICES, "envoy"}
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        assert deployment["spec"]["replicas"] == 2, name
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["terminationGracePeriodSeconds"] * 1000 > drain_ms, name
        c = container(deployment)
        assert c["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}, name
        assert set(c["resources"]["requests"]) == {"cpu", "memory"} and set(c["resources"]["limits"]) == {"cpu", "memory"}, name
        assert {"startupProbe", "readinessProbe", "livenessProbe"} <= set(c), name
        assert hpas[name]["spec"]["scaleTargetRef"]["name"] == name and hpas[name]["spec"]["minReplicas"] == 2
        assert pdbs[name]["spec"]["selector"] == deployment["spec"]["selector"]
    namespace = by_kind(objects, "Namespace")["clinic"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def reachable(policies, pods, port, source=None):
    """Whether some ingress rule of the policies selecting `pods` admits
    `source` (pod labels; None: from outside the namespace) on `port`."""
    for policy in policies.values():
        selector = policy["spec"]["podSelector"].get("matchLabels", {})
        if not selector.items() <= pods.items() or "Ingress" not in policy["spec"]["policyTypes"]:
            continue
        for rule in policy["spec"].get("ingress", []):
            if "ports" in rule and port not in {p["port"] for p in rule["ports"]}:
                continue
            if "from" not in rule:
                return True
            for peer in rule["from"]:
                if source is not None and "podSelector" in peer and "namespaceSelector" not in peer and peer["podSelector"].get("matchLabels", {}).items() <= source.items():
                    return True
    return False


def test_network_policies_let_only_envoy_in_and_only_the_database_owners_out_to_postgres(rendered):
    objects = rendered["overlays/local"]
    policies = by_kind(objects, "NetworkPolicy")
    assert policies["default-deny"]["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    labels = {name: d["spec"]["template"]["metadata"]["labels"] for name, d in by_kind(objects, "Deployment").items()}
    ports = {name: port_of(settings(name)["LISTEN_ADDR"]) for name in SERVICES}
    assert reachable(policies, labels["envoy"], 8443)
    for name in SERVICES:
        assert not reachable(policies, labels[name], ports[name]), f"{name} is reachable from outside"
        assert reachable(policies, labels[name], ports[name], labels["envoy"]), f"Envoy cannot reach {name}"
    assert reachable(policies, labels["patients-service"], ports["patients-service"], labels["studies-service"])
    assert reachable(policies, labels["studies-service"], ports["studies-service"], labels["patients-service"])
    assert not reachable(policies, labels["patients-service"], ports["patients-service"], {"app.kubernetes.io/name": "intruder"})
    database = {"cnpg.io/cluster": "clinic-db"}
    for name in DATABASE_OWNERS:
        assert reachable(policies, database, 5432, labels[name])
    for name in ("gateway", "fhir", "envoy"):
        assert not reachable(policies, database, 5432, labels[name]), f"{name} reaches PostgreSQL"
        egress = [r for p in policies.values() if p["spec"]["podSelector"].get("matchLabels", {}).items() <= labels[name].items() for r in p["spec"].get("egress", [])]
        assert all(5432 not in {port["port"] for port in r.get("ports", [])} for r in egress), f"{name} may connect to PostgreSQL"


def test_envoys_config_is_the_templates_and_finds_what_its_pod_mounts(rendered):
    objects = rendered["base"]
    config_map = next(cm for n, cm in by_kind(objects, "ConfigMap").items() if n.startswith("envoy-config"))
    committed = (K8S / "base" / "envoy" / "envoy.yaml").read_text()
    assert config_map["data"]["envoy.yaml"] == committed
    assert committed.splitlines()[1:] == (ROOT / "envoy" / "envoy.compose.yaml").read_text().splitlines()[1:]
    config = yaml.safe_load(committed)
    envoy = by_kind(objects, "Deployment")["envoy"]
    c = container(envoy)
    assert c["args"][:2] == ["-c", "/etc/envoy/config/envoy.yaml"]
    volumes = {v["name"]: v for v in envoy["spec"]["template"]["spec"]["volumes"]}
    files = set()
    for mount in c["volumeMounts"]:
        volume, path = volumes[mount["name"]], mount["mountPath"]
        if "subPath" in mount:
            files.add(path)
        elif "secret" in volume and "items" in volume["secret"]:
            files |= {f"{path}/{item['path']}" for item in volume["secret"]["items"]}
    assert not any("secret" in v and v["secret"]["secretName"] == "clinic-jwks" for v in volumes.values()), \
        "Envoy fetches the trusted keys from the gateway; it mounts no JWKS"
    text = json.dumps(config)
    sds_path = "/etc/envoy/tls-sds.yaml"
    assert sds_path in text and sds_path in files
    sds = (K8S / "base" / "envoy" / "tls-sds.yaml").read_text()
    assert config_map["data"]["tls-sds.yaml"] == sds
    for referenced in ("/etc/clinic/tls/server.pem", "/etc/clinic/tls/server-key.pem"):
        assert referenced in sds and referenced in files, referenced
    assert "COPY --from=build /out/clinic.pb /etc/envoy/clinic.pb" in (ROOT / "Dockerfile").read_text()
    assert "/etc/envoy/clinic.pb" in text
    listeners = {l["name"]: l for l in config["static_resources"]["listeners"]}
    tls_port = next(l["address"]["socket_address"]["port_value"] for l in listeners.values() if l["address"]["socket_address"]["address"] == "0.0.0.0")
    assert {p["containerPort"] for p in c["ports"]} == {tls_port}
    services = by_kind(objects, "Service")
    for cluster in config["static_resources"]["clusters"]:
        for endpoint in cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]:
            address = endpoint["endpoint"]["address"]["socket_address"]
            if address["address"] in services:
                assert cluster["type"] == "STRICT_DNS"
                assert address["port_value"] in {p["port"] for p in services[address["address"]]["spec"]["ports"]}


def test_the_cloudnative_pg_cluster_makes_the_roles_and_schemas_the_services_use(rendered):
    objects = rendered["overlays/local"]
    cluster = by_kind(objects, "Cluster")["clinic-db"]
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    assert cluster["spec"]["instances"] >= 2
    sql = "\n".join(cluster["spec"]["bootstrap"]["initdb"]["postInitApplicationSQL"])
    assert cluster["spec"]["bootstrap"]["initdb"]["database"] == "clinic"
    secrets = by_kind(objects, "Secret")
    roles = {r["name"]: r for r in cluster["spec"]["managed"]["roles"]}
    tls = "sslmode=verify-full&sslrootcert=/etc/clinic/db-ca/ca.crt"
    for name, (role, schema) in DATABASE_OWNERS.items():
        owner = f"{role}_owner"
        assert f"create role {role} login" in sql and f"create role {owner} login" in sql
        assert f"create schema {schema} authorization {owner}" in sql, "the owner role owns the schema, the service's role nothing"
        for login, secret_prefix in ((role, f"clinic-{schema}-db-"), (owner, f"clinic-{schema}-db-owner-")):
            password_secret = roles[login]["passwordSecret"]["name"]
            assert password_secret in secrets, "CloudNativePG names the role's Secret literally: it must keep its name"
            assert secrets[password_secret]["type"] == "kubernetes.io/basic-auth"
            url_secret = next(s for n, s in secrets.items() if n.startswith(secret_prefix) and (login == owner or "owner" not in n))
            url = base64.b64decode(url_secret["data"]["DATABASE_URL"]).decode()
            password = base64.b64decode(secrets[password_secret]["data"]["password"]).decode()
            assert url == f"postgres://{login}:{password}@{cluster['metadata']['name']}-rw:5432/clinic?{tls}"


def test_every_database_url_verifies_the_servers_certificate_against_a_mounted_ca(rendered):
    """Services and migrate Jobs connect with sslmode=verify-full and the
    CA file their pod mounts; the owners' URLs reach only the Jobs."""
    objects = rendered["overlays/local"]
    secrets = by_kind(objects, "Secret")
    pods = {n: d["spec"]["template"]["spec"] for n, d in by_kind(objects, "Deployment").items()}
    pods |= {n: j["spec"]["template"]["spec"] for n, j in by_kind(objects, "Job").items()}
    users = {}
    for name, pod in pods.items():
        for c in pod["containers"]:
            url_ref = env_of(c).get("DATABASE_URL")
            if not url_ref:
                continue
            secret_name = url_ref["secretKeyRef"]["name"]
            users.setdefault(secret_name, set()).add(name)
            url = base64.b64decode(secrets[secret_name]["data"]["DATABASE_URL"]).decode()
            assert "sslmode=verify-full" in url, (name, "sslmode")
            ca = re.search(r"sslrootcert=([^&]+)", url).group(1)
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            volume = next(v for v in pod["volumes"] if v["name"] == mounts[os.path.dirname(ca)])
            assert volume["secret"]["secretName"] == "clinic-db-ca", name
            assert {i["path"] for i in volume["secret"]["items"]} == {os.path.basename(ca)}
    owners = {n: u for n, u in users.items() if "-owner" in n}
    assert owners and all(u <= {"patients-migrate", "studies-migrate"} for u in owners.values()), users


def test_each_schema_is_migrated_by_a_job_as_its_owner_before_its_service(rendered):
    objects = rendered["overlays/local"]
    jobs = by_kind(objects, "Job")
    assert set(jobs) == {"patients-migrate", "studies-migrate"}
    for name, (role, _) in DATABASE_OWNERS.items():
        job = jobs[name.replace("-service", "-migrate")]
        pod = job["spec"]["template"]["spec"]
        c = pod["containers"][0]
        assert c["image"] == f"clinic/{name}:dev" and c["args"] == ["migrate"]
        env = env_of(c)
        assert env["DATABASE_RUNTIME_ROLE"] == role
        assert env["DATABASE_URL"]["secretKeyRef"]["name"].startswith(f"clinic-{name.split('-')[0]}-db-owner")
        config = next(cm for n, cm in by_kind(objects, "ConfigMap").items() if n.startswith("clinic-migrate-config"))["data"]
        assert set(env) | set(config) <= set(settings(f"{name} migrate")), "only variables `migrate --help` lists"
        assert pod["automountServiceAccountToken"] is False and pod["securityContext"]["runAsNonRoot"] is True
        assert c["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
        assert job["spec"]["ttlSecondsAfterFinished"] > 0, "a finished Job goes, so the next release's apply runs it again"
    policies = by_kind(objects, "NetworkPolicy")
    assert reachable(policies, {"cnpg.io/cluster": "clinic-db"}, 5432, {"app.kubernetes.io/component": "migrate"})


def grpc_health(port, service):
    return subprocess.run([str(VENV_BIN / "grpcurl"), "-plaintext", "-d", json.dumps({"service": service}), f"127.0.0.1:{port}", "grpc.health.v1.Health/Check"],
                          capture_output=True, text=True, timeout=30)


def test_the_health_names_the_probes_ask_answer_serving_on_a_running_system(rendered, stack):
    deployments = by_kind(rendered["base"], "Deployment")
    local_ports = {"patients-service": stack.ports["PATIENTS_PORT"], "studies-service": stack.ports["STUDIES_PORT"], "gateway": stack.ports["GATEWAY_PORT"],
                   "fhir": stack.ports["FHIR_PORT"]}
    for name in SERVICES:
        c = container(deployments[name])
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            result = grpc_health(local_ports[name], c[probe]["grpc"].get("service", ""))
            assert result.returncode == 0 and '"SERVING"' in result.stdout, (name, probe, result.stdout, result.stderr)
    assert "NotFound" in grpc_health(local_ports["gateway"], "no-such-name").stderr
