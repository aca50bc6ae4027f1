"""Proof that a phase gave its memory back before the next one starts.

On GPUs (NVML present): each GPU of the phase must return to the memory it used before the run's
first phase (within a tolerance); if it does not within the timeout, the processes still holding
memory on it are named and the run stops. Without GPUs: the phase's process group must be empty
(its processes hold its memory; llm2llm/runtime/phases.py already swept leftovers).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from llm2llm.runtime.phases import PhaseError, group_members, process_name

log = logging.getLogger(__name__)
MIB = 1024 * 1024


class NVML:
    """The few NVML calls we need (nvidia-ml-py); `available` is False without a driver."""

    def __init__(self):
        self.available = False
        try:
            import pynvml

            pynvml.nvmlInit()
            self.pynvml = pynvml
            self.count = pynvml.nvmlDeviceGetCount()
            self.available = True
        except Exception:  # noqa: BLE001 - no library, no driver, no GPU: all mean "no NVML"
            self.count = 0

    def _handle(self, index: int):
        return self.pynvml.nvmlDeviceGetHandleByIndex(index)

    def devices(self) -> list[dict]:
        out = []
        for i in range(self.count):
            h = self._handle(i)
            name = self.pynvml.nvmlDeviceGetName(h)
            out.append(
                {
                    "index": i,
                    "uuid": self.pynvml.nvmlDeviceGetUUID(h),
                    "name": name.decode() if isinstance(name, bytes) else name,
                    "memory_gib": self.pynvml.nvmlDeviceGetMemoryInfo(h).total / 1024**3,
                }
            )
        return out

    def used_mib(self, index: int) -> float:
        return self.pynvml.nvmlDeviceGetMemoryInfo(self._handle(index)).used / MIB

    def holders(self, index: int) -> list[str]:
        h = self._handle(index)
        procs = self.pynvml.nvmlDeviceGetComputeRunningProcesses(
            h
        ) + self.pynvml.nvmlDeviceGetGraphicsRunningProcesses(h)
        return [f"{process_name(p.pid)} holding {(p.usedGpuMemory or 0) / MIB:.0f} MiB" for p in procs]


@dataclass
class ReleaseCheck:
    """Baseline taken once per run; `wait_released` after every phase."""

    tolerance_mib: float = 512
    timeout: float = 60

    def __post_init__(self):
        self.nvml = NVML()
        self.baseline = {i: self.nvml.used_mib(i) for i in range(self.nvml.count)} if self.nvml.available else {}

    def held_now(self, devices: list[int]) -> dict[int, float]:
        """MiB above the baseline on each of `devices` now (what a sleeping server still holds)."""
        if not self.nvml.available:
            return {}
        return {i: round(max(0.0, self.nvml.used_mib(i) - self.baseline.get(i, 0.0)), 1) for i in devices}

    def add_to_baseline(self, mib: dict[int, float]) -> None:
        """Move the baseline by `mib` per GPU: up by what a sleeping server holds while it sleeps, so
        the phases beside it are checked for their own memory; back down (negative) when it wakes."""
        for i, value in mib.items():
            self.baseline[i] = self.baseline.get(i, 0.0) + value

    def wait_released(self, name: str, pgid: int, devices: list[int]) -> dict:
        """Block until the phase's memory is back; returns what was checked and how long it took."""
        start = time.monotonic()
        deadline = start + self.timeout
        while group_members(pgid):
            if time.monotonic() > deadline:
                raise PhaseError(
                    f"{name}: processes of the phase still alive after {self.timeout:.0f} s: "
                    + "; ".join(process_name(p) for p in group_members(pgid))
                )
            time.sleep(0.05)
        checked = "processes"
        if self.nvml.available and devices:
            checked = "nvml"
            while True:
                over = {i: self.nvml.used_mib(i) - self.baseline.get(i, 0.0) for i in devices}
                over = {i: mib for i, mib in over.items() if mib > self.tolerance_mib}
                if not over:
                    break
                if time.monotonic() > deadline:
                    detail = "; ".join(
                        f"GPU {i}: {mib:.0f} MiB above baseline, held by "
                        f"{', '.join(self.nvml.holders(i)) or 'no listed process'}"
                        for i, mib in over.items()
                    )
                    raise PhaseError(
                        f"{name}: GPU memory not released within {self.timeout:.0f} s: {detail}; "
                        f"stop those processes, then rerun the same command"
                    )
                time.sleep(0.2)
        return {"checked": checked, "devices": devices, "release_seconds": round(time.monotonic() - start, 3)}
