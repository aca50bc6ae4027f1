"""Settings a model's own config bounds, checked in the pre-flight (boost, doctor, validate) from
config.json alone, before any weights load: a setting the model cannot take fails in one line
before the first phase, not at a teacher's start-up after the run's first training."""

from __future__ import annotations

from pathlib import Path

from llm2llm.config import RunConfig
from llm2llm.errors import UserError
from llm2llm.vllm_args import max_model_len, model_context


def check_context_limits(config: RunConfig, student: Path, teacher: Path) -> str:
    """What each model's context allows, as one line; a UserError naming the setting and the fix
    where a setting does not fit. A model whose config gives no plain length (RoPE scaling, no
    such key) is not checked: vLLM works that out at start-up."""
    student_context = model_context(student, config.student.trust_remote_code)
    if student_context and config.train.max_length > student_context:
        raise UserError(
            f"train.max_length {config.train.max_length} is more than the student's context ({student_context} "
            f"tokens, {student / 'config.json'}); set train.max_length={student_context} or less"
        )
    vllm = config.vllm.model_dump()
    teacher_context = model_context(teacher, config.teacher.trust_remote_code)
    return "; ".join(
        [
            _role_context(
                "student", config.student, student, student_context, config.student.eval_max_new_tokens, vllm
            ),
            _role_context(
                "teacher", config.teacher, teacher, teacher_context, config.teacher.sampling.max_new_tokens, vllm
            ),
        ]
    )


def _role_context(role: str, source, path: Path, context: int | None, new_tokens: int | None, vllm: dict) -> str:
    """The context the role's engine will run with, and the check that an answer fits in it."""
    if context is None:
        return f"{role} context not given by its config"
    limit, how = context, f"{context} tokens"
    if source.engine in ("vllm", "vllm-server"):
        options = {**vllm, "trust_remote_code": source.trust_remote_code}
        limit = max_model_len(path, options) or context
        if options.get("max_model_len") and options["max_model_len"] > context:
            how = f"{context} tokens (vllm.max_model_len {options['max_model_len']} lowered to it)"
        elif limit != context:
            how = f"{context} tokens, vllm.max_model_len {limit}"
    key = "student.eval_max_new_tokens" if role == "student" else "teacher.sampling.max_new_tokens"
    if new_tokens and new_tokens >= limit:
        raise UserError(
            f"{key} {new_tokens} leaves no room for a prompt in the {role}'s context ({limit} tokens, "
            f"{path / 'config.json'}); lower it"
        )
    return f"{role} context {how}"
