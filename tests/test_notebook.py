"""The Colab quickstart (notebooks/quickstart.ipynb) runs top to bottom against this checkout, offline.

Cells tagged `skip-ci` (the pip install from the project's git URL) are left out; the kernel runs in a temporary
folder, with HF_HUB_OFFLINE=1 and no token, so the push cell must explain how to push instead of failing.
"""
import json
import os
import time

import pytest

from conftest import REPO

NOTEBOOK = REPO / "notebooks" / "quickstart.ipynb"
nbformat = pytest.importorskip("nbformat", reason="the notebook test needs the dev extra (nbformat, nbclient, ipykernel)")
nbclient = pytest.importorskip("nbclient", reason="the notebook test needs the dev extra (nbformat, nbclient, ipykernel)")
pytest.importorskip("ipykernel", reason="the notebook test needs the dev extra (nbformat, nbclient, ipykernel)")


def _outputs_text(cell) -> str:
    parts = []
    for output in cell.get("outputs", []):
        parts.append(output.get("text", ""))
        parts.extend(str(v) for k, v in output.get("data", {}).items() if k.startswith("text/"))
    return "\n".join(parts)


def test_notebook_is_tidy_and_installs_from_the_project_url():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert not any(cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), "commit the notebook without outputs"
    install = [cell for cell in nb.cells if "skip-ci" in cell.metadata.get("tags", [])]
    assert len(install) == 1 and "git+https://github.com/hf-transfer/hf_transfer" in install[0].source
    token_cell = next(cell for cell in nb.cells if cell.source.startswith("HF_TOKEN ="))
    assert 'HF_TOKEN = ""' in token_cell.source, "the token cell must be left empty"
    readme = (REPO / "README.md").read_text()
    assert "colab.research.google.com/github/hf-transfer/hf_transfer/blob/main/notebooks/quickstart.ipynb" in readme


def test_notebook_runs_offline_without_the_install_cell(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))  # no saved login is found either
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells = [cell for cell in nb.cells if "skip-ci" not in cell.metadata.get("tags", [])]
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    start = time.perf_counter()
    client.execute()  # a failing cell raises CellExecutionError with its traceback
    elapsed = time.perf_counter() - start
    print(f"notebook ran in {elapsed:.0f} s")

    run = tmp_path / "outputs" / "quickstart" / "minilm"
    assert (run / "README.md").is_file() and (run / "model.safetensors").is_file()
    assert json.loads((run / "metrics.json").read_text())["validation_accuracy"] > 0.5
    assert sorted(p.name for p in (tmp_path / "outputs" / "quickstart" / "compare").glob("*.png"))
    by_id = {cell.get("id"): cell for cell in nb.cells}
    assert "image/png" in {k for o in by_id["compare"].outputs for k in o.get("data", {})}, "the plots are shown inline"
    assert "'label': 'positive'" in _outputs_text(by_id["load"]) or "'label': 'negative'" in _outputs_text(by_id["load"])
    assert "Not pushed: HF_HUB_OFFLINE is set" in _outputs_text(by_id["push"])
