"""Shared fixtures: the repository root as working directory, the backend of this runtime, and a GLUE
mirror on 127.0.0.1 for the workflow tests (tests/workflows.py)."""
import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ONEFLOW_PYTHON = REPO / ".venv-oneflow" / "bin" / "python"
TORCH_PYTHON = REPO / ".venv" / "bin" / "python"
HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_ONEFLOW = importlib.util.find_spec("oneflow") is not None
HAS_SNAKEMAKE = importlib.util.find_spec("snakemake") is not None


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
    monkeypatch.chdir(REPO)


@pytest.fixture(scope="session")
def B():
    """The backend this interpreter holds: torch in .venv, oneflow in .venv-oneflow."""
    from kdlib import backend
    return backend.load("torch" if HAS_TORCH else "oneflow", "cpu")


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    """The address of a GLUE mirror served on 127.0.0.1 that holds the tiny SST-2.zip."""
    from localhttp import serve
    from workflows import sst2_zip

    root = tmp_path_factory.mktemp("mirror")
    (root / "SST-2.zip").write_bytes(sst2_zip())
    with serve(root) as (_, url):
        yield url


def error_lines_of(text: str) -> list[str]:
    """The ``error: ...`` lines of a stage's output."""
    return [line for line in text.splitlines() if line.startswith("error:")]


def error_lines(capsys) -> list[str]:
    """The ``error: ...`` lines a stage printed to stderr, which must hold no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return error_lines_of(err)


# The record and transfer-set stages' flags for a validation split carved from train, at the
# schema's defaults (config.yaml `data.validation`).
CARVE_ARGS = ["--validation-fraction", "0.1", "--validation-max-rows", "2000", "--validation-seed", "0"]
