"""The tutorials in ``notebooks/`` run top to bottom (in small mode) and are committed clean.

Each notebook is executed in a fresh ``python3`` kernel with ``HQCNN_NOTEBOOK_SMALL=1``, the real
data folder in ``HQCNN_DATA_ROOT``, a temporary working directory (its ``runs/`` land there) and no
IBM Quantum credentials, so nothing is sent to IBM. A cell that raises fails the test.
"""

from __future__ import annotations

import time

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import REPO

NOTEBOOK_DIR = REPO / "notebooks"
TUTORIALS = ("01_quickstart", "02_noise_and_mitigation", "03_ibm_hardware")
CELL_TIMEOUT = 600  # seconds per cell; the three notebooks together take ~2 min in small mode


def _read(name: str):
    return nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)


def test_every_tutorial_is_tested():
    assert sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb")) == sorted(TUTORIALS)


@pytest.mark.parametrize("name", TUTORIALS)
def test_notebook_committed_without_outputs(name):
    nb = _read(name)
    nbformat.validate(nb)
    stale = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
             and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not stale, (
        f"{name}.ipynb: code cells {stale} have outputs or execution counts; clear all outputs "
        "before committing"
    )
    source = "\n".join(cell.source for cell in nb.cells if cell.cell_type == "code")
    assert 'os.environ.get("HQCNN_NOTEBOOK_SMALL"' in source, f"{name}.ipynb has no small-run switch"
    assert "HQCNN_DATA_ROOT" in source, f"{name}.ipynb does not read $HQCNN_DATA_ROOT"


@pytest.mark.parametrize("name", TUTORIALS)
def test_notebook_runs(name, data_root, tmp_path, monkeypatch, record_property):
    monkeypatch.setenv("HQCNN_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("HQCNN_DATA_ROOT", str(data_root))
    monkeypatch.setenv("HQCNN_HOME", str(tmp_path / "hqcnn_home"))
    for var in ("QISKIT_IBM_TOKEN", "QISKIT_IBM_INSTANCE"):
        monkeypatch.delenv(var, raising=False)
    nb = _read(name)
    client = NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT,
                            resources={"metadata": {"path": str(tmp_path)}})
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    record_property("wall_time_s", round(seconds, 1))
    print(f"{name}.ipynb: {seconds:.1f} s")

    first = next(cell for cell in nb.cells if cell.cell_type == "code")
    printed = "".join(o.get("text", "") for o in first.outputs if o.output_type == "stream")
    assert "small mode: True" in printed, f"{name}.ipynb did not switch to small mode"
    assert list(tmp_path.glob("runs/*")), f"{name}.ipynb wrote no run folder under runs/"
