"""The Python API (llm2llm/api.py), as README shows it: `from llm2llm import boost, load_run` in a
fresh interpreter runs the same boost as the CLI, reads it back and exports it."""

import json
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO, cli_in_process

from llm2llm import load_run, run_config
from llm2llm.errors import UserError


def test_the_python_api_runs_the_same_boost_as_the_cli_and_reads_it_back(tmp_path, data_dir, tiny_model):
    runs = tmp_path / "runs"
    script = textwrap.dedent(
        f"""
        import json, sys
        from llm2llm import boost
        run = boost("tiny", {{"data.data_dir": {str(data_dir)!r}, "runs_dir": {str(runs)!r}, "run": "api",
                             "loop.iterations": 1}})
        print(json.dumps({{"path": str(run.path), "test": run.accuracy("test"), "complete": run.complete,
                          "selected": run.selected["iteration"]}}))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    api = json.loads(proc.stdout.strip().splitlines()[-1])
    assert api["complete"] and api["path"] == str(runs / "api")

    cli_in_process(
        "boost", "--profile", "tiny", "--data-dir", str(data_dir), "--runs-dir", str(runs), "--run", "cli",
        "--iterations", "1", cwd=REPO,
    )  # fmt: skip
    by_api, by_cli = load_run(runs / "api"), load_run(runs / "cli")
    for it_api, it_cli in zip(by_api.metrics["iterations"], by_cli.metrics["iterations"], strict=True):
        assert (it_api["test_accuracy"], it_api["validation_accuracy"]) == (
            it_cli["test_accuracy"],
            it_cli["validation_accuracy"],
        )
    assert by_api.selected["iteration"] == api["selected"]
    assert by_api.accuracy("test") == by_api.metrics["selected"]["test_accuracy"] == api["test"]
    assert by_api.accuracy("test", iteration=0) == by_api.metrics["iterations"][0]["test_accuracy"]
    assert by_api.config.loop.iterations == 1

    out = by_api.export(tmp_path / "export", model=False)
    assert (out / "config.yaml").exists() and (out / "data").is_dir() and not (out / "model").exists()


def test_bad_input_through_the_api_is_the_cli_s_one_line_error(tmp_path):
    with pytest.raises(UserError, match=r"train\.epochz"):
        run_config("tiny", {"train.epochz": 3})
    with pytest.raises(UserError, match=r"train\.epochs"):
        run_config("tiny", {"train.epochs": -1})
    with pytest.raises(UserError, match="is not a run directory"):
        load_run(tmp_path)
    assert run_config("tiny", {"loop.iterations": 3, "data.dataset": "trec"}).loop.iterations == 3


def test_importing_llm2llm_loads_no_model_library():
    code = "import sys, llm2llm; print(sorted(m for m in ('torch', 'transformers', 'vllm') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"
