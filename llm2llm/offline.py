"""No network at run time: every model and data set is local. The environment that says so to the
Hugging Face libraries and vLLM, set by the CLI for itself and its phases and exported by Slurm scripts."""

from __future__ import annotations

import os

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}
# What the doctor requires to be 1: the switches that stop a hub lookup.
HUB_OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def go_offline(override: bool = True) -> None:
    """Set OFFLINE_ENV in this process (inherited by its children); override=False keeps what the user set."""
    for name, value in OFFLINE_ENV.items():
        if override:
            os.environ[name] = value
        else:
            os.environ.setdefault(name, value)


def check_environment() -> None:
    """The LLM2LLM_* variables a run reads, checked before anything runs: a typo there would otherwise
    surface as a traceback mid-run (a lease that is not a number) or as a folder silently not found."""
    from llm2llm.errors import UserError

    env = os.environ
    lease = env.get("LLM2LLM_LOCK_LEASE_SECONDS")
    if lease is not None:
        try:
            ok = float(lease) > 0
        except ValueError:
            ok = False
        if not ok:
            raise UserError(f"LLM2LLM_LOCK_LEASE_SECONDS={lease!r}: give a number of seconds above 0 (default 60)")
    choices = {"LLM2LLM_LOCK": ("flock", "claim"), "LLM2LLM_PHASE_START": ("forkserver", "spawn")}
    for name, allowed in choices.items():
        if name in env and env[name] not in allowed:
            raise UserError(f"{name}={env[name]!r}: use {' or '.join(allowed)}")
    # (LLM2LLM_MODEL_DIR and LLM2LLM_WORDNET_DIR may not exist yet: provisioning creates them)
    if env.get("LLM2LLM_DATA_DIR") and not os.path.isdir(env["LLM2LLM_DATA_DIR"]):
        raise UserError(
            f"LLM2LLM_DATA_DIR={env['LLM2LLM_DATA_DIR']}: no such folder; point it at the data sets or unset it"
        )
    if env.get("LLM2LLM_MODELS") and not os.path.isfile(env["LLM2LLM_MODELS"]):
        raise UserError(f"LLM2LLM_MODELS={env['LLM2LLM_MODELS']}: no such file; point it at a registry YAML")
    host = env.get("LLM2LLM_HOSTNAME")
    if host is not None and (not host or any(c.isspace() for c in host)):
        raise UserError(f"LLM2LLM_HOSTNAME={host!r}: give a non-empty name without spaces, or unset it")
