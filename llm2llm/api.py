"""The Python API, for notebooks and pipelines: a config in, a run out. The same run as
`llm2llm boost` (same pre-flight, run directory, resume by calling it again), without the CLI.

    from llm2llm import boost, load_run

    run = boost("cpu-qwen", {"data.dataset": "snips", "loop.iterations": 1})
    run.accuracy("test")             # the iteration selected on validation, scored on test
    run.selected                     # {"iteration": ..., "validation_accuracy": ...}
    run.export("exports/snips")      # the selected student and its training set
    load_run("runs/snips-cpu-qwen")  # a finished run, read back

Call it before anything imports transformers or vLLM in the process (it switches the Hugging Face
libraries offline first, as the CLI does).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm2llm.config import DEFAULT_PROFILE, RunConfig, config_from_file, deep_merge, nested, resolve_config
from llm2llm.errors import UserError
from llm2llm.store import read_json


@dataclass(frozen=True)
class Run:
    """A run directory (docs/run-directory.md), read on demand."""

    path: Path

    @property
    def config(self) -> RunConfig:
        return config_from_file(self.path / "config.yaml")

    @property
    def metrics(self) -> dict:
        """metrics.json: every scored iteration, the selected one, the teacher's tokens, phase timings."""
        if not (self.path / "metrics.json").exists():
            raise UserError(f"{self.path / 'metrics.json'} not found: {self.path} has no scored iteration yet")
        return read_json(self.path / "metrics.json")

    @property
    def complete(self) -> bool:
        return bool(self.metrics.get("complete"))

    @property
    def selected(self) -> dict | None:
        """The iteration chosen on validation (None where the run scores no validation split)."""
        return self.metrics.get("selected")

    def accuracy(self, split: str = "test", iteration: int | None = None) -> float | None:
        """An iteration's accuracy on a split (test, validation, seed); default the selected
        iteration, else the last one scored."""
        metrics = self.metrics  # read once
        iterations = {it["iteration"]: it for it in metrics["iterations"]}
        if iteration is None:
            iteration = (metrics.get("selected") or {}).get("iteration", max(iterations))
        if iteration not in iterations:
            raise UserError(f"{self.path}: iteration {iteration} is not scored (scored: {sorted(iterations)})")
        return iterations[iteration].get(f"{split}_accuracy")

    def export(
        self, output: str | Path, lora: str = "merge", model: bool = True, iteration: int | None = None
    ) -> Path:
        """The selected iteration's training set and student (merged, or as an adapter; model=False:
        the data alone) in a new folder, as `llm2llm export`."""
        from llm2llm.export import export_run

        return export_run(self.path, Path(output), lora=lora, model=model, iteration=iteration)


def run_config(profile: str = DEFAULT_PROFILE, sets: dict[str, Any] | None = None) -> RunConfig:
    """A profile with dotted-key overrides ({"data.dataset": "snips", "loop.iterations": 1}), checked
    like the CLI's --set: an unknown key or a bad value is a one-line UserError."""
    overrides: dict = {}
    for key, value in (sets or {}).items():
        overrides = deep_merge(overrides, nested(key, value))
    return resolve_config(profile, overrides)


def boost(profile: str | RunConfig = DEFAULT_PROFILE, sets: dict[str, Any] | None = None) -> Run:
    """Run (or resume) the loop for a profile and overrides, or a RunConfig; returns the run."""
    from llm2llm.offline import check_environment, go_offline

    go_offline()  # as the CLI does, before the loop imports the Hugging Face libraries
    check_environment()
    from llm2llm.loop import boost as run_loop  # its boost makes what it writes private (make_private)

    resolved = profile if isinstance(profile, RunConfig) else run_config(profile, sets)
    return Run(Path(run_loop(resolved)))


def load_run(path: str | Path) -> Run:
    path = Path(path)
    if not (path / "config.yaml").exists():
        raise UserError(f"{path} is not a run directory (no config.yaml)")
    return Run(path)
