"""Run the released AMQP client libraries' own broker test suites against a fresh amqplite.

For each of pika, aiormq, aio-pika, py-amqp and kombu, at a pinned release: fetch its source
(the sdist from PyPI; pika's sdist has no tests, so its git tag), install the client and its test
dependencies into a virtualenv of the cache, start a fresh ``amqplite serve`` on free ports,
point the suite's broker tests at it (their environment variables, or a small appended fixture
where the suite starts a Docker container), run pytest and print pass/fail per suite.

    python scripts/client_suites.py                       # every suite, one at a time
    python scripts/client_suites.py --suite kombu         # one suite
    python scripts/client_suites.py --broker-url amqp://guest:guest@127.0.0.1:5672/%2F
                                                          # against another broker (RabbitMQ)
    python scripts/client_suites.py --source pika=~/src/pika   # a git clone instead of GitHub

Tests that cannot run against a broker given by host and port are excluded; each exclusion is
listed in SUITES with its reason and printed with the results. Takes a few minutes per suite.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import attrs

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = Path.home() / ".cache" / "amqplite-client-suites"
SIMPLE_INDEX = "https://pypi.org/simple"
# Test-time dependencies of the suites (their dev/test requirement groups, minus coverage/lint).
TEST_DEPENDENCIES = (
    "pytest",
    "pytest-timeout",
    "pytest-rerunfailures",
    "aiomisc",
    "aiomisc-pytest",
    "shortuuid",
    "timeout-decorator",
    "tornado",
    "twisted",
    "gevent",
    "hypothesis",
    "pytest-freezer",
)


@attrs.frozen
class Broker:
    """Where the suite's broker tests connect."""

    host: str
    port: int
    user: str = "guest"
    password: str = "guest"
    vhost: str = "/"

    @property
    def url(self) -> str:
        """The amqp:// URL of the broker."""
        vhost = urllib.parse.quote(self.vhost, safe="")
        return f"amqp://{self.user}:{self.password}@{self.host}:{self.port}/{vhost}"


@attrs.frozen
class Excluded:
    """Tests left out of a suite (a pytest -k expression or a path to --ignore) and why."""

    what: str
    reason: str
    ignore_path: bool = False


@attrs.frozen
class Suite:
    """One client library's broker test suite at a pinned release."""

    name: str
    project: str
    version: str
    tests: tuple[str, ...]
    excluded: tuple[Excluded, ...] = ()
    git_url: str | None = None  # fetch this tag instead of the sdist (the sdist has no tests)
    env: Callable[[Broker], dict[str, str]] = lambda broker: {}
    patch: Callable[[Path, Broker], None] = lambda tree, broker: None


def patch_pika(tree: Path, broker: Broker) -> None:
    """pika's acceptance tests connect to 127.0.0.1:5672 and localhost:5672, hard-coded."""
    for path in (tree / "tests").rglob("*.py"):
        text = path.read_text()
        new = re.sub(r"\b5672\b", str(broker.port), text)
        new = new.replace("guest:guest@127.0.0.1", f"{broker.user}:{broker.password}@{broker.host}")
        if new != text:
            path.write_text(new)


CONTAINER_FIXTURES = """

# --- appended by amqplite's scripts/client_suites.py: the broker under test, not a container ---
import types as _amqplite_types  # noqa: E402

import yarl as _amqplite_yarl  # noqa: E402


def pytest_configure(config):  # no Docker check: the broker is given
    pass


@pytest.fixture(scope="session")
def rabbitmq_container():
    ports = {{"5672/tcp": {port}, "5671/tcp": {port}}}
    return _amqplite_types.SimpleNamespace(id="broker-under-test", host="{host}", ports=ports)


@pytest.fixture(scope="session")
def amqp_direct_url(rabbitmq_container):
    return _amqplite_yarl.URL.build(
        scheme="amqp", user="{user}", password="{password}", host="{host}", port={port},
        path="/" + "{vhost}",
    )
"""


def patch_container_fixtures(tree: Path, broker: Broker) -> None:
    """aiormq and aio-pika start RabbitMQ in Docker: the appended fixtures return our broker."""
    conftest = tree / "tests" / "conftest.py"
    fixtures = CONTAINER_FIXTURES.format(
        host=broker.host,
        port=broker.port,
        user=broker.user,
        password=broker.password,
        vhost=urllib.parse.quote(broker.vhost, safe=""),
    )
    conftest.write_text(conftest.read_text() + fixtures)


def rabbitmq_env(broker: Broker) -> dict[str, str]:
    """py-amqp's and kombu's integration tests read the broker's address from these."""
    return {"RABBITMQ_HOST": broker.host, "RABBITMQ_5672_TCP": str(broker.port)}


NO_TLS = "TLS: amqplite has no TLS listener (RabbitMQ here has none either)"
SUITES = (
    Suite(
        "pika",
        "pika",
        "1.4.4",
        ("tests/acceptance",),
        excluded=(
            Excluded(
                "not GetaddrinfoWWWGoogleDotComPort80",
                "resolves www.google.com: needs the internet, not a broker",
            ),
        ),
        git_url="https://github.com/pika/pika",
        patch=patch_pika,
    ),
    Suite(
        "aiormq",
        "aiormq",
        "7.2.4",
        ("tests",),
        excluded=(Excluded("not amqps and not ssl", NO_TLS),),
        patch=patch_container_fixtures,
    ),
    Suite(
        "aio-pika",
        "aio-pika",
        "10.2.1",
        ("tests",),
        excluded=(
            Excluded("tests/test_amqps.py", NO_TLS, ignore_path=True),
            Excluded(
                "tests/test_robust_recovery.py",
                "restarts its own RabbitMQ container through Docker",
                ignore_path=True,
            ),
        ),
        patch=patch_container_fixtures,
    ),
    Suite(
        "py-amqp",
        "amqp",
        "5.4.2",
        ("t/integration",),
        excluded=(Excluded("not tls", NO_TLS + "; two connect to badssl.com on the internet"),),
        env=rabbitmq_env,
    ),
    Suite(
        "kombu",
        "kombu",
        "5.7.0",
        ("t/integration/test_py_amqp.py",),
        env=rabbitmq_env,
    ),
)


@attrs.frozen
class Outcome:
    """Counts from one suite's junit report."""

    passed: int
    failed: int
    errors: int
    skipped: int
    failures: tuple[str, ...]
    seconds: float
    broker_tracebacks: int | None


# --- fetching ---------------------------------------------------------------------------


def normalise(name: str) -> str:
    """PEP 503 name normalisation."""
    return re.sub(r"[-_.]+", "-", name).lower()


def download_sdist(project: str, version: str, into: Path) -> Path:
    """The sdist of project==version from PyPI's simple index (PEP 691 JSON), hash checked."""
    into.mkdir(parents=True, exist_ok=True)
    request = urllib.request.Request(
        f"{SIMPLE_INDEX}/{normalise(project)}/",
        headers={"Accept": "application/vnd.pypi.simple.v1+json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        files = json.load(response)["files"]
    wanted = normalise(f"{project}-{version}")
    for file in files:
        filename = file["filename"]
        if filename.endswith(".tar.gz") and normalise(filename[: -len(".tar.gz")]) == wanted:
            target = into / filename
            if not target.exists():
                with urllib.request.urlopen(file["url"], timeout=120) as response:
                    data = response.read()
                digest = hashlib.sha256(data).hexdigest()
                if digest != file["hashes"]["sha256"]:
                    raise SystemExit(f"{filename}: sha256 {digest} is not PyPI's")
                target.write_bytes(data)
            return target
    raise SystemExit(f"no sdist of {project} {version} on PyPI")


def source_tree(suite: Suite, cache: Path, sources: dict[str, Path]) -> Path:
    """A pristine source tree of the suite's release, extracted once into the cache."""
    tree = cache / "src" / f"{suite.name}-{suite.version}"
    if tree.exists():
        return tree
    staging = Path(tempfile.mkdtemp(dir=cache))
    if suite.git_url is None:
        sdist = download_sdist(suite.project, suite.version, cache / "sdists")
        with tarfile.open(sdist) as archive:
            archive.extractall(staging, filter="data")
        (top,) = staging.iterdir()
    else:
        top = staging / "tree"
        local = sources.get(suite.name)
        if local is not None:  # a clone: take the tag's files, whatever is checked out
            archive = subprocess.run(
                ["git", "-C", str(local), "archive", "--format=tar", suite.version],
                check=True,
                capture_output=True,
            ).stdout
            top.mkdir()
            subprocess.run(["tar", "-x", "-C", str(top)], input=archive, check=True)
        else:
            subprocess.run(
                [
                    "git",
                    "clone",
                    "-q",
                    "--depth=1",
                    f"--branch={suite.version}",
                    suite.git_url,
                    str(top),
                ],
                check=True,
            )
    tree.parent.mkdir(parents=True, exist_ok=True)
    top.rename(tree)
    shutil.rmtree(staging, ignore_errors=True)
    return tree


def suite_venv(cache: Path) -> Path:
    """A virtualenv with the pinned clients and the suites' test dependencies (made once)."""
    venv = cache / "venv"
    python = venv / "bin" / "python"
    pins = [f"{suite.project}=={suite.version}" for suite in SUITES]
    stamp = venv / "amqplite-suites.txt"
    wanted = "\n".join([*pins, *TEST_DEPENDENCIES])
    if stamp.exists() and stamp.read_text() == wanted:
        return python
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", *pins, *TEST_DEPENDENCIES], check=True
    )
    stamp.write_text(wanted)
    return python


# --- the broker -------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_amqplite(workdir: Path) -> tuple[subprocess.Popen[bytes], Broker, Path]:
    """A fresh `amqplite serve` (empty data directory, no management port) on a free port."""
    port = free_port()
    log_path = workdir / "amqplite.log"
    command = [sys.executable, "-m", "amqplite", "serve", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--data-dir", str(workdir / "data")]
    command += ["--management-port", "0"]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"amqplite exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, Broker("127.0.0.1", port), log_path
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise SystemExit("amqplite did not listen within 30s") from None
            time.sleep(0.05)


def parse_broker_url(url: str) -> Broker:
    """The Broker named by an amqp:// URL."""
    parts = urllib.parse.urlparse(url)
    vhost = urllib.parse.unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    return Broker(
        parts.hostname or "127.0.0.1",
        parts.port or 5672,
        parts.username or "guest",
        parts.password or "guest",
        vhost,
    )


# --- running ----------------------------------------------------------------------------


def read_junit(path: Path) -> tuple[int, int, int, int, tuple[str, ...]]:
    """passed, failed, errors, skipped and the failing test ids from a junit XML report.

    A test rerun by pytest-rerunfailures appears once per attempt: its last attempt counts.
    """
    outcome: dict[str, str] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        kinds = {child.tag for child in case}
        test_id = f"{case.get('classname')}::{case.get('name')}"
        if "failure" in kinds:
            outcome[test_id] = "failed"
        elif "error" in kinds:
            outcome[test_id] = "errors"
        elif "skipped" in kinds:
            outcome[test_id] = "skipped"
        else:
            outcome[test_id] = "passed"
    counts = {kind: 0 for kind in ("passed", "failed", "errors", "skipped")}
    for kind in outcome.values():
        counts[kind] += 1
    failing = tuple(t for t, kind in outcome.items() if kind in ("failed", "errors"))
    return counts["passed"], counts["failed"], counts["errors"], counts["skipped"], failing


def run_suite(
    suite: Suite,
    python: Path,
    cache: Path,
    sources: dict[str, Path],
    external: Broker | None,
    select: str | None = None,
) -> Outcome:
    """Copy the suite's tree, start a broker, point the tests at it, run them."""
    workdir = cache / "runs" / suite.name
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    tree = workdir / "tree"
    shutil.copytree(source_tree(suite, cache, sources), tree)
    proc, broker, log_path = (None, external, None) if external else start_amqplite(workdir)
    assert broker is not None
    try:
        suite.patch(tree, broker)
        command = [str(python), "-m", "pytest", *suite.tests, "-q", "-p", "no:cacheprovider"]
        command += ["-o", "addopts=", "--timeout=120", f"--junitxml={workdir / 'junit.xml'}"]
        if suite.name in ("aiormq", "aio-pika"):
            command += ["-p", "no:asyncio"]  # their own pyproject addopts, cleared above
        selected = [e.what for e in suite.excluded if not e.ignore_path]
        if select:
            selected.append(f"({select})")
        command += [f"--ignore={e.what}" for e in suite.excluded if e.ignore_path]
        if selected:
            command += ["-k", " and ".join(selected)]
        env = {**os.environ, **suite.env(broker), "PYTHONPATH": str(tree)}
        env.pop("AMQPLITE_TEST_URL", None)
        started = time.monotonic()
        with (workdir / "pytest.log").open("wb") as log:
            subprocess.run(command, cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT)
        seconds = time.monotonic() - started
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    junit = workdir / "junit.xml"
    if not junit.exists():
        raise SystemExit(f"{suite.name}: pytest wrote no report; see {workdir / 'pytest.log'}")
    passed, failed, errors, skipped, failures = read_junit(junit)
    tracebacks = None if log_path is None else log_path.read_text().count("Traceback")
    return Outcome(passed, failed, errors, skipped, failures, seconds, tracebacks)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen suites one after another and print a table of results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", action="append", choices=[s.name for s in SUITES])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="downloads and venv")
    parser.add_argument("--broker-url", help="run against this broker instead of amqplite")
    parser.add_argument(
        "--source", action="append", default=[], metavar="NAME=PATH", help="a git clone to use"
    )
    parser.add_argument("--show-failures", action="store_true", help="list failing test ids")
    parser.add_argument(
        "-k", dest="select", help="only the tests matching this pytest -k expression"
    )
    args = parser.parse_args(argv)
    cache: Path = args.cache.expanduser().resolve()
    cache.mkdir(parents=True, exist_ok=True)
    sources = {}
    for item in args.source:
        name, _, path = item.partition("=")
        sources[name] = Path(path).expanduser().resolve()
    external = parse_broker_url(args.broker_url) if args.broker_url else None
    chosen = [s for s in SUITES if not args.suite or s.name in args.suite]
    python = suite_venv(cache)
    target = args.broker_url or "a fresh amqplite"
    print(f"client suites against {target}")
    failed_any = False
    for suite in chosen:
        outcome = run_suite(suite, python, cache, sources, external, args.select)
        failed_any = failed_any or bool(outcome.failed or outcome.errors)
        broker_note = (
            ""
            if outcome.broker_tracebacks is None
            else f", {outcome.broker_tracebacks} tracebacks in the broker log"
        )
        print(
            f"{suite.name:9} {suite.version:8} {' '.join(suite.tests):32} "
            f"{outcome.passed} passed, {outcome.failed} failed, {outcome.errors} errors, "
            f"{outcome.skipped} skipped in {outcome.seconds:.0f}s{broker_note}",
            flush=True,
        )
        for excluded in suite.excluded:
            print(f"    excluded {excluded.what!r}: {excluded.reason}")
        if args.show_failures:
            for failure in outcome.failures:
                print(f"    FAILED {failure}")
    return 1 if failed_any else 0


if __name__ == "__main__":
    sys.exit(main())
