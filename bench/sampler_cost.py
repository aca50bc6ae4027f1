"""What the driver's peak-memory sampler costs a training phase (issue: "a measurement must not slow
what it measures").

    python bench/sampler_cost.py [--epochs 4] [--variants none psutil-full current]

Trains SmolLM2-135M (the cpu-smollm2 recipe) on 14 SNIPS seed examples as one training phase,
once per sampler variant, and prints per variant: the driver's CPU seconds during the phase (its
sampler thread is the only thing it runs then), the training loop's seconds per optimiser step
(train_log.json), and the peak the sampler reported.

  none         no sampling (the floor)
  psutil-full  the old sampler: psutil memory_full_info() (a full /proc/PID/smaps parse) of every
               process in the tree every 0.5 s
  current      PeakMemory (llm2llm/runtime/phases.py): each process's VmHWM (/proc/PID/status) every 0.5 s
               (at commit 3848a84 it was /proc/PID/statm every 0.5 s and PSS after each 2 % growth)

Run it alone on the machine: another CPU-heavy process makes the step times meaningless.
Writes bench/sampler_cost.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from llm2llm.config import resolve_config  # noqa: E402
from llm2llm.data import load_task_data, sample  # noqa: E402
from llm2llm.models import checked_model  # noqa: E402
from llm2llm.runtime import phases  # noqa: E402
from llm2llm.store import atomic_write_json, read_json  # noqa: E402
from llm2llm.training import TrainRequest, train_from_file, write_request  # noqa: E402


class NoSampling(phases.PeakMemory):
    def _run(self) -> None:
        self._stop.wait()


class PsutilFull(phases.PeakMemory):
    """The sampler before issue 17: full smaps parse of the whole tree at every sample."""

    peak = 0

    def sample(self) -> int:
        import psutil

        total = 0
        for pid in self._tree():
            try:
                total += psutil.Process(pid).memory_full_info().pss
            except psutil.Error:
                continue
        self.peak = max(self.peak, total)
        return total

    @property
    def peak_bytes(self) -> int:
        return self.peak


VARIANTS = {"none": NoSampling, "psutil-full": PsutilFull, "current": phases.PeakMemory}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()
    config = resolve_config("cpu-smollm2", {"data": {"seed_size": 14}, "train": {"epochs": args.epochs}})
    data = load_task_data(config.data)
    seed = sample(data.train, 14, 0, data.task, True)
    base = checked_model(config.student.model)
    phases.preload_phase_modules(["torch", "transformers.trainer", "datasets", "llm2llm.training"])
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in args.variants:
            out = Path(tmp) / variant / "student"
            out.parent.mkdir(parents=True)
            request_path = out.parent / "request.json"
            write_request(TrainRequest(base, seed, data.task, config.train, out, None, {}), request_path)
            phases.PeakMemory = VARIANTS[variant]
            before = cpu_seconds()
            _, result = phases.call_in_child(f"train ({variant})", train_from_file, request_path, echo=False)
            driver = cpu_seconds() - before
            log = read_json(out / "train_log.json")
            steps = max(entry.get("step", 0) for entry in log["log_history"])
            results[variant] = {
                "driver_cpu_seconds": round(driver, 2),
                "phase_seconds": result.seconds,
                "training_seconds": log["seconds"]["training"],
                "steps": steps,
                "seconds_per_step": round(log["seconds"]["training"] / steps, 3),
                "peak_memory_mib": result.peak_memory_mib,
            }
            print(variant, json.dumps(results[variant]), flush=True)
    atomic_write_json(REPO / "bench" / "sampler_cost.json", {"epochs": args.epochs, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
