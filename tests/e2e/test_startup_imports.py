"""`amqplite serve` loads the modules of a listener or feature only when it is on.

The broker runs as a real subprocess, started as `python -m amqplite serve` is (through runpy),
and writes the names in sys.modules when it exits after SIGTERM.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from broker_process import ROOT, free_port, wait_for_port

# Runs amqplite/__main__.py as `python -m amqplite` does; at exit, sys.modules goes to argv[1].
RECORDING_MAIN = """
import atexit, json, runpy, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
runpy.run_module("amqplite", run_name="__main__", alter_sys=True)
"""

# What each feature brings, by the packages that are its alone.
MANAGEMENT = ("amqplite.management", "h11")
CLUSTER = ("amqplite.cluster", "httpx")
PLUGIN_DISCOVERY = ("importlib.metadata",)  # entry points of third-party plugins
API_CLIENT = ("amqplite.cli.api", "amqplite.cli.ctl")  # `amqplite ctl` and definitions import
BOOT_DEFINITIONS = ("amqplite.broker.definitions",)  # a definitions file applied at boot


def loaded_by_serve(tmp_path: Path, management_port: int, *flags: str) -> set[str]:
    """The modules loaded by a broker that served (its ports accepted) and was stopped."""
    out = tmp_path / "modules.json"
    port = free_port()
    cmd = [sys.executable, "-c", RECORDING_MAIN, str(out), "serve", "--port", str(port)]
    cmd += ["--data-dir", str(tmp_path / "data"), "--prometheus-port", "0"]
    cmd += ["--management-port", str(management_port), *flags]
    log = tmp_path / "broker.log"
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        wait_for_port("127.0.0.1", port, proc)
        if management_port:
            wait_for_port("127.0.0.1", management_port, proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0, log.read_text()
    return set(json.loads(out.read_text()))


def under(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    """The modules that are one of `packages` or inside one."""
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in packages))


def test_serve_without_management_loads_no_http_cluster_or_plugin_discovery(
    tmp_path: Path,
) -> None:
    modules = loaded_by_serve(tmp_path, 0)
    assert {"amqplite.server.node", "amqplite.store.store", "trio"} <= modules  # it did serve
    assert under(modules, MANAGEMENT) == []
    assert under(modules, CLUSTER) == []
    assert under(modules, PLUGIN_DISCOVERY) == []
    assert under(modules, API_CLIENT) == []
    assert under(modules, BOOT_DEFINITIONS) == []


def test_serve_with_management_and_a_plugin_loads_them_and_still_no_cluster(
    tmp_path: Path,
) -> None:
    config = tmp_path / "amqplite.yaml"
    config.write_text("plugins: [delayed_message]\n")
    modules = loaded_by_serve(tmp_path, free_port(), "--config", str(config))
    assert {"amqplite.management.server", "h11", "amqplite_plugins.delayed_message"} <= modules
    assert "importlib.metadata" in modules  # a named plugin may be a third party's entry point
    assert under(modules, CLUSTER) == []
    assert under(modules, API_CLIENT) == []
