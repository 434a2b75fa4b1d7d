"""End-to-end fixtures: the whole system started the way `make up` starts it.

Each `Stack` runs `clinic-dev up` on free ports with its own CLINIC_HOME, so
stacks run side by side and never touch a developer's `.local/` data. The
Python client is generated from `proto/` with grpcio-tools at session start.
Calls carry tokens made with `make -s token`, as the README tells users to.
"""

import collections
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".local" / "venv" / "bin"
CLINIC_DEV = ROOT / "target" / "debug" / "clinic-dev"
# The one foreign origin the shared stack lets browsers call it from.
ALLOWED_ORIGIN = "https://app.clinic.example"
READY = re.compile(r"clinic-dev: ready on localhost:(\d+)")


_HANDED_OUT = set()


def free_port() -> int:
    """A free port for a server that binds it later, picked below the kernel's
    ephemeral range so no outgoing connection can take it meanwhile, and
    never one handed out before in this session (two picks of the same free
    port for one stack made a service fail to bind, once in a few hundred
    stacks)."""
    import random

    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low = int(f.read().split()[0])
    floor = min(10000, low - 1000)
    for _ in range(200):
        port = random.randrange(floor, low)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                _HANDED_OUT.add(port)
                return port
            except OSError:
                continue
    raise RuntimeError("no free port below the ephemeral range")


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


class _CallDetails(collections.namedtuple("_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")), grpc.ClientCallDetails):
    pass


class Bearer(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds `authorization: Bearer <token>` to every call of a channel."""

    def __init__(self, token: str):
        self.header = ("authorization", f"Bearer {token}")

    def _with_token(self, details):
        return _CallDetails(details.method, details.timeout, [*(details.metadata or []), self.header], details.credentials, details.wait_for_ready, details.compression)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._with_token(details), request)


class Stack:
    """One running system: Postgres, three services, the FHIR endpoint and Envoy."""

    def __init__(self, home: Path, restart_delay_ms: int = 1000, env: dict = None):
        self.home = home
        self.ports = {name: free_port() for name in ("ENVOY_PORT", "ENVOY_TLS_PORT", "ENVOY_ADMIN_PORT", "PATIENTS_PORT", "STUDIES_PORT", "GATEWAY_PORT",
                                                   "PATIENTS_METRICS_PORT", "STUDIES_METRICS_PORT", "GATEWAY_METRICS_PORT",
                                                   "FHIR_PORT", "FHIR_METRICS_PORT")}
        self._tokens = {}
        env = dict(os.environ, CLINIC_HOME=str(home), RESTART_DELAY_MS=str(restart_delay_ms), ENVOY_BIN=str(VENV_BIN / "envoy"), **{k: str(v) for k, v in self.ports.items()}, **(env or {}))
        env.pop("DATABASE_URL", None)
        self.log = open(home / "clinic-dev.out", "w+")
        self.process = subprocess.Popen([str(CLINIC_DEV), "up"], cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.output = self._wait_ready(timeout=180)
        self.front = f"localhost:{self.ports['ENVOY_PORT']}"
        self.target = f"127.0.0.1:{self.ports['ENVOY_PORT']}"
        self.tls_front = f"localhost:{self.ports['ENVOY_TLS_PORT']}"
        self.ca = home / "tls" / "ca.pem"

    def _wait_ready(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.log.seek(0)
            text = self.log.read()
            if READY.search(text):
                return text
            if self.process.poll() is not None:
                raise RuntimeError(f"clinic-dev exited during start-up:\n{text}")
            time.sleep(0.2)
        raise RuntimeError(f"clinic-dev not ready within {timeout}s:\n{text}")

    def pids(self) -> dict:
        run = self.home / "run"
        return {p.stem: int(p.read_text()) for p in run.glob("*.pid")}

    def logs(self) -> dict:
        """Every log of the run: each process's, and PostgreSQL's own."""
        logs = {p.name: p.read_text(errors="replace") for p in (self.home / "logs").glob("*.log")}
        data = self.data_dir()
        if data:
            for log in data.rglob("*.log"):
                logs[f"postgres:{log.name}"] = log.read_text(errors="replace")
        return logs

    def data_dir(self):
        match = re.search(r"^\s+data\s+(\S+)$", self.output, re.M)
        return Path(match.group(1)) if match else None

    def examples(self) -> list:
        return [line.strip() for line in self.output.splitlines() if line.strip().startswith("grpcurl ")]

    def token(self, role: str = "admin", subject: str = None, ttl: str = None) -> str:
        """A token made the way the README says: `make -s token ROLE=… SUBJECT=…`."""
        key = (role, subject or f"e2e-{role}", ttl)
        if key not in self._tokens:
            args = ["make", "-s", "token", f"ROLE={role}", f"SUBJECT={key[1]}"] + ([f"TTL={ttl}"] if ttl else [])
            out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120, env=dict(os.environ, CLINIC_HOME=str(self.home)))
            assert out.returncode == 0, out.stderr
            lines = out.stdout.splitlines()
            assert len(lines) == 1, f"make -s token printed {len(lines)} lines: {out.stdout!r}"
            self._tokens[key] = lines[0]
        return self._tokens[key]

    def channel(self, role: str = "admin", token: str = None):
        """A grpc channel to Envoy whose every call carries a token of `role`
        (or `token`)."""
        return grpc.intercept_channel(grpc.insecure_channel(self.target), Bearer(token or self.token(role)))

    def grpcurl(self, *args, data=None, check=True, headers=(), role="admin", token=None, tls=False) -> subprocess.CompletedProcess:
        """grpcurl through Envoy (plaintext, or TLS trusting the local CA),
        as a caller of `role`, with `token`, or with no token (role=None)."""
        cmd = [str(VENV_BIN / "grpcurl")] + (["-cacert", str(self.ca)] if tls else ["-plaintext"])
        if token or role:
            cmd += ["-H", f"authorization: Bearer {token or self.token(role)}"]
        for header in headers:
            cmd += ["-H", header]
        if data is not None:
            cmd += ["-d", data]
        cmd += [self.tls_front if tls else self.target, *args]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        if check and result.returncode != 0:
            raise AssertionError(f"{shlex.join(cmd)} failed:\n{result.stdout}{result.stderr}")
        return result

    def stop(self, sig=signal.SIGINT, timeout: float = 60) -> int:
        """Stops the launcher as Ctrl-C would; returns its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self.log.close()

    def cleanup(self):
        if self.process.poll() is None:
            self.stop()
        data = self.data_dir()
        if data and str(data).startswith("/var/tmp/clinic-postgres-"):
            subprocess.run(["rm", "-rf", str(data)], check=False)


@pytest.fixture(scope="session")
def pb(tmp_path_factory):
    """The Python client generated from proto/ with grpcio-tools."""
    import grpc_tools
    from grpc_tools import protoc

    out = tmp_path_factory.mktemp("generated")
    includes = Path(grpc_tools.__file__).parent / "_proto"
    files = [str(p.relative_to(ROOT / "proto")) for p in (ROOT / "proto").rglob("*.proto")]
    code = protoc.main(["protoc", f"-I{ROOT / 'proto'}", f"-I{includes}", f"--python_out={out}", f"--grpc_python_out={out}", *files])
    assert code == 0, "grpcio-tools could not generate the client"
    sys.path.insert(0, str(out))
    import importlib

    modules = {
        "patients": importlib.import_module("clinic.patients.v1.patients_pb2"),
        "patients_grpc": importlib.import_module("clinic.patients.v1.patients_pb2_grpc"),
        "studies": importlib.import_module("clinic.studies.v1.studies_pb2"),
        "studies_grpc": importlib.import_module("clinic.studies.v1.studies_pb2_grpc"),
        "gateway": importlib.import_module("clinic.gateway.v1.gateway_pb2"),
        "gateway_grpc": importlib.import_module("clinic.gateway.v1.gateway_pb2_grpc"),
        "audit": importlib.import_module("clinic.audit.v1.audit_pb2"),
        "audit_grpc": importlib.import_module("clinic.audit.v1.audit_pb2_grpc"),
    }
    return type("Generated", (), modules)


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    """One system shared by the tests that leave it as they found it."""
    s = Stack(tmp_path_factory.mktemp("stack"), env={"CORS_ALLOWED_ORIGINS": ALLOWED_ORIGIN})
    yield s
    s.cleanup()


@pytest.fixture
def own_stack(tmp_path):
    """A system for one test that kills or stops parts of it."""
    s = Stack(tmp_path, restart_delay_ms=3000)
    yield s
    s.cleanup()
