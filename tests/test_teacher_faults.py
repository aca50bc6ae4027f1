"""Teacher faults against real processes: a real vLLM server (the teacher) behind tests/faultproxy.py,
a real HTTP server that dies, answers 500, hangs, or sends empty, garbage or malformed answers.
The client under test is the one the loop uses (engine "openai", bounded retries and timeouts)."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, read_jsonl, run_cli, tiny_boost_args

from llm2llm.config import DataConfig, SamplingConfig, VLLMConfig
from llm2llm.data import load_task_data
from llm2llm.engines import EngineSpec
from llm2llm.errors import UserError
from llm2llm.generation import generate_cached, request_key
from llm2llm.runtime.phases import free_port
from llm2llm.vllm_server import VLLMServer

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm

SAMPLED = SamplingConfig(temperature=1.0, top_p=0.9, max_new_tokens=8, stop=["\n"], seed=5)
# Two requests in flight, fast backoff: the client's own bounds, small enough for a test.
FAST = dict(
    VLLMConfig(max_model_len=512, cpu_kv_cache_gib=1, concurrency=2, max_retries=2, request_timeout=30).model_dump()
)


@pytest.fixture(scope="module")
def teacher(tiny_model, tmp_path_factory):
    with VLLMServer(tiny_model, FAST, tmp_path_factory.mktemp("server") / "server.log") as server:
        yield server


class FaultProxy:
    def __init__(self, upstream: str, folder: Path):
        self.upstream, self.folder = upstream, folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.control, self.requests = folder / "control.json", folder / "requests.jsonl"
        self.proc = None

    def start(self, mode: str, **settings) -> "FaultProxy":
        self.set(mode, **settings)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(REPO / "tests" / "faultproxy.py"),
                self.upstream,
                str(self.port),
                str(self.control),
                str(self.requests),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert "fault proxy on" in self.proc.stdout.readline()
        return self

    def set(self, mode: str, **settings) -> None:
        self.control.write_text(json.dumps({"mode": mode, **settings}))
        self.requests.unlink(missing_ok=True)

    def attempts(self) -> int:
        return len(read_jsonl(self.requests)) if self.requests.exists() else 0

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
        if self.proc:
            self.proc.wait()


@pytest.fixture
def proxy(teacher, tmp_path):
    proxy = FaultProxy(str(teacher.socket), tmp_path)
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def requests(data_dir):
    data = load_task_data(DataConfig(dataset="snips", data_dir=str(data_dir)))
    prompts = [
        data.task.teacher_continuation(ex, data.train[20 + 2 * i : 22 + 2 * i]) for i, ex in enumerate(data.train[:10])
    ]
    return [{"key": request_key("faults", p, i), "prompt": p} for i, p in enumerate(prompts)]


@pytest.fixture(scope="module")
def expected(teacher, tiny_model, requests, tmp_path_factory):
    """The answers of the server itself, asked directly."""
    spec = EngineSpec("openai", tiny_model, vllm=FAST, url=teacher.url, socket=teacher.socket, api_key=teacher.api_key)
    answers, _ = generate_cached(
        spec, requests, tmp_path_factory.mktemp("direct") / "answers.jsonl", SAMPLED, 5, "direct"
    )
    return answers


def ask(proxy, teacher, tiny_model, requests, log_path, **options):
    spec = EngineSpec(
        "openai", tiny_model, vllm={**FAST, **options}, url=proxy.url, api_key=teacher.api_key, served_model="teacher"
    )
    return generate_cached(spec, requests, log_path, SAMPLED, 5, "teacher")


def test_server_dies_mid_phase_answers_are_kept_and_the_rerun_asks_only_for_the_rest(
    proxy, teacher, tiny_model, requests, expected, tmp_path
):
    proxy.start("die", after=4)
    log_path = tmp_path / "answers.jsonl"
    started = time.monotonic()
    with pytest.raises(UserError) as failure:
        ask(proxy, teacher, tiny_model, requests, log_path)
    assert time.monotonic() - started < 60  # 3 attempts with backoff, not a hang
    kept = {r["key"]: r["output"] for r in read_jsonl(log_path)}
    assert 1 <= len(kept) <= 4 and all(expected[k] == v for k, v in kept.items())
    message = str(failure.value)
    assert "\n" not in message and "cannot be reached" in message and "3 attempt(s)" in message
    assert f"{len(kept)} of 10 answers of this phase are stored in {log_path}" in message
    assert "rerun the same command" in message

    proxy.stop()
    proxy.start("ok")
    answers, stats = ask(proxy, teacher, tiny_model, requests, log_path)
    assert answers == expected
    assert (stats.from_run, stats.generated) == (len(kept), 10 - len(kept))
    assert proxy.attempts() == 10 - len(kept)  # nothing asked twice
    assert len(read_jsonl(log_path)) == 10


def test_server_errors_are_retried_with_backoff(proxy, teacher, tiny_model, requests, expected, tmp_path):
    proxy.start("error", first=3)  # the first three attempts get HTTP 500
    answers, stats = ask(proxy, teacher, tiny_model, requests, tmp_path / "answers.jsonl")
    assert answers == expected and stats.generated == 10
    assert proxy.attempts() == 13


def test_persistent_errors_fail_after_the_bounded_retries(proxy, teacher, tiny_model, requests, tmp_path):
    proxy.start("error")
    with pytest.raises(
        UserError, match=r"answered HTTP 500: .*injected failure.*, 3 attempt\(s\) \(vllm.max_retries=2"
    ):
        ask(proxy, teacher, tiny_model, requests, tmp_path / "answers.jsonl")
    assert proxy.attempts() <= 2 * 3  # two requests in flight, three attempts each; no new request after a failure
    assert read_jsonl(tmp_path / "answers.jsonl") == [] if (tmp_path / "answers.jsonl").exists() else True


def test_a_hanging_server_times_out(proxy, teacher, tiny_model, requests, tmp_path):
    proxy.start("hang")
    started = time.monotonic()
    with pytest.raises(UserError, match=r"did not answer within 2 s, 2 attempt\(s\)"):
        ask(proxy, teacher, tiny_model, requests, tmp_path / "answers.jsonl", request_timeout=2, max_retries=1)
    assert time.monotonic() - started < 45


def test_a_malformed_answer_is_a_clear_error(proxy, teacher, tiny_model, requests, tmp_path):
    proxy.start("malformed")
    with pytest.raises(UserError, match="sent something that is not an OpenAI completion"):
        ask(proxy, teacher, tiny_model, requests, tmp_path / "answers.jsonl")


def boost_args(tmp_path, data_dir, run, url):
    return [
        *tiny_boost_args(tmp_path, data_dir, run),
        "--iterations",
        "1",
        "--set",
        "teacher.engine=openai",
        "--set",
        f"teacher.url={url}",
        "--set",
        "teacher.served_model=teacher",
        "--set",
        "vllm.max_retries=2",
        "--set",
        "vllm.concurrency=2",
    ]


def test_boost_continues_after_the_teacher_dies_and_drops_garbage_answers(proxy, teacher, data_dir, tmp_path):
    env = {"LLM2LLM_TEACHER_API_KEY": teacher.api_key}
    proxy.start("die", after=3)
    args = boost_args(tmp_path, data_dir, "dies", proxy.url)
    failed = run_cli(*args, cwd=REPO, check=False, env=env)
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert failed.returncode == 2 and len(errors) == 1 and "cannot be reached" in errors[0], failed.stderr[-2000:]
    outputs = tmp_path / "runs" / "dies" / "iter_000" / "teacher_outputs.jsonl"
    kept = read_jsonl(outputs)
    assert 1 <= len(kept) <= 3

    proxy.stop()
    proxy.start("ok")
    run_cli(*args, cwd=REPO, env=env)
    stats = json.loads((outputs.parent / "teacher_stats.json").read_text())
    assert stats["from_run"] == len(kept) and stats["generated"] == stats["requests"] - len(kept)
    assert json.loads((tmp_path / "runs" / "dies" / "metrics.json").read_text())["complete"]

    # Garbage and empty text are answers, not failures: stored, then dropped by the filter.
    proxy.set("garbage")
    run_cli(
        *boost_args(tmp_path, data_dir, "garbage", proxy.url),
        "--set",
        f"generation_cache={tmp_path / 'other.sqlite'}",
        cwd=REPO,
        env=env,
    )  # its own cache: the first run's answers would be found there
    run = tmp_path / "runs" / "garbage"
    assert {r["output"] for r in read_jsonl(run / "iter_000" / "teacher_outputs.jsonl")} == {
        "\x00}{ ####\ufffd ][ \u202e"
    }
    decisions = read_jsonl(run / "iter_000" / "filter_decisions.jsonl")
    assert decisions and not any(d["kept"] for d in decisions)
    iterations = json.loads((run / "metrics.json").read_text())["iterations"]
    assert iterations[0]["kept"] == 0 and iterations[1]["train_size"] == iterations[0]["train_size"]
