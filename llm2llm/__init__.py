"""llm2llm: local LLM2LLM iterative data enhancement (Lee et al., 2024, arXiv 2403.15042)."""

__version__ = "0.1.0"
