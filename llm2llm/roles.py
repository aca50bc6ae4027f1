"""The loop's two roles, built once per run from the config, the pinned models and the phase runner
(which knows the GPU plan). The steps talk to them, never to the runner, the plan or engine options.

    student.train(it, examples)                  iteration it's checkpoint (iter_NNN/student/); its train log
    student.answer(it, requests, sampling, desc) that checkpoint's answers, stored in iter_NNN/predictions.jsonl
    teacher.generate(it, requests, sampling, log_path, desc)
                                                 the teacher's answers (the run's log, then the shared cache)
    with teacher: ...                            a teacher server kept across iterations is stopped at the end

Where each runs is the plan's business: the student trains in a phase process or under torchrun /
DeepSpeed and answers with a per-phase engine; the teacher answers with a per-phase engine, with a
server kept up on GPUs of its own (plan mode split), or with a server that sleeps while the student
works (teacher.sleep).
"""

from __future__ import annotations

import os
from functools import cached_property, partial
from pathlib import Path

from llm2llm.config import RunConfig, SamplingConfig
from llm2llm.data import balance
from llm2llm.engines import EngineSpec, load_tokenizer
from llm2llm.generation import GenerationStats, generate_cached
from llm2llm.rundir import RunDir
from llm2llm.runtime.phases import DiskFull
from llm2llm.runtime.runner import PhaseRunner
from llm2llm.store import read_json
from llm2llm.tasks import Task
from llm2llm.training import TrainRequest, train_from_file, write_request
from llm2llm.vllm_server import start_vllm_server

Answers = tuple[dict[str, str], GenerationStats]


class Student:
    """Fine-tuned from its base checkpoint on a training set (one checkpoint per iteration), and run
    over requests with one of those checkpoints."""

    def __init__(self, config: RunConfig, task: Task, base: Path, identity: str, run: RunDir, runner: PhaseRunner):
        self.config, self.task, self.base, self.run, self.runner = config, task, Path(base), run, runner
        self.identity = identity  # the base checkpoint's fingerprint (the pre-flight's)

    @property
    def processes(self) -> list[int]:
        """Training nodes and processes per node: a different split can change the trained weights."""
        return [self.runner.plan.train_nodes, self.runner.plan.train_processes_per_node]

    def checkpoint(self, it: int) -> Path:
        return self.run.iteration(it) / "student"

    def train(self, it: int, examples: list[dict]) -> dict:
        """Iteration it's checkpoint, trained from the base (or, with loop.continue_training, from the
        last checkpoint) and saved atomically with its train_log.json, which is returned."""
        config, out = self.config, self.checkpoint(it)
        if not (out / "train_log.json").exists():  # else trained already, killed before the phase's marker
            init = self.checkpoint(it - 1) if config.loop.continue_training and it else None
            tb_dir = self.run.path / "tb" / f"iter_{it:03d}" if config.train.tensorboard else None
            if config.train.balance_labels:
                examples = balance(examples, self.task, config.train.seed)
            request = TrainRequest(
                self.base, examples, self.task, config.train, out, init, config.student.loading(), tb_dir
            )
            try:
                self.runner.train(f"train iter_{it:03d}", partial(write_request, request), out, train_from_file)
            except DiskFull as e:  # say what a checkpoint of this student takes (its weights, fp32 as trained)
                raise e.needing(sum(f.stat().st_size for f in self.base.glob("*.safetensors"))) from None
        return read_json(out / "train_log.json")

    def tokenizer(self, it: int):
        checkpoint = self.checkpoint(it)
        return load_tokenizer(checkpoint if checkpoint.exists() else self.base, self.config.student.trust_remote_code)

    def engine(self, it: int) -> EngineSpec:
        """Iteration it's checkpoint behind the evaluation engine: a full model folder, or base + LoRA adapter."""
        config, checkpoint = self.config, self.checkpoint(it)
        adapter = (checkpoint / "adapter_config.json").exists()
        options = {**config.vllm.model_dump(), **config.student.loading(), **self.runner.plan.vllm_options("evaluate")}
        return EngineSpec(
            config.student.engine, self.base if adapter else checkpoint, checkpoint if adapter else None, options
        )

    def answer(
        self, it: int, requests: list[dict], sampling: SamplingConfig | dict[str, SamplingConfig], desc: str
    ) -> Answers:
        """Iteration it's checkpoint answers every request (in the evaluate phase's process and devices),
        each answer stored in iter_NNN/predictions.jsonl as it arrives."""
        log_path = self.run.iteration(it) / "predictions.jsonl"
        batch_size = self.config.student.eval_batch_size
        return generate_cached(
            self.engine(it), requests, log_path, sampling, batch_size, desc, run=self.runner.on("evaluate")
        )


class Teacher:
    """Writes new examples (and, with teacher.label_check, answers them as the student is asked).
    A server kept across iterations (plan mode split, or teacher.sleep) starts on first use and stops
    when the role closes; otherwise each generate phase opens its own engine."""

    def __init__(self, config: RunConfig, task: Task, path: Path, identity: str, run: RunDir, runner: PhaseRunner):
        self.config, self.task, self.path, self.run, self.runner = config, task, Path(path), run, runner
        # the teacher's fingerprint (the pre-flight's): part of every request's key, so another teacher
        # never replays these answers
        self.identity = identity

    def __enter__(self) -> Teacher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop a kept teacher server, if one runs, and check its GPUs' memory is free again."""
        self.runner.stop_server()

    @cached_property
    def tokenizer(self):
        return load_tokenizer(self.path, self.config.teacher.trust_remote_code)

    @property
    def kept(self) -> bool:
        teacher, plan = self.config.teacher, self.runner.plan
        return (plan.mode == "split" or teacher.sleep) and teacher.engine in ("vllm", "vllm-server")

    def engine(self, it: int) -> EngineSpec:
        config, teacher, plan = self.config, self.config.teacher, self.runner.plan
        options = {**config.vllm.model_dump(), **teacher.loading(), **plan.vllm_options("generate")}
        if self.kept:
            # started once (a private Unix socket, a random key), stopped when the role closes; in sequential
            # mode with teacher.sleep, asleep while the student trains and is evaluated
            sleeps = plan.teacher_sleeps
            start = partial(start_vllm_server, self.path, options, sleeps=sleeps)
            server = self.runner.kept_server("generate", start, sleeps=sleeps)
            return EngineSpec(
                "openai",
                self.path,
                vllm=options,
                url=server.url,
                socket=server.socket,
                api_key=server.api_key,
                served_model=server.served_model,
            )
        return EngineSpec(
            teacher.engine,
            self.path,
            vllm=options,
            url=teacher.url,
            api_key=os.environ.get(teacher.api_key_env, "none") if teacher.engine == "openai" else None,
            served_model=teacher.served_model,
            server_log=self.run.path / "logs" / f"generate-server-{self.run.iteration(it).name}.log",
        )

    def generate(self, it: int, requests: list[dict], sampling: SamplingConfig, log_path: Path, desc: str) -> Answers:
        """The teacher's answer to every request (in the generate phase's process and devices), each
        stored in log_path and the shared generation cache as it arrives."""
        teacher = self.config.teacher
        return generate_cached(
            self.engine(it),
            requests,
            log_path,
            sampling,
            teacher.batch_size,
            desc,
            cache_path=self.config.cache_path(),
            run=self.runner.on("generate"),
        )
