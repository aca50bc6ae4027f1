"""llm2llm: local LLM2LLM iterative data enhancement (Lee et al., 2024, arXiv 2403.15042).

from llm2llm import boost, load_run     # the Python API (llm2llm/api.py)
"""

__version__ = "0.1.0"
__all__ = ["Run", "boost", "load_run", "run_config"]


def __getattr__(name: str):
    # Loaded on first use: importing any llm2llm module must not import the loop (torch, transformers).
    # (No API name may be a module's: llm2llm.config, once imported, would shadow a `config` here.)
    if name in __all__:
        from llm2llm import api

        return getattr(api, name)
    raise AttributeError(f"module 'llm2llm' has no attribute {name!r}")
