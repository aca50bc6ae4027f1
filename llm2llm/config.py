"""Run configuration: one pydantic model per component. The field descriptions are the docs:
`llm2llm config --explain` prints them, and profiles in configs/profiles/ set the values.

A run's config is resolved once (profile YAML <- CLI options <- --set overrides), validated,
and written to runs/<run>/config.yaml; rerunning the same command resumes that run.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from llm2llm.errors import UserError

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "configs"
PROFILE_DIR = CONFIG_DIR / "profiles"
DEEPSPEED_DIR = CONFIG_DIR / "deepspeed"
DEFAULT_PROFILE = "cpu-qwen"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Section):
    dataset: str = Field(
        "snips", description="Built-in task name (snips, trec, sst2, gsm8k, casehold) or path to a task spec YAML."
    )
    data_dir: str | None = Field(
        None,
        description="Folder holding one sub-folder per data set; default $LLM2LLM_DATA_DIR, else ../shared/datasets "
        "beside the repo.",
    )
    seed_size: float = Field(
        35, gt=0, description="Seed examples drawn from train: a count (>= 1) or a fraction of train (< 1)."
    )
    stratified: bool = Field(
        True,
        description="Draw the seed with the same number of examples per label (classification and multiple choice).",
    )
    test_size: int = Field(
        0, ge=0, description="Evaluate on a fixed random sample of this many test examples; 0 = the whole test split."
    )
    rng_seed: int = Field(
        0,
        ge=0,
        lt=2**32,
        description="RNG seed of the samples drawn from the data: the seed examples, the test and the validation "
        "sample (0 to 2**32 - 1). Formerly data.seed (still read, with a deprecation message).",
    )

    @model_validator(mode="before")
    @classmethod
    def _old_spelling(cls, values):
        """Keys renamed in this section (RENAMED), under their new names: a run's pinned config.yaml may
        still use an old one (old_spellings says so for profiles and --set before this)."""
        for old, (new, _) in RENAMED["data"].items():
            if isinstance(values, dict) and old in values:
                if new in values:
                    raise ValueError(f"data.{old} is the old name of data.{new}; give only data.{new}")
                values = {(new if k == old else k): v for k, v in values.items()}
        return values

    validation_size: int | None = Field(
        None,
        ge=0,
        description="Also score each iteration on a fixed random sample of this many validation examples (the task's "
        "validation split: its own file, or one held out from train), for choosing recipes and "
        "iterations without the test split; None = as many as test_size; 0 = the whole split. Tasks "
        "without a validation split skip it.",
    )


class SamplingConfig(Section):
    """How an engine samples: these fields and nothing else. A model folder's generation_config.json
    (top_k, repetition_penalty, min_p) is not applied by any engine, so the offline engine, a server
    and the transformers fallback sample alike and share cache entries."""

    temperature: float = Field(0.0, ge=0, description="0 = greedy decoding.")
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int | None = Field(
        None,
        ge=1,
        description="Cap on generated tokens; default from the task type: continuation style one example (48 tokens "
        "for classification, 320 for a GSM8K problem), chat style its tokens per example (40, 320) times "
        "the examples one request asks for, + 16.",
    )
    stop: list[str] = Field(default_factory=list, description="Stop strings; the output is cut before the first one.")
    n: int = Field(1, ge=1, description="Completions drawn per prompt, each with its own sample index and seed.")
    seed: int = Field(
        0,
        ge=0,
        lt=2**32,
        description="Sampling seed; each request derives its own from it and its key, so reruns reproduce answers.",
    )


class VLLMConfig(Section):
    tensor_parallel_size: int | None = Field(
        None,
        ge=1,
        description="GPUs one vLLM engine shards the model over (tensor parallel); None = the GPU plan decides (all "
        "the teacher's GPUs; the fewest that fit for evaluation).",
    )
    pipeline_parallel_size: int | None = Field(
        None,
        ge=1,
        description="Pipeline stages of the teacher across nodes (vLLM over Ray); None = 1 unless the teacher does "
        "not fit one node.",
    )
    dtype: str = Field(
        "auto",
        description="auto: float32 on CPU (bf16 is slower there), the checkpoint's dtype on GPU; or float32, "
        "bfloat16, float16.",
    )
    enforce_eager: bool = Field(
        True,
        description="Skip torch.compile and graph capture: a much faster start (CPU: ~36 s instead of ~140 s) for "
        "slightly slower decoding. The teacher's; the student's evaluation always runs eager (a new model folder "
        "every iteration would compile again each time).",
    )
    gpu_memory_utilization: float = Field(
        0.9, gt=0, le=1, description="GPU only: fraction of each GPU's memory the engine may take."
    )
    cpu_kv_cache_gib: int = Field(
        4,
        ge=1,
        description="CPU only: the most KV cache an engine gets, in GiB. An offline engine takes what its largest "
        "batch needs (every request at once), up to this; a server takes all of it. (vLLM zeroes it all "
        "at start-up: seconds per GiB on a CPU.)",
    )
    max_model_len: int | None = Field(
        4096,
        ge=64,
        description="Context length the engine reserves for, at most the model's own (a longer value is lowered to "
        "it); None = the model's own (can be huge).",
    )
    enable_prefix_caching: bool = Field(
        True, description="Reuse the KV cache of shared prompt prefixes (the task instructions) across requests."
    )
    block_size: int | None = Field(
        None,
        ge=16,
        description="KV cache block size in tokens; None = 32 on CPU (vLLM's CPU default, 128, is longer than most "
        "classification prompts, so their shared instructions never fill a cacheable block), vLLM's "
        "default on GPU.",
    )
    engine_in_process: bool = Field(
        True,
        description="Offline engine: run vLLM's engine core inside the phase process "
        "(VLLM_ENABLE_V1_MULTIPROCESSING=0); the phase process already isolates it, and this saves a "
        "process start (~23 s of ~28 s on the 2-core CPU).",
    )
    start_timeout: float = Field(
        900, gt=0, description="Seconds a vLLM server llm2llm starts may take to answer /health."
    )
    request_timeout: float = Field(
        600, gt=0, description="Seconds one request to a teacher server may take before it is retried."
    )
    max_retries: int = Field(3, ge=0, description="Retries (with backoff) of a failed request to a teacher server.")
    concurrency: int = Field(32, ge=1, description="Requests in flight at once to a teacher server.")


Engine = Literal["transformers", "vllm", "vllm-server", "openai"]
ENGINE_HELP = (
    "transformers: batched HF generate (the fallback); vllm: an offline vLLM engine in the phase's process; "
    "vllm-server: llm2llm starts a vLLM OpenAI server on a private Unix socket with a random API key for the phase; "
    "openai: an OpenAI-compatible server that is already running (teacher.url)."
)


class ModelSource(Section):
    model: str = Field(
        "smollm2-135m-instruct", description="Model name from configs/models.yaml, or a local model folder."
    )
    trust_remote_code: bool = Field(
        False,
        description="Run the Python code a model folder ships (config.json auto_map) in transformers and vLLM. Off: "
        "a model folder is data, not code; turn it on only for a folder whose code you have read.",
    )
    allow_pickle_weights: bool = Field(
        False,
        description="Load *.bin / *.pt weights (pickle: loading them can run code) from a folder without "
        "safetensors. Off: safetensors only.",
    )

    def loading(self) -> dict:
        """The opt-ins every loader of this model gets (model checks, engines, training)."""
        return {"trust_remote_code": self.trust_remote_code, "allow_pickle_weights": self.allow_pickle_weights}


class StudentConfig(ModelSource):
    engine: Literal["transformers", "vllm"] = Field(
        "transformers",
        description="Engine for evaluating the student: transformers or vllm (a LoRA student runs as base + adapter).",
    )
    eval_batch_size: int = Field(16, ge=1)
    eval_max_new_tokens: int | None = Field(
        None, ge=1, description="Cap on generated answer length; default from the task type."
    )
    eval_temperature: float = Field(
        0.0,
        ge=0,
        description="Decoding of the test and validation answers: 0 = greedy (default). The seed examples follow "
        "seed_eval.",
    )


class TeacherConfig(ModelSource):
    engine: Engine = Field("transformers", description="Engine for the teacher. " + ENGINE_HELP)
    url: str | None = Field(
        None,
        description="engine openai: the server's base URL, e.g. http://127.0.0.1:8000/v1. The teacher's local folder "
        "(model) still gives the tokenizer and the cache identity.",
    )
    api_key_env: str = Field(
        "LLM2LLM_TEACHER_API_KEY",
        description="engine openai: the environment variable holding the server's API key (never written to the run "
        "directory).",
    )
    served_model: str | None = Field(
        None, description="engine openai: the model name at the server; default: the first model it lists."
    )
    sleep: bool = Field(
        False,
        description="engine vllm or vllm-server, plan mode sequential: one teacher server for the whole run, put to "
        "sleep (vLLM sleep mode level 1: weights to host RAM, KV cache freed) while the student trains and is "
        "evaluated on the same GPUs, woken for each generate phase, instead of a new engine per phase (no load, "
        "no compile after the first). Needs vLLM's sleep mode (CUDA, ROCm, XPU); refused before anything runs "
        "where vLLM reports it unavailable.",
    )
    style: Literal["continuation", "chat"] = Field(
        "continuation",
        description="continuation: a list of same-label seed examples for the teacher to extend (suits small/base "
        "models); chat: the wrong example plus a request for similar ones (the paper's style, for large "
        "chat models).",
    )
    per_wrong: int = Field(1, ge=1, description="New examples requested per wrong seed example per iteration (K).")
    contrast: bool = Field(
        False,
        description="chat style: the request also says what the student answered (its most frequent wrong answer "
        "in the seed evaluation) and asks for examples whose right answer cannot be mistaken for it (learning "
        "from errors by contrast, LLMs-as-Instructors 2024).",
    )
    diversity: bool = Field(
        False,
        description="chat style: the request asks for examples that differ from each other and from the wrong one "
        "(wording, structure, length, entities) and lists those already kept for it in earlier iterations as "
        "'do not repeat these'.",
    )
    label_check: bool = Field(
        False,
        description="The teacher answers each new example as the student is asked (greedy); an example whose "
        "answer is not its intended one is dropped (filter reason label_mismatch). Its answers count in the "
        "teacher's tokens.",
    )
    coverage: int = Field(
        0,
        ge=0,
        description="The first augmentation also asks for this many new examples for every seed example the "
        "student got right (wrong ones get per_wrong); later iterations target the wrong ones only. 0 = off "
        "(the paper: wrong ones only).",
    )
    paraphrase: int = Field(
        0,
        ge=0,
        description="The first augmentation also asks for this many paraphrases of every seed example (AugGPT's "
        "request) beside the new examples for the wrong ones: every label keeps examples in the data set's own "
        "wording, and the budget's rest targets the weaknesses; later iterations target the wrong ones only. 0 = off "
        "(the paper).",
    )
    allocate: Literal["even", "seed_errors", "validation_errors"] = Field(
        "even",
        description="How an iteration's budget (per_wrong x the seed examples the student got wrong) is spread: "
        "even = per_wrong for each wrong one (the paper); seed_errors = in proportion to each seed example's "
        "wrong sampled answers (seed_eval.samples); validation_errors = over every seed example in proportion "
        "to its label's error rate on the validation split (classification; S3, 2023): the budget goes to the "
        "labels the student confuses, which 14 memorised seed examples cannot show. Chat requests ask for at "
        "most per_wrong examples each; a larger share is asked in several.",
    )
    show_seed: int = Field(
        0,
        ge=0,
        description="chat style: the request starts with up to this many other seed examples and their right "
        "answers (the wrong one's label first, then the others in turn), so the teacher sees where the data set "
        "draws each label's boundary instead of guessing it from the label's name. 0 = off (the paper).",
    )
    shots: int = Field(4, ge=0, description="continuation style: same-label seed examples shown before the wrong one.")
    batch_size: int = Field(16, ge=1)
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(temperature=0.8, top_p=0.95))

    @model_validator(mode="after")
    def _sleep_needs_a_vllm_server(self):
        if self.sleep and self.engine not in ("vllm", "vllm-server"):
            raise ValueError(
                f"teacher.sleep keeps a vLLM server asleep between generate phases; teacher.engine={self.engine} "
                "has none: set teacher.engine=vllm (or vllm-server), or teacher.sleep=false"
            )
        return self


class SeedEvalConfig(Section):
    """How the student is run over its seed examples to find the ones it gets wrong (step 2).
    Greedy decoding of a student that has memorised a small seed finds almost nothing; sampling,
    as the official code does (temperature 0.7, top_p 0.9), finds the examples it is unsure of."""

    temperature: float = Field(0.0, ge=0, description="0 = greedy; the official code samples at 0.7.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling when temperature > 0 (official code: 0.9).")
    samples: int = Field(
        1, ge=1, description="Answers drawn per seed example (each with its own seed); > 1 needs temperature > 0."
    )
    wrong_if: Literal["any", "majority"] = Field(
        "any",
        description="With several samples: a seed example is wrong if any sample is wrong, or if at least half are.",
    )
    rank_by: Literal["errors", "confidence", "random"] = Field(
        "errors",
        description="Which seed examples the teacher is asked about: errors = those answered wrong (wrong_if); "
        "confidence = the `weakest` ones by the student's log-probability of the right answer (from the "
        "evaluation engine), right or wrong, so a student that answers everything right still has its least "
        "certain examples targeted; random = `weakest` of them drawn at random (data.rng_seed), whatever the "
        "student answered: the control that says what targeting the weak ones is worth at the same budget.",
    )
    weakest: float = Field(
        0.5,
        gt=0,
        description="rank_by confidence or random: how many seed examples to target, a count (>= 1) or a fraction "
        "(< 1).",
    )

    @model_validator(mode="after")
    def _samples_need_sampling(self):
        if self.samples > 1 and self.temperature == 0:
            raise ValueError(
                "seed_eval.samples > 1 draws the same greedy answer each time; set seed_eval.temperature > 0 (e.g. "
                "0.7)"
            )
        return self


class TrainConfig(Section):
    epochs: float = Field(5, gt=0)
    learning_rate: float = Field(1e-4, gt=0)
    batch_size: int = Field(8, ge=1, description="Per-device batch size.")
    grad_accum: int = Field(1, ge=1)
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    max_length: int = Field(
        256, ge=16, description="Prompt + answer tokens; longer examples are cut from the left of the prompt."
    )
    lora: bool = Field(False, description="Train a LoRA adapter (PEFT) instead of all weights.")
    lora_r: int = Field(16, ge=1, le=512, description="LoRA rank (vLLM serves adapters up to rank 512).")
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    lora_target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    seed: int = Field(0, ge=0, lt=2**32, description="RNG seed (numpy accepts 0 to 2**32 - 1).")
    balance_labels: bool = Field(
        False,
        description="Classification: train on a label-balanced copy of the training set, each label's examples "
        "repeated up to the most common label's count (whole copies, then a seeded draw), so new examples of some "
        "labels only do not shift the student's prior; no teacher tokens, train.jsonl unchanged.",
    )
    deepspeed: str | None = Field(
        None,
        description="DeepSpeed ZeRO config: a preset from configs/deepspeed/ (zero2, zero3, zero3_offload) or a JSON "
        "path; None = the plain Trainer (DDP over several processes).",
    )
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass: less memory, ~30 % more compute."
    )
    checkpoint_minutes: float = Field(
        30,
        ge=0,
        description="Save a resumable checkpoint of a training phase (weights, optimizer, scheduler, RNG states; the "
        "last one kept, in iter_NNN/student-checkpoints/) at most this often, so that a preempted, requeued or killed "
        "phase resumes from it when the command is rerun; 0 = by time never. A SIGTERM (preemption, Slurm's "
        "time-limit warning) also saves one, at the end of the step it arrives in.",
    )
    checkpoint_steps: int = Field(
        0, ge=0, description="Also save a resumable checkpoint every N optimizer steps (0 = by steps never)."
    )
    tensorboard: bool = Field(
        True,
        description="TensorBoard logs under runs/<run>/tb/: training loss and learning rate per iteration "
        "(iter_NNN), accuracy and examples per iteration (loop); skipped where the tensorboard package is missing.",
    )
    cpu_processes: int = Field(
        1,
        ge=1,
        description="Training processes on a machine without GPUs (torchrun, gloo); on GPUs the plan starts one per "
        "GPU.",
    )
    ddp_timeout: int = Field(
        1800,
        ge=10,
        description="Seconds a collective (NCCL on GPU, gloo on CPU) may wait before the training phase fails.",
    )


Method = Literal["llm2llm", "plain", "one-shot", "auggpt", "eda"]
METHOD_HELP = (
    "llm2llm: each iteration the teacher writes new examples for the seed examples the student got wrong; "
    "plain: fine-tuning on the seed alone (iteration 0 only); "
    "one-shot: as many teacher examples as llm2llm asks for, all generated at once from the seed examples wrong at "
    "iteration 0; "
    "auggpt: the teacher paraphrases every seed example (Dai et al. 2023); "
    "eda: synonym replacement, random insertion, swap and deletion over WordNet (Wei & Zou 2019). "
    "Every method starts with iteration 0 = plain fine-tuning; the baselines add one augmented iteration."
)


class LoopConfig(Section):
    method: Method = Field("llm2llm", description=METHOD_HELP)
    iterations: int = Field(
        2,
        ge=0,
        description="Augmentation iterations after iteration 0 (plain fine-tuning on the seed); method llm2llm only.",
    )
    continue_training: bool = Field(
        False,
        description="Fine-tune each iteration from the last student instead of the base checkpoint (the paper "
        "re-trains from base).",
    )
    augment_synthetic: bool = Field(
        False,
        description="Also augment wrong synthetic examples, not only seed examples (the paper augments seed only).",
    )
    keep_checkpoints: bool = Field(
        False,
        description="Keep every iteration's student; by default only the last one and the one selected on "
        "validation stay on disk.",
    )
    share_iteration0: bool = Field(
        True,
        description="Reuse iteration 0 (plain fine-tuning and its scores) from another run with the same student, "
        "seed examples, training recipe and evaluation settings (iteration0_cache), and publish this run's for "
        "others; iter_000/shared.json says which.",
    )
    near_duplicate_rouge_l: float = Field(
        0.95,
        gt=0,
        le=1,
        description="Drop a generated example whose ROUGE-L F1 against any training or test input exceeds this "
        "(official code: 0.95).",
    )


class BaselineConfig(Section):
    one_shot_per_wrong: int | None = Field(
        None,
        ge=1,
        description="one-shot: new examples per wrong seed example; None = teacher.per_wrong x loop.iterations (what "
        "llm2llm asks for in all its iterations, at most).",
    )
    one_shot_total: int | None = Field(
        None,
        ge=1,
        description="one-shot: total new examples to ask for, spread evenly over the wrong seed examples (e.g. what "
        "an llm2llm run with the same seed generated, to match its teacher budget); overrides "
        "one_shot_per_wrong.",
    )
    auggpt_per_example: int = Field(4, ge=1, description="auggpt: paraphrases asked of the teacher per seed example.")
    eda_alpha: float = Field(
        0.1,
        gt=0,
        le=0.5,
        description="eda: share of words changed by each operation (the EDA paper's alpha; its default 0.1).",
    )
    eda_num_aug: int = Field(
        9, ge=1, description="eda: augmented sentences per seed example (the EDA paper's default 9)."
    )
    wordnet_dir: str | None = Field(
        None,
        description="eda: folder with WordNet 3.0's database files (data.noun, index.sense, ...); default "
        "$LLM2LLM_WORDNET_DIR, else /usr/share/wordnet (Debian: apt-get install wordnet-base "
        "wordnet-sense-index).",
    )


class PlanConfig(Section):
    mode: Literal["auto", "sequential", "split"] = Field(
        "auto",
        description="sequential: each phase gets all the node's GPUs and the teacher's process ends before training; "
        "split: the teacher server stays up on its own GPUs for all iterations while the student trains "
        "on the others (no teacher start per iteration); auto: split where the plan finds it fits (one node of "
        "several GPUs, a vLLM teacher that fits on some of them and a student that trains on the rest), else "
        "sequential (always on a CPU machine).",
    )
    gpus: str = Field(
        "auto",
        description="GPUs to use: auto = all NVML lists (or CUDA_VISIBLE_DEVICES), or a comma list of indices/UUIDs.",
    )
    nodes: int = Field(
        1,
        ge=1,
        description="Nodes the student trains on (Slurm allocation or plan.hostfile); the teacher spans nodes only "
        "if it does not fit one.",
    )
    hostfile: str | None = Field(
        None,
        description="Multi-node training without Slurm: a DeepSpeed hostfile ('host slots=N' per line); the "
        "deepspeed launcher starts the ranks over ssh.",
    )
    teacher_gpus: int | None = Field(
        None, ge=1, description="split mode: GPUs the teacher server holds; None = the fewest that fit it."
    )
    teacher_kv_cache_gib: float = Field(
        4.0,
        ge=0,
        description="Memory per GPU the plan reserves for the teacher's KV cache (at least one vllm.max_model_len "
        "sequence).",
    )
    overhead_gib: float = Field(
        3.0, ge=0, description="Memory per GPU the plan reserves for the CUDA context, NCCL buffers and fragmentation."
    )
    phase_timeout: float | None = Field(
        None,
        gt=0,
        description="Seconds a train/evaluate/generate phase may run before it is stopped; None = no limit.",
    )
    release_timeout: float = Field(
        120,
        gt=0,
        description="Seconds a finished phase's processes and GPU memory get to go away before the run stops.",
    )
    release_tolerance_mib: float = Field(
        512, ge=0, description="GPU memory above the run's starting baseline still counted as released."
    )


RUN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+=@-]{0,199}")


class RunConfig(Section):
    run: str = Field(
        "",
        description="Run name; runs/<run>/ holds everything. Default: <dataset>-<profile>[-<method>][-seed<N>] "
        "(method and seed when not the defaults).",
    )
    runs_dir: str = Field("runs", description="Folder holding run directories.")
    profile: str = Field(DEFAULT_PROFILE, description="The profile the run was built from (recorded).")
    generation_cache: str = Field(
        "",
        description="Folder caching every teacher answer by (teacher fingerprint, prompt, sampling, sample), one "
        "file each; shared by all runs that name it, on any host (safe on NFS/Lustre). Default: "
        "<runs_dir>/generation-cache (an older <folder>.sqlite cache is imported).",
    )
    cache_group: bool = Field(
        False,
        description="Share the generation cache with its folder's group: the folder 2770 (setgid), entries 0660, "
        "signed with a key in the folder the group can read, so a read trusts what any group member wrote. Off: the "
        "cache is yours alone (0700), signed with your own key (~/.config/llm2llm/cache-key).",
    )
    iteration0_cache: str = Field(
        "",
        description="Folder of shared iterations 0, one per hash of what they depend on (loop.share_iteration0). "
        "Default: <runs_dir>/iteration0-cache.",
    )
    vllm: VLLMConfig = Field(default_factory=VLLMConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    student: StudentConfig = Field(default_factory=StudentConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    seed_eval: SeedEvalConfig = Field(default_factory=SeedEvalConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    loop: LoopConfig = Field(default_factory=LoopConfig)
    baselines: BaselineConfig = Field(default_factory=BaselineConfig)
    plan: PlanConfig = Field(default_factory=PlanConfig)

    @model_validator(mode="after")
    def _seed_size_is_count_or_fraction(self):
        if self.run and not RUN_NAME.fullmatch(self.run):
            raise ValueError(
                f"run {self.run!r}: a run is one folder in runs_dir; name it with letters, digits and . _ - + = @ "
                "(no /, not starting with . or -, at most 200 characters)"
            )
        size = self.data.seed_size
        if size >= 1 and size != int(size):
            raise ValueError(f"data.seed_size {size} is neither a whole count nor a fraction below 1")
        if self.train.deepspeed:
            check_deepspeed_config(deepspeed_config_path(self.train.deepspeed))
        chat_only = [name for name in ("contrast", "diversity", "show_seed") if getattr(self.teacher, name)]
        if chat_only and self.teacher.style != "chat":
            raise ValueError(
                f"teacher.{chat_only[0]} adds to the chat request; set teacher.style=chat or turn "
                f"teacher.{chat_only[0]} off"
            )
        if self.teacher.engine == "openai" and not self.teacher.url:
            raise ValueError(
                "teacher.engine openai needs teacher.url (the server's base URL, e.g. http://127.0.0.1:8000/v1)"
            )
        return self

    def planned_iterations(self) -> int:
        """Iterations after iteration 0: the loop's count for llm2llm, one augmented iteration for the
        other augmentation methods, none for plain fine-tuning."""
        return {"llm2llm": self.loop.iterations, "plain": 0}.get(self.loop.method, 1)

    def cache_path(self) -> Path:
        return Path(self.generation_cache) if self.generation_cache else Path(self.runs_dir) / "generation-cache"

    def iteration0_cache_path(self) -> Path:
        return Path(self.iteration0_cache) if self.iteration0_cache else Path(self.runs_dir) / "iteration0-cache"


def deepspeed_config_path(name: str) -> Path:
    """A preset name from configs/deepspeed/ or a path to a DeepSpeed JSON config."""
    path = Path(name)
    if path.suffix != ".json":
        path = DEEPSPEED_DIR / f"{name}.json"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in DEEPSPEED_DIR.glob("*.json")))
        raise ValueError(f"train.deepspeed {name!r}: no {path}; use a preset ({known}) or a JSON file path")
    return path.resolve()


def check_deepspeed_config(path: Path) -> None:
    """What a DeepSpeed JSON must say for this loop, checked before anything runs: valid JSON, a
    ZeRO stage of 0-3, and under ZeRO-3 the weights gathered into one file when the student is saved
    (else the Trainer leaves only ZeRO shards, and evaluation fails in vLLM one phase later)."""
    try:
        ds = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: train.deepspeed is not valid JSON ({e.msg}); fix that line") from None
    zero = ds.get("zero_optimization", {}) if isinstance(ds, dict) else None
    if not isinstance(zero, dict):
        raise ValueError(f'{path}: zero_optimization must be an object with a stage, e.g. {{"stage": 2}}')
    stage = zero.get("stage", 0)
    if stage not in (0, 1, 2, 3):
        raise ValueError(f"{path}: zero_optimization.stage is {stage!r}; use 0, 1, 2 or 3")
    gather = zero.get(
        "stage3_gather_16bit_weights_on_model_save", zero.get("stage3_gather_fp16_weights_on_model_save")
    )
    if stage == 3 and gather is not True:
        raise ValueError(
            f"{path}: ZeRO-3 without zero_optimization.stage3_gather_16bit_weights_on_model_save: true saves only "
            "ZeRO shards, which evaluation cannot load; add it (as configs/deepspeed/zero3.json has it)"
        )


def format_validation_error(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    if first["type"] == "extra_forbidden":
        return f"{source}: unknown key '{where}'; see `llm2llm config --explain` for the valid keys"
    got = f" (got {first['input']!r})" if "input" in first and not isinstance(first["input"], dict) else ""
    return f"{source}: {where}: {first['msg']}{got}; fix the value or see `llm2llm config --explain`"


def deep_merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def preset_path(name: str, folder: Path, kind: str) -> Path:
    """A YAML file's path, or the name of a preset in `folder` (configs/profiles/, configs/sweeps/)."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise UserError(f"{kind} file {path} not found; give an existing YAML path or a preset name from {folder}")
        return path
    path = folder / f"{name}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in folder.glob("*.yaml")))
        raise UserError(f"unknown {kind} '{name}': no {path}; known {kind}s: {known}")
    return path


def profile_path(profile: str) -> Path:
    return preset_path(profile, PROFILE_DIR, "profile")


def load_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}:{line} is not valid YAML ({getattr(e, 'problem', e)}); fix the syntax") from None
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of keys at the top level, got {type(data).__name__}")
    return data


def load_profile(path: Path, seen: tuple = ()) -> dict:
    """A profile's values; `extends: <profile>` starts from another profile's, which must itself be
    self-contained (one level: what a profile runs is read in at most two files)."""
    values = load_yaml(path)
    parent = values.pop("extends", None)
    if parent is None:
        return values
    if seen:
        raise UserError(
            f"{path}: extends {parent!r}, but it is itself extended by {seen[-1]!r}; a profile extends only a "
            f"self-contained one: copy {path.name}'s values into {seen[-1]!r}, or extend {parent!r} directly"
        )
    parent_path = Path(str(parent))
    if parent_path.suffix in (".yaml", ".yml") and not parent_path.is_absolute():
        parent_path = path.parent / parent_path  # a profile file's `extends` is relative to its own folder
    return deep_merge(load_profile(profile_path(str(parent_path)), (*seen, str(path.name))), values)


def parse_set_option(item: str) -> dict:
    """'train.epochs=3' -> {'train': {'epochs': 3}} (value parsed as YAML)."""
    if "=" not in item:
        raise UserError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.epochs=3")
    key, raw = item.split("=", 1)
    return nested(key.strip(), yaml.safe_load(raw) if raw else "")


def nested(key: str, value) -> dict:
    """'train.epochs', 3 -> {'train': {'epochs': 3}}."""
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def task_defaults(dataset: str) -> dict:
    """A task spec's own seed_eval and teacher settings (docs/data-format.md), {} when it has none. A spec
    that does not read is left to the data loader, which says what is wrong with it."""
    path = CONFIG_DIR / "tasks" / f"{dataset}.yaml"
    if not path.is_file():
        path = Path(dataset)
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8")) if path.suffix in (".yaml", ".yml") else None
    except (OSError, yaml.YAMLError):
        return {}
    spec = spec if isinstance(spec, dict) else {}
    return {section: spec[section] for section in ("seed_eval", "teacher") if isinstance(spec.get(section), dict)}


# Keys renamed, still read: section -> {old name: new name}, with why.
RENAMED = {"data": {"seed": ("rng_seed", "it is the RNG seed (data.seed_size is the number of seed examples)")}}


def old_spellings(values: dict, source: str) -> dict:
    """`values` with renamed keys under their new names, each with a one-line deprecation message."""
    for section, names in RENAMED.items():
        for old, (new, why) in names.items():
            if isinstance(values.get(section), dict) and old in values[section]:
                log.warning("%s: %s.%s is deprecated: %s; now %s.%s", source, section, old, why, section, new)
                part = dict(values[section])
                part.setdefault(new, part.pop(old))
                part.pop(old, None)
                values = {**values, section: part}
    return values


def resolve_config(profile: str = DEFAULT_PROFILE, overrides: dict | None = None) -> RunConfig:
    """profile YAML <- the task spec's seed_eval and teacher <- CLI options and --set overrides."""
    path = profile_path(profile)
    values = old_spellings(load_profile(path), f"profile {path.name}")
    overrides = old_spellings(overrides or {}, "--set")
    values = deep_merge(values, {"profile": profile})
    dataset = deep_merge(values, overrides or {}).get("data", {}).get("dataset", DataConfig().dataset)
    values = deep_merge(values, task_defaults(str(dataset)))
    if overrides:
        values = deep_merge(values, overrides)
    try:
        config = RunConfig.model_validate(values)
    except ValidationError as e:
        raise UserError(format_validation_error(e, f"config (profile {path.name} + options)")) from None
    if not config.run:
        method = "" if config.loop.method == "llm2llm" else f"-{config.loop.method}"
        seed = f"-seed{config.data.rng_seed}" if config.data.rng_seed else ""  # the RNG seed (runs keep this name)
        config.run = f"{Path(config.data.dataset).stem}-{Path(profile).stem}{method}{seed}"
    return config


def config_from_file(path: Path) -> RunConfig:
    try:
        return RunConfig.model_validate(load_yaml(path))
    except ValidationError as e:
        raise UserError(format_validation_error(e, str(path))) from None


def config_to_yaml(config: RunConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def config_reference() -> str:
    """docs/configuration.md: every key with the schema's default, the value `make boost` runs with
    (the default profile, SNIPS) where it differs, and its meaning, one table per section (the same
    fields `explain` lists; `make docs` writes it, tests/test_docs.py checks it is current)."""
    out = [
        "# Configuration reference",
        "",
        "Generated from llm2llm/config.py by `make docs` (`llm2llm config --explain --markdown`); do not edit.",
        "Set any key with its flag (the key with dashes: `teacher.per_wrong` is `--teacher-per-wrong 6`; the",
        "keys used most have short ones: `--dataset`, `--data-dir`, `--seed-size`, `--rng-seed`, `--method`,",
        "`--iterations`, `--student`, `--teacher`, `--deepspeed`, `--mode`, `--nodes`, `--run`, `--runs-dir`), with",
        "`--set KEY=VALUE`, or in a profile (configs/profiles/); `llm2llm boost --help` lists every flag.",
        "*default*: the schema's, what",
        f"a profile that leaves the key out gets; *make boost*: what `make boost DATASET=snips` runs (profile "
        f"`{DEFAULT_PROFILE}`), where it differs.",
        "",
    ]
    boost_values = dict(line.split("  ", 1)[0].split(" = ", 1) for line in explain(resolve_config()))
    sections: dict[str, list[str]] = {}
    for line in explain():
        key, rest = line.split(" = ", 1)
        default, _, meaning = rest.partition("  ")
        section = key.split(".")[0] if "." in key else "(top level)"
        cell = lambda s: s.replace("|", "\\|")  # noqa: E731 - a pipe would end the table cell
        boost = boost_values.get(key, default)
        boost = "" if boost == default else f"`{cell(boost)}`"
        sections.setdefault(section, []).append(f"| `{key}` | `{cell(default)}` | {boost} | {cell(meaning)} |")
    for section, rows in sections.items():
        out += [f"## {section}", "", "| key | default | make boost | meaning |", "|---|---|---|---|", *rows, ""]
    return "\n".join(out)


def config_keys(model: type[BaseModel] | None = None, prefix: str = "") -> list[tuple[str, Any]]:
    """Every config key as (dotted path, its pydantic field), in the schema's order: what the CLI makes
    a flag of (launcher/options.py) and the reference documents."""
    keys = []
    for name, field in (model or RunConfig).model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            keys.extend(config_keys(field.annotation, f"{prefix}{name}."))
        else:
            keys.append((f"{prefix}{name}", field))
    return keys


def explain(config: RunConfig | None = None) -> list[str]:
    """One line per config key (config_keys) with its value in `config` (default: the schema's
    defaults) and its description: the config reference."""
    config = config if config is not None else RunConfig()
    lines = []
    for path, field in config_keys():
        value = config
        for part in path.split("."):
            value = getattr(value, part)
        lines.append(f"{path} = {value!r}  {field.description or ''}".rstrip())
    return lines
