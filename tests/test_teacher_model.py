"""The CPU teacher (Qwen2.5-Coder-1.5B-Instruct, provisioned from its PyPI part packages) loads in
transformers and in vLLM and answers the paper's chat prompt with examples the parser keeps.

Minutes on 2 cores (a 6.6 GB fp32 model, twice): marked `teacher`, run by `make test-batch`, not
`make test`. With LLM2LLM_REQUIRE_TEACHER=1 (CI) a missing folder fails instead of skipping."""

from __future__ import annotations

import json
import os

import pytest
from conftest import read_jsonl

from llm2llm.config import DataConfig, SamplingConfig, VLLMConfig
from llm2llm.data import load_task_data
from llm2llm.engines import EngineSpec, load_tokenizer, render_chat
from llm2llm.generation import generate_cached
from llm2llm.models import fingerprint, model_problem, resolve_model

pytestmark = [pytest.mark.teacher, pytest.mark.vllm]
NAME = "qwen2.5-coder-1.5b-instruct"


@pytest.fixture(scope="module")
def teacher():
    path = resolve_model(NAME)
    problem = model_problem(path)
    if problem:
        why = f"{problem}; provision it: make install (or llm2llm provision {NAME})"
        if os.environ.get("LLM2LLM_REQUIRE_TEACHER") == "1":
            pytest.fail(why)
        pytest.skip(why)
    return path


def test_the_provisioned_folder_is_a_plain_qwen2_checkpoint(teacher):
    config = json.loads((teacher / "config.json").read_text())
    assert config["model_type"] == "qwen2" and config["tie_word_embeddings"] is False  # the output layer is its own
    assert "auto_map" not in config and "quantization_config" not in config
    assert len(fingerprint(teacher)) == 16


def test_teacher_answers_the_chat_prompt_on_both_engines(teacher, data_dir, tmp_path):
    data = load_task_data(DataConfig(dataset="snips", data_dir=str(data_dir)))
    task, tokenizer = data.task, load_tokenizer(teacher)
    wrong = [ex for ex in data.train if ex["label"] == "SearchScreeningEvent"][:2]
    requests = [{"key": ex["id"], "prompt": render_chat(tokenizer, task.teacher_chat(ex, 3))} for ex in wrong]
    greedy = SamplingConfig(max_new_tokens=task.teacher_token_budget("chat", 3))
    options = VLLMConfig(cpu_kv_cache_gib=1).model_dump()  # as a run passes them (max_model_len 4096 of its 32768)
    answers = {}
    for engine in ("transformers", "vllm"):
        outputs, _ = generate_cached(
            EngineSpec(engine, teacher, vllm=options), requests, tmp_path / f"{engine}.jsonl", greedy, 2, engine
        )
        reasons = {r["key"]: r["finish_reason"] for r in read_jsonl(tmp_path / f"{engine}.jsonl")}
        for ex in wrong:
            parsed = task.parse_teacher(outputs[ex["id"]], ex, "chat")
            # three new requests that fit the budget, each a valid SNIPS-style example of the label
            assert reasons[ex["id"]] == "stop" and len(parsed) == 3, (engine, outputs[ex["id"]])
            assert all(task.generated_problem({"id": "x", **p}) is None for p in parsed), parsed
            assert all(p["label"] == "SearchScreeningEvent" and p["text"] == p["text"].lower() for p in parsed)
            assert all(p["text"] != ex["text"] for p in parsed)
        answers[engine] = outputs
    # The same token ids go to both engines; fp32 greedy decoding agrees on at least one answer.
    assert any(answers["transformers"][k] == answers["vllm"][k] for k in answers["vllm"]), answers
