"""`llm2llm doctor` and `llm2llm validate`: the pre-flight (llm2llm/preflight.py, the checks boost
runs) for a run, loading no weights, one line per check. A check that needs an earlier one that
failed is skipped, not crashed; the verdict says whether the run can start. Design:
docs/batch-runs.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from llm2llm.errors import UserError
from llm2llm.preflight import CHECKS, Facts, check_packages, preflight


@dataclass
class Doctor:
    lines: list[str] = field(default_factory=list)
    failures: int = 0

    def report(self, outcome: str, name: str, text: str) -> None:
        self.failures += outcome == "FAIL"
        self.lines.append(f"{outcome:<4} {name}: {text}")

    def verdict(self) -> str:
        if self.failures:
            return f"verdict: NOT READY, {self.failures} problem(s); fix the FAIL lines above and run doctor again"
        return "verdict: ready to run"


def diagnose(build_config) -> Doctor:
    """Every check for the run `build_config()` resolves to (a callable, so a bad config is a check
    too: without one, only the checks that need no config run)."""
    doctor = Doctor()
    try:
        config = build_config()
    except UserError as e:
        doctor.report("FAIL", "config", str(e))
        for name, _, _ in CHECKS:
            if name == "packages":
                _packages_alone(doctor)
            else:
                doctor.report("skip", name, "needs config")
        return doctor
    doctor.report("ok", "config", f"profile {config.profile}, method {config.loop.method}, run "
                  f"{Path(config.runs_dir) / config.run}")  # fmt: skip
    preflight(config, report=doctor.report)
    return doctor


def _packages_alone(doctor: Doctor) -> None:
    try:
        doctor.report("ok", "packages", check_packages(Facts(config=None)))
    except UserError as e:
        doctor.report("FAIL", "packages", str(e))
