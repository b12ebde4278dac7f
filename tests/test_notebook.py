"""notebooks/tour.ipynb runs from top to bottom on a CPU, with small budgets."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

TOUR = Path(__file__).resolve().parents[1] / "notebooks" / "tour.ipynb"
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


def outputs_of(notebook: nbformat.NotebookNode) -> str:
    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            texts.append(
                output.get("text", "") or "".join(output.get("data", {}).get("text/plain", ""))
            )
    return "\n".join(texts)


@pytest.mark.slow
@pytest.mark.skipif(
    not DEBIAN_FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed"
)
def test_the_tour_notebook_runs_and_reaches_the_notebooks_findings(tmp_path, monkeypatch):
    monkeypatch.setenv("NNLAB_TOUR_QUICK", "1")
    monkeypatch.setenv("NNLAB_TOUR_LOGS", str(tmp_path / "logs"))
    monkeypatch.setenv("NNLAB_TOUR_DATA", str(tmp_path / "data"))
    notebook = nbformat.read(TOUR, as_version=4)
    NotebookClient(
        notebook, timeout=600, resources={"metadata": {"path": str(TOUR.parent)}}
    ).execute()
    text = outputs_of(notebook)
    images = sum(
        "image/png" in o.get("data", {}) for c in notebook.cells for o in c.get("outputs", [])
    )
    assert images >= 4  # the width plot, the ring probabilities, the waves, the confusion matrix
    assert "3 sigmoid nodes: val/acc 1.000" in text or "3 sigmoid nodes: val/acc 0.99" in text
    assert "1 sigmoid nodes: val/acc 0." in text and "in eval mode: True" in text
    accuracy = float(text.split("Fashion-MNIST MLP: test/acc ")[1].split()[0])
    assert accuracy > 0.7  # the notebook's 6,000 training images, two epochs
    assert len(list((tmp_path / "logs").glob("*/runs/*/.hydra"))) == 10  # every call a run dir


@pytest.mark.slow
def test_train_in_a_notebook_draws_its_bar_without_asking_for_ipywidgets(tmp_path):
    """Rich's live bar in Jupyter needs ipywidgets (not installed here), and warned at every
    `train()` without them."""
    code = (
        "from nnlab.api import train\n"
        f"run = train(['experiment=rings', 'trainer.max_steps=200', 'paths.log_dir={tmp_path}'])\n"
        "print(run.metrics['status'])"
    )
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    NotebookClient(notebook, timeout=600).execute()
    text = outputs_of(notebook)
    assert "ipywidgets" not in text
    assert "200/200 steps" in text and "completed" in text  # the bar, drawn as text
