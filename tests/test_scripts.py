"""The repository's shell scripts: scripts/test.sh must not turn a missing OneFlow runtime into a
green CI run."""
from __future__ import annotations

import os
import shutil
import subprocess

from conftest import REPO


def fake_checkout(tmp_path):
    """scripts/test.sh beside a stub .venv whose python 'passes' every test, and no .venv-oneflow."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "test.sh", tmp_path / "scripts" / "test.sh")
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    stub = tmp_path / ".venv" / "bin" / "python"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    return tmp_path


def run(tmp_path, **env):
    environ = {k: v for k, v in os.environ.items() if k != "CI"}
    return subprocess.run(["bash", str(tmp_path / "scripts" / "test.sh")], capture_output=True,
                          text=True, env={**environ, **env}, timeout=60)


def test_a_missing_oneflow_runtime_fails_in_ci_only(tmp_path):
    checkout = fake_checkout(tmp_path)
    local = run(checkout)
    assert local.returncode == 0 and ".venv-oneflow missing" in local.stdout
    ci = run(checkout, CI="true")
    assert ci.returncode == 1 and "error: .venv-oneflow is missing" in ci.stderr
