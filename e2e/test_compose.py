"""docker compose cannot run here (no Docker engine), so everything about it
that can be checked without one is checked: the compose file, Envoy's compose
config and the provisioning script agree with each other and with the code."""

import re
from pathlib import Path

import yaml

from conftest import ROOT

SERVICES = {"patients-service": 50051, "studies-service": 50052, "gateway": 50053, "fhir": 50054}
ROLES = {"patients-service": ("clinic_patients", "patients"), "studies-service": ("clinic_studies", "studies")}


def compose():
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def test_compose_runs_postgres_the_three_services_envoy_and_the_credentials():
    services = compose()
    always = {name for name, service in services.items() if not service.get("profiles")}
    assert always == {"postgres", *SERVICES, "envoy", "credentials", "patients-migrate", "studies-migrate"}
    optional = {name for name, service in services.items() if "observability" in service.get("profiles", [])}
    assert optional == {"otel-collector", "jaeger", "prometheus"}


def test_the_observability_profile_scrapes_and_collects_what_the_services_serve():
    services = compose()
    prometheus = yaml.safe_load((ROOT / "deploy" / "observability" / "prometheus.yml").read_text())
    targets = prometheus["scrape_configs"][0]["static_configs"][0]["targets"]
    for name in SERVICES:
        port = services[name]["environment"]["METRICS_ADDR"].rsplit(":", 1)[1]
        assert services[name]["environment"]["METRICS_ADDR"].startswith("0.0.0.0:")
        assert f"{name}:{port}" in targets
    collector = yaml.safe_load((ROOT / "deploy" / "observability" / "otel-collector.yaml").read_text())
    assert collector["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].endswith(":4317")
    assert collector["service"]["pipelines"]["traces"]["exporters"] == ["otlp/jaeger"]


def test_each_service_listens_on_its_contract_port_and_finds_its_peers_by_name():
    services = compose()
    for name, port in SERVICES.items():
        env = services[name]["environment"]
        assert env["LISTEN_ADDR"] == f"0.0.0.0:{port}", name
        assert services[name]["build"]["args"]["SERVICE"] == name
        for peer_var, peer in (("PATIENTS_ADDR", "patients-service"), ("STUDIES_ADDR", "studies-service")):
            if peer_var in env:
                assert env[peer_var] == f"http://{peer}:{SERVICES[peer]}", (name, peer_var)
    assert "STUDIES_ADDR" in services["patients-service"]["environment"]
    assert "PATIENTS_ADDR" in services["studies-service"]["environment"]


def test_each_service_connects_as_its_own_role_which_provisioning_creates():
    """Each schema belongs to an owner role that only its migrate one-shot
    uses; the service connects as a runtime role that owns nothing."""
    services = compose()
    script = (ROOT / "deploy" / "postgres" / "init-roles.sh").read_text()
    for name, (role, schema) in ROLES.items():
        url = services[name]["environment"]["DATABASE_URL"]
        assert re.match(rf"postgres://{role}:[^@]+@postgres:5432/clinic$", url), url
        assert f"create role {role} login" in script and f"create role {role}_owner login" in script
        assert f"create schema {schema} authorization {role}_owner" in script
        job = services[name.replace("-service", "-migrate")]
        assert job["command"] == ["migrate"] and job["build"]["args"]["SERVICE"] == name
        assert re.match(rf"postgres://{role}_owner:[^@]+@postgres:5432/clinic$", job["environment"]["DATABASE_URL"])
        assert job["environment"]["DATABASE_RUNTIME_ROLE"] == role
        assert services[name]["depends_on"][name.replace("-service", "-migrate")]["condition"] == "service_completed_successfully"
        owners = [n for n, s in services.items() if "_owner" in str(s.get("environment", {}).get("DATABASE_URL", ""))]
        assert set(owners) == {"patients-migrate", "studies-migrate"}, "only the migrate step sees an owner's password"
    assert services["postgres"]["environment"]["POSTGRES_DB"] == "clinic"
    assert "pgdata:/var/lib/postgresql/data" in services["postgres"]["volumes"]


def test_services_start_in_order_of_health():
    services = compose()
    for name in SERVICES:
        for dependency in services[name]["depends_on"].values():
            assert dependency["condition"] in ("service_healthy", "service_completed_successfully")
    assert services["envoy"]["depends_on"]["gateway"]["condition"] == "service_healthy"


def test_envoy_publishes_tls_only_and_binds_plaintext_and_admin_to_loopback():
    envoy = compose()["envoy"]
    assert envoy["ports"] == ["8443:8443"]
    assert "./envoy/envoy.compose.yaml:/etc/envoy/envoy.yaml:ro" in envoy["volumes"]
    config = yaml.safe_load((ROOT / "envoy" / "envoy.compose.yaml").read_text())
    assert config["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 9901}
    listeners = {l["name"]: l for l in config["static_resources"]["listeners"]}
    assert listeners["grpc"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 8080}
    assert listeners["grpc_tls"]["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 8443}
    tls = listeners["grpc_tls"]["filter_chains"][0]["transport_socket"]["typed_config"]["common_tls_context"]
    assert "h2" in tls["alpn_protocols"]
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    for cluster, service in (("patients", "patients-service"), ("studies", "studies-service"), ("gateway", "gateway"), ("fhir", "fhir")):
        address = clusters[cluster]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
        assert (address["address"], address["port_value"]) == (service, SERVICES[service])


def mounts(service) -> dict:
    """{volume or file: mount path} of a compose service."""
    return {v.split(":")[0]: v.split(":")[1] for v in service.get("volumes", [])}


def jwt_provider(config_file: str) -> dict:
    config = yaml.safe_load((ROOT / "envoy" / config_file).read_text())
    filters = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
    return next(f for f in filters if f["name"] == "envoy.filters.http.jwt_authn")["typed_config"]["providers"]["clinic"]


def test_each_secret_is_mounted_only_where_it_is_read():
    """The signing key stays with what mints tokens; the services get the
    public JWKS only (Envoy fetches it from the gateway), studies-service its
    own token, Envoy its TLS key, each private file owned by its reader."""
    services = compose()
    holders = {}
    for name, service in services.items():
        for volume in mounts(service):
            if not volume.startswith("."):
                holders.setdefault(volume, set()).add(name)
    assert holders["signing"] == {"credentials"}
    assert holders["envoy-tls"] == {"credentials", "envoy"}
    assert holders["service-token"] == {"credentials", "studies-service"}
    assert holders["jwks"] == {"credentials", *SERVICES}
    for name in SERVICES:
        env = services[name]["environment"]
        assert env["JWT_JWKS_FILE"] == "/etc/clinic/jwks/jwks.json", name
        assert mounts(services[name])["jwks"] == "/etc/clinic/jwks", name
        assert services[name]["depends_on"]["credentials"]["condition"] == "service_healthy"
    assert services["studies-service"]["environment"]["SERVICE_TOKEN_FILE"] == "/etc/clinic/service/token"
    command = services["credentials"]["command"]
    assert command[:3] == ["credentials", "--home", "/etc/clinic"]
    assert command[command.index("--tls-owner") + 1] == "101:101", "Envoy's image runs as uid 101"
    uid = re.search(r"useradd [^\n]*--uid (\d+)", (ROOT / "Dockerfile").read_text()).group(1)
    assert command[command.index("--token-owner") + 1] == f"{uid}:{uid}", "the services' user"
    provider = jwt_provider("envoy.compose.yaml")
    assert "local_jwks" not in provider
    assert provider["remote_jwks"]["http_uri"]["cluster"] == "gateway"
    assert provider["remote_jwks"]["http_uri"]["uri"].endswith("/.well-known/jwks.json")
    sds = yaml.safe_load((ROOT / "envoy" / "tls-sds.yaml").read_text())["resources"][0]["tls_certificate"]
    assert sds["private_key"]["filename"].startswith(mounts(services["envoy"])["envoy-tls"])


def test_the_images_carry_what_envoy_and_the_gateway_read():
    """Envoy's image holds the descriptor set its transcoder reads, made by
    the build; the gateway serves the page the image's web stage built."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    config = yaml.safe_load((ROOT / "envoy" / "envoy.compose.yaml").read_text())
    filters = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
    transcoder = next(f for f in filters if f["name"] == "envoy.filters.http.grpc_json_transcoder")["typed_config"]
    assert f"COPY --from=build /out/clinic.pb {transcoder['proto_descriptor']}" in dockerfile
    assert "clinic-dev descriptor --out /out/clinic.pb" in dockerfile
    assert compose()["envoy"]["build"]["target"] == "envoy" and "FROM envoyproxy/envoy:v1.40.0 AS envoy" in dockerfile
    web_root = compose()["gateway"]["environment"]["WEB_ROOT"]
    assert f"COPY --from=web /src/web/dist {web_root}" in dockerfile


def test_the_keycloak_variant_only_swaps_the_identity_provider():
    """deploy/keycloak's override names only services of the base file (or
    its own), mounts files that exist, points every verifier at the JWKS its
    sync container writes, keeps studies-service's token to it alone, and
    hardens Keycloak: loopback only, brute-force protection, no password
    grant for the public client."""
    base = compose()
    override = yaml.safe_load((ROOT / "deploy" / "keycloak" / "docker-compose.keycloak.yml").read_text())["services"]
    assert set(override) - set(base) == {"keycloak", "idp-sync"}
    for service in override.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), source
    provider = jwt_provider("envoy.keycloak.yaml")
    for name in SERVICES:
        env = override[name]["environment"]
        assert env["JWT_JWKS_FILE"] == "/etc/clinic/idp/jwks.json"
        assert env["JWT_ISSUER"] == provider["issuer"]
    token_holders = {n for n, s in override.items() if "idp-token" in mounts(s)}
    assert token_holders == {"idp-sync", "studies-service"}
    assert all(p.startswith("127.0.0.1:") for p in override["keycloak"]["ports"]), override["keycloak"]["ports"]
    realm = __import__("json").loads((ROOT / "deploy" / "keycloak" / "clinic-realm.json").read_text())
    assert {r["name"] for r in realm["roles"]["realm"]} == {"viewer", "clinician", "admin", "service"}
    assert realm["bruteForceProtected"] is True
    public = next(c for c in realm["clients"] if c["clientId"] == "clinic")
    assert public["directAccessGrantsEnabled"] is False, "no password grant"


def test_the_dockerfile_builds_every_binary_compose_runs():
    dockerfile = (ROOT / "Dockerfile").read_text()
    for binary in [*SERVICES, "clinic-health", "clinic-dev"]:
        assert f"--bin {binary}" in dockerfile
    assert "USER clinic" in dockerfile and "HEALTHCHECK" in dockerfile


def test_the_container_healthcheck_probe_answers_for_serving_and_dead_services(stack):
    """`clinic-health` is the images' HEALTHCHECK; run it against real services."""
    import subprocess

    probe = ROOT / "target" / "debug" / "clinic-health"
    ok = subprocess.run([str(probe), f"127.0.0.1:{stack.ports['PATIENTS_PORT']}"], capture_output=True, timeout=10)
    assert ok.returncode == 0, ok.stderr
    named = subprocess.run([str(probe), f"127.0.0.1:{stack.ports['GATEWAY_PORT']}", "clinic.gateway.v1.GatewayService"], capture_output=True, timeout=10)
    assert named.returncode == 0, named.stderr
    from conftest import free_port

    dead = subprocess.run([str(probe), f"127.0.0.1:{free_port()}"], capture_output=True, timeout=10)
    assert dead.returncode == 1


def test_compose_restarts_services_waits_out_their_drain_and_pins_images():
    services = compose()
    for name, service in services.items():
        one_shot = name.endswith("-migrate")
        assert service["restart"] == ("on-failure" if one_shot else "unless-stopped"), name
        if "image" in service:
            assert ":" in service["image"] and "latest" not in service["image"], service["image"]
    for name in SERVICES:
        grace = int(services[name]["stop_grace_period"].rstrip("s"))
        assert grace > 5 + 10, f"{name}: pre-stop 5 s and drain 10 s must fit in {grace} s"


def test_compose_secrets_have_no_silent_defaults():
    text = (ROOT / "docker-compose.yml").read_text()
    for secret in ("POSTGRES_PASSWORD", "PATIENTS_DB_PASSWORD", "STUDIES_DB_PASSWORD", "PATIENTS_DB_OWNER_PASSWORD", "STUDIES_DB_OWNER_PASSWORD"):
        assert f"${{{secret}:-" not in text, secret
        assert f"${{{secret}:?" in text, secret
    assert ".env" in (ROOT / ".dockerignore").read_text().split()
    assert "/.env" in (ROOT / ".gitignore").read_text().split()
