"""The README and docs/ stay true to the tree: every file path, `make`
target and upper-case name (environment variable, error reason, metric
label) they mention exists, and the README's "Try it" block runs as shown
against a running stack."""

import os
import re
import subprocess

from conftest import ROOT, VENV_BIN
from test_config import known

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Made by a build or a run, not committed.
GENERATED = ("target/", ".local/", "web/dist", "web/src/gen")
# A path of a URL, a media type, a proto package, a placeholder.
NOT_A_FILE = re.compile(r"^(/|[a-z]+://)|^(application|text|image)/|^[^/]*\.[^/]*/|^[A-Z/]+$|[<>{}*…$ =|,()]|^\.\.?/")
FILE_LIKE = re.compile(r"^[\w.@-]+(/[\w.@-]+)+/?$|^[\w-]+\.(rs|sql|proto|yaml|yml|md|py|ts|mjs|toml|json|sh|tmpl|csv|html|css|png)$")
# Names the docs mention that are not this tree's: HTTP and gRPC standards,
# other tools' settings.
# Files of other projects, or made at run time.
OUTSIDE_FILES = {"CONTRACT.md", "google/rpc/error_details.proto", "envoyproxy/envoy", "jwks.json"}
OUTSIDE = {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SERVICE_NAME", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG", "PG_BIN"}


def backticked(text: str):
    return re.findall(r"`([^`\n]+)`", text)


def sources() -> str:
    """Every committed text file the names could come from."""
    keep = [f for f in tracked() if not f.endswith(".md") and not f.startswith("docs/") and (ROOT / f).is_file()]
    texts = []
    for name in keep:
        try:
            texts.append((ROOT / name).read_text())
        except UnicodeDecodeError:
            continue
    return "\n".join(texts)


def tracked() -> list:
    return subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()


def test_every_path_the_docs_name_exists():
    """A path from the root (or proto/), or the tail of one (`storage/cascade.rs`
    in a crate's row)."""
    files = tracked()
    missing = []
    for doc in DOCS:
        for token in backticked(doc.read_text()):
            token = token.strip().split("#")[0].split(":")[0]
            if NOT_A_FILE.search(token) or not FILE_LIKE.match(token) or token.startswith(GENERATED) or token in OUTSIDE_FILES:
                continue
            candidates = [ROOT / token, ROOT / "proto" / token, doc.parent / token]
            tail = "/" + token.rstrip("/")
            if not any(c.exists() for c in candidates) and not any(f.endswith(tail) or f.startswith(tail[1:] + "/") for f in files):
                missing.append(f"{doc.relative_to(ROOT)}: {token}")
    assert not missing, "named in the docs but not in the tree:\n" + "\n".join(missing)


def test_every_make_target_the_docs_name_exists():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.M))
    named = set()
    for doc in DOCS:
        for token in backticked(doc.read_text()):
            named.update(re.findall(r"^make (?:-s )?([a-z][a-z-]+)", token))
    assert named - targets == set(), f"make targets named in the docs but not in the Makefile: {named - targets}"


def test_every_upper_case_name_the_docs_mention_is_known_to_the_code():
    variables = set().union(*(v.keys() for v in known().values()))
    code = sources()
    unknown = []
    for doc in DOCS:
        for token in backticked(doc.read_text()):
            for name in re.findall(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b", token):
                if name in variables or name in OUTSIDE or re.search(rf"\b{name}\b", code):
                    continue
                unknown.append(f"{doc.relative_to(ROOT)}: {name}")
    assert not unknown, "named in the docs but unknown to the code:\n" + "\n".join(sorted(set(unknown)))


def readme_try_it() -> list:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Try it", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def test_the_readmes_example_commands_run_as_shown(stack):
    """The "Try it" block, pasted into a shell, against a stack on its own
    ports (the README's are the defaults)."""
    lines = readme_try_it()
    assert lines[0].startswith("export TOKEN=$(make -s token") and len(lines) >= 5, lines
    env = dict(os.environ, PATH=f"{VENV_BIN}:{os.environ['PATH']}", CLINIC_HOME=str(stack.home))
    for line in lines[1:]:
        command = line.replace("localhost:8080", stack.front)
        script = f"set -eo pipefail\n{lines[0]}\n{command}"
        result = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
        assert result.returncode == 0, f"{line}\n{result.stdout}{result.stderr}"
        assert result.stdout.strip(), f"{line} printed nothing"
