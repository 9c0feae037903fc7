"""The notebooks run top to bottom without errors, so they cannot rot.

Each notebook is executed by nbclient on the ``python3`` kernel (ipykernel, from the test extras)
in an empty working directory, with the kernel's temporary folder pointed into pytest's own; it
must write nothing into its working directory.
"""

from __future__ import annotations

import time
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_the_mask_gallery_is_there():
    assert ROOT / "notebooks" / "mask_gallery.ipynb" in NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_is_valid_headless_and_has_no_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code[0].source.startswith('import matplotlib\n\nmatplotlib.use("Agg")')
    for i, cell in enumerate(code):
        assert cell.outputs == [] and cell.execution_count is None, f"code cell {i} has outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch):
    specs = KernelSpecManager().find_kernel_specs()
    assert "python3" in specs, f"no python3 kernel (is ipykernel installed?); found {specs}"
    cwd, kernel_tmp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    kernel_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(kernel_tmp))  # the kernel inherits it: tempfile goes here
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(cwd)}}
    )
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any error
    seconds = time.perf_counter() - start
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    assert list(cwd.iterdir()) == [], "the notebook wrote into its working directory"
    pictures = list(kernel_tmp.rglob("*.png"))
    assert pictures, "the notebook wrote no pictures into its temporary folder"
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= len(pictures)  # every saved picture was also shown
    assert seconds < 60, f"the notebook took {seconds:.0f} s"


def test_the_gallery_draws_each_generation_mask_with_a_line_on_what_it_reproduces():
    nb = nbformat.read(ROOT / "notebooks" / "mask_gallery.ipynb", as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    for name in ("chunk-causal", "teacher-forcing", "sliding-window"):
        assert f'"{name}"' in code and f"`{name}`" in text, name
    assert "sink_chunks=1" in code and "sink_frames=1" in code
    for source in ("CausVid", "Self-Forcing"):  # the published settings the masks reproduce
        assert source in text
