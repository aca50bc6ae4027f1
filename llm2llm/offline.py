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
