"""The notebooks run headless, top to bottom in a fresh kernel, on REAL runs of the tiny model, and show the
same tables and figures as the library; as stored they hold no outputs (no hidden state)."""
from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient

from tests.analysis_runs_fixture import copy_runs
from tests.helpers import REPO

from analysis import BootstrapSettings, components_table, load_runs, render

NOTEBOOKS = ("tables", "plots")


def execute(name, monkeypatch, runs, out):
    monkeypatch.setenv("SFP_RUNS", str(runs))
    monkeypatch.setenv("SFP_SWEEP_PARAMS", "mitigator.top_k")
    monkeypatch.setenv("SFP_ANALYSIS_OUT", str(out))
    notebook = nbformat.read(REPO / "analysis" / f"{name}.ipynb", as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(REPO / "analysis")}}).execute()
    return notebook


def outputs(notebook, kind):
    return [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs
            if kind in o.get("data", {})]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_stored_notebooks_hold_no_outputs_and_a_parameters_cell(name):
    notebook = nbformat.read(REPO / "analysis" / f"{name}.ipynb", as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(not cell.outputs and cell.execution_count is None for cell in code)
    assert "parameters" in code[0].metadata.get("tags", []) and "SFP_RUNS" in code[0].source


def test_the_tables_notebook_shows_and_writes_the_tables(analysis_runs, tmp_path, monkeypatch):
    runs = copy_runs(analysis_runs, tmp_path / "runs", "components", "sweep_top_k")
    notebook = execute("tables", monkeypatch, runs, tmp_path / "tables")
    shown = [o["data"]["text/markdown"] for o in outputs(notebook, "text/markdown")]
    assert [text.splitlines()[0] for text in shown] == [
        "### Main results: mIoU per method and dataset",
        "### Component ablation (sfp): mIoU per on/off combination",
        "### Outlier detector (sfp, mitigator on): mIoU per detector",
        "### Sweep of mitigator.top_k: mIoU per value"]
    assert shown[1] == render(components_table(load_runs(runs)), "md")
    written = sorted(p.name for p in (tmp_path / "tables").iterdir())
    assert written == sorted(f"{n}.{f}" for n in ("main", "components", "detector", "sweep-mitigator.top_k")
                             for f in ("md", "tex", "csv"))
    assert (tmp_path / "tables" / "components.tex").read_text() == render(components_table(load_runs(runs)), "tex")


def test_the_tables_notebook_shows_intervals_and_compares_two_runs_image_by_image(analysis_runs, tmp_path,
                                                                                     monkeypatch):
    runs = copy_runs(analysis_runs, tmp_path / "runs", "components")
    monkeypatch.setenv("SFP_CI", "1")
    monkeypatch.setenv("SFP_RESAMPLES", "100")
    monkeypatch.setenv("SFP_COMPARE", f"{runs / 'components' / 'on-on-on'},{runs / 'components' / 'off-off-on'}")
    notebook = execute("tables", monkeypatch, runs, tmp_path / "tables")
    shown = [o["data"]["text/markdown"] for o in outputs(notebook, "text/markdown")]
    with_intervals = components_table(load_runs(runs), intervals=BootstrapSettings(resamples=100))
    assert render(with_intervals, "md") in shown
    [comparison] = [text for text in shown if text.startswith("| dataset | images |")]
    assert [line.split(" | ")[0] for line in comparison.splitlines()[2:]] == ["| voc21", "| ade20k"]
    assert len(outputs(notebook, "image/png")) == 1  # the gallery of the largest gains and losses


def test_the_plots_notebook_shows_and_writes_the_figures(analysis_runs, tmp_path, monkeypatch):
    runs = copy_runs(analysis_runs, tmp_path / "runs", "sweep_top_k")
    notebook = execute("plots", monkeypatch, runs, tmp_path / "figures")
    assert len(outputs(notebook, "image/png")) == 5  # one sweep, layer statistics and heat map per dataset
    written = sorted(p.name for p in (tmp_path / "figures").iterdir())
    assert written == sorted(f"{n}.{f}" for n in ("sweep-mitigator.top_k", "layer-stats-voc21", "layer-stats-ade20k",
                                                  "outlier-heatmap-voc21", "outlier-heatmap-ade20k")
                             for f in ("png", "pdf"))


def test_the_documented_nbconvert_command_runs_the_tables_notebook(analysis_runs, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    jupyter = Path(sys.executable).parent / "jupyter"
    env = {**os.environ, "SFP_RUNS": str(analysis_runs / "components")}
    result = subprocess.run([str(jupyter), "nbconvert", "--to", "notebook", "--execute", "analysis/tables.ipynb",
                             "--output", str(tmp_path / "tables.ipynb")], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mitigator" in (tmp_path / "tables.ipynb").read_text()
