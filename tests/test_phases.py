"""The phase runner with real child processes: results, failures, a timeout, SIGTERM forwarded to
a phase's whole process group, leftovers named and killed, the memory-release check, the
training launch commands, and the sbatch script."""

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import REPO, run_cli

from llm2llm.config import resolve_config
from llm2llm.errors import UserError
from llm2llm.runtime.gpu_plan import Inventory, Plan, parse_node
from llm2llm.runtime.memory import NVML, ReleaseCheck
from llm2llm.runtime.phases import (
    DiskFull,
    PhaseError,
    call_in_child,
    disk_full_message,
    group_members,
    run_command,
    run_in_child,
)
from llm2llm.runtime.runner import training_command


def _env_value(name):
    return os.environ.get(name)


def _fail():
    raise ValueError("boom in the phase")


def _user_error():
    raise UserError("data.csv line 3: bad label; fix it")


def _die():
    os._exit(7)


def _over_quota(path):
    # what a write past the user's quota raises (no file system here enforces quotas: tmpfs has none on this kernel)
    raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), path)


def _sleep_with_grandchild(marker):
    # a grandchild in the same process group, as a vLLM engine core or a torchrun rank would be
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    Path(marker).write_text(str(child.pid))
    time.sleep(300)


def _leave_a_daemon(marker):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    Path(marker).write_text(str(child.pid))
    return "done"


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_result_environment_and_log(tmp_path):
    log = tmp_path / "phase.log"
    value = run_in_child("env", _env_value, "CUDA_VISIBLE_DEVICES", env={"CUDA_VISIBLE_DEVICES": "2,3"}, log_path=log)
    assert value == "2,3" and os.environ.get("CUDA_VISIBLE_DEVICES") != "2,3"  # only the child saw it
    assert "=== " in log.read_text()


def test_failures_carry_their_cause(tmp_path):
    with pytest.raises(PhaseError, match="boom in the phase"):
        run_in_child("fails", _fail)
    with pytest.raises(UserError, match="data.csv line 3"):
        run_in_child("user", _user_error)
    with pytest.raises(PhaseError, match=r"died \(exit code 7\)"):
        run_in_child("dies", _die)


def test_a_write_past_the_quota_is_one_line_like_a_full_disk(tmp_path):
    target = tmp_path / "runs" / "r" / "iter_001" / "student" / "model.safetensors"
    with pytest.raises(DiskFull) as failure:
        run_in_child("train iter_001", _over_quota, str(target), log_path=tmp_path / "runs" / "r" / "logs" / "t.log")
    message = str(failure.value)
    assert failure.value.quota and "\n" not in message
    assert message.startswith(f"train iter_001: your disk quota is exceeded writing {target}")
    assert "quota -s" in message and "rerun the same command" in message
    # the driver's own writes: the command line turns EDQUOT into the same kind of line
    assert "your disk quota is exceeded" in disk_full_message("llm2llm", str(target), None, quota=True)


def test_timeout_stops_the_whole_group(tmp_path):
    marker = tmp_path / "pid"
    start = time.monotonic()
    with pytest.raises(PhaseError, match="no result within 3 s"):
        run_in_child("slow", _sleep_with_grandchild, str(marker), timeout=3)
    assert time.monotonic() - start < 60
    assert not alive(int(marker.read_text()))


def test_leftover_processes_are_named_and_killed(tmp_path):
    marker = tmp_path / "pid"
    value, result = call_in_child("leaky", _leave_a_daemon, str(marker))
    assert value == "done"
    assert len(result.leftovers) == 1 and "time.sleep(300)" in result.leftovers[0]
    assert not alive(int(marker.read_text())) and group_members(result.pid) == []


def test_command_failure_quotes_the_log(tmp_path):
    log = tmp_path / "train.log"
    with pytest.raises(PhaseError) as err:
        run_command(
            "train iter_000",
            ["bash", "-c", "echo rank 0 says hello; echo 'RuntimeError: NCCL timeout' >&2; exit 3"],
            log_path=log,
            echo=False,
        )
    assert "exit code 3" in str(err.value) and str(log) in str(err.value)
    assert str(err.value).startswith("train iter_000 failed (exit code 3): RuntimeError: NCCL timeout; log: ")
    with pytest.raises(PhaseError, match="still running after 2 s"):
        run_command("hang", ["sleep", "60"], timeout=2, echo=False)


def test_sigterm_to_llm2llm_reaches_the_phase_group(tmp_path):
    """The launcher turns SIGTERM into an orderly stop: the phase's ranks get SIGTERM too."""
    marker, pids = tmp_path / "terminated", tmp_path / "pids"
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(f"""
        import signal, sys
        from launcher.cli import _terminated
        from llm2llm.runtime.phases import run_command
        signal.signal(signal.SIGTERM, _terminated)
        rank = "trap 'echo $$ >> {marker}; exit 0' TERM; sleep 300 & wait"
        script = f"bash -c \\"{{rank}}\\" & bash -c \\"{{rank}}\\" & echo $$ > {pids}; wait"
        run_command("train", ["bash", "-c", script], echo=False)
    """)
    )
    parent = subprocess.Popen([sys.executable, str(script)], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.monotonic() + 30
    while not pids.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    group = int(pids.read_text())
    assert len(group_members(group)) >= 3
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(timeout=60) == 128 + signal.SIGTERM
    assert len(marker.read_text().split()) == 2  # both "ranks" ran their TERM handler
    assert group_members(group) == []


def test_release_check_on_cpu_waits_for_the_phase_processes():
    check = ReleaseCheck(timeout=2)
    done = subprocess.Popen(["true"], start_new_session=True)
    done.wait()
    assert check.wait_released("p", done.pid, [])["checked"] == "processes"
    stuck = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        with pytest.raises(PhaseError, match=r"still alive after 2 s: \d+ \(sleep 60\)"):
            check.wait_released("evaluate iter_000", stuck.pid, [])
    finally:
        stuck.kill()
        stuck.wait()


@pytest.mark.skipif(not NVML().available, reason="no NVIDIA driver on this machine")
def test_release_check_through_nvml():
    check = ReleaseCheck(timeout=5)
    assert check.nvml.count >= 1 and 0 in check.baseline
    done = subprocess.Popen(["true"], start_new_session=True)
    done.wait()
    assert check.wait_released("p", done.pid, [0])["checked"] == "nvml"


def test_training_commands_for_one_node_slurm_and_hostfile(tmp_path, monkeypatch):
    config = resolve_config("tiny", {"train": {"cpu_processes": 2}})
    cpu = Plan("sequential", Inventory(1, 0), train_processes_per_node=2)
    argv, env = training_command(cpu, config, tmp_path / "req", 29555)
    assert argv[1:4] == ["-m", "torch.distributed.run", "--nproc-per-node=2"]
    assert "--master-port=29555" in argv and argv[-3:] == ["-m", "llm2llm.training", str(tmp_path / "req")]
    assert env["DS_ACCELERATOR"] == "cpu" and int(env["OMP_NUM_THREADS"]) >= 1

    gpus = Plan(
        "sequential",
        parse_node("8xH100:80", nodes=2),
        train_devices=[str(i) for i in range(8)],
        train_nodes=2,
        train_processes_per_node=8,
    )
    with pytest.raises(UserError, match="needs a Slurm allocation"):
        monkeypatch.delenv("SLURM_JOB_ID", raising=False)
        training_command(gpus, config, tmp_path / "req", 29555)
    hostfile = resolve_config("tiny", {"plan": {"nodes": 2, "hostfile": "/etc/hosts.ds"}})
    argv, env = training_command(gpus, hostfile, tmp_path / "req", 29555)
    assert Path(argv[0]).name == "deepspeed" and Path(argv[0]).exists()
    assert argv[1:3] == ["--hostfile=/etc/hosts.ds", "--num_nodes=2"] and "--num_gpus=8" in argv
    assert argv[-4:] == ["--no_local_rank", "--module", "llm2llm.training", str(tmp_path / "req")]
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1,2,3,4,5,6,7" and env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1"

    # under Slurm: srun starts one torchrun per node, which rendezvous at the first node
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text("#!/bin/sh\nprintf 'gpu-a01\\ngpu-a02\\n'\n")
    (bin_dir / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu-a[01-02]")
    argv, _ = training_command(gpus, config, tmp_path / "req", 29555)
    assert argv[:4] == ["srun", "--nodes=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
    assert "--nnodes=2" in argv and "--rdzv-endpoint=gpu-a01:29555" in argv and "--nproc-per-node=8" in argv


@pytest.mark.parametrize("nodes,gpus", [(1, 0), (2, 8)])
def test_sbatch_script_is_valid_bash_and_asks_for_the_right_resources(tmp_path, nodes, gpus):
    runs = tmp_path / "runs"
    run_cli(
        "slurm",
        "--profile",
        "tiny",
        "--runs-dir",
        str(runs),
        "--run",
        "job",
        "--nodes",
        str(nodes),
        "--gpus-per-node",
        str(gpus),
        "--deepspeed",
        "zero3",
        "--time",
        "02:00:00",
        "--partition",
        "gpu",
        cwd=REPO,
    )
    script = runs / "job" / "slurm.sbatch"
    text = script.read_text()
    subprocess.run(["bash", "-n", str(script)], check=True)
    assert f"#SBATCH --nodes={nodes}\n" in text and "#SBATCH --ntasks-per-node=1\n" in text
    assert "#SBATCH --time=02:00:00\n" in text and "#SBATCH --partition=gpu\n" in text
    assert "#SBATCH --requeue\n" in text and "#SBATCH --signal=B:USR1@120" in text
    assert ("#SBATCH --gpus-per-node=8\n" in text) == (gpus == 8)
    assert "export HF_HUB_OFFLINE=1" in text
    boost = next(line for line in text.splitlines() if "launcher.cli boost" in line)
    assert "--deepspeed zero3" in boost and f"--nodes {nodes}" in boost and "--run job" in boost
    assert (runs / "job" / "logs").is_dir()  # sbatch --output needs the folder to exist


def _ours(process) -> bool:
    """A process of this test session (its environment carries the session's mark, conftest.py)."""
    import psutil

    try:
        return process.environ().get("LLM2LLM_TEST_SESSION") == os.environ["LLM2LLM_TEST_SESSION"]
    except psutil.Error:
        return False


def test_no_training_rank_survives_a_sigkilled_torchrun(tmp_path, data_dir, tiny_model):
    """torchrun starts its ranks in sessions of their own; SIGKILL it mid-training and its ranks
    would be orphans outside the phase's process group. The driver kills every process it saw in
    the phase's tree, so none survives, and says which it killed."""
    import psutil
    from conftest import tiny_boost_args

    args = [*tiny_boost_args(tmp_path, data_dir, "ranks"), "--iterations", "0", "--set", "train.cpu_processes=2"]
    args += ["--set", "train.epochs=30"]  # long enough to be killed mid-training
    boost = subprocess.Popen(
        [sys.executable, "-m", "launcher.cli", *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    ranks, deadline = [], time.monotonic() + 300
    while time.monotonic() < deadline and boost.poll() is None:
        torchrun = [
            p for p in psutil.process_iter(["cmdline"]) if "torch.distributed.run" in " ".join(p.info["cmdline"] or [])
        ]
        torchrun = [p for p in torchrun if _ours(p)]
        if torchrun:
            ranks = [c for c in torchrun[0].children() if "llm2llm.training" in " ".join(c.cmdline())]
            if len(ranks) == 2 and (tmp_path / "runs" / "ranks" / "iter_000" / ".student.tmp").exists():
                time.sleep(1.0)  # seen by the driver's tree sampler (every 0.5 s)
                torchrun[0].kill()
                break
        time.sleep(0.1)
    assert len(ranks) == 2, "torchrun and its two ranks never showed up"
    _, stderr = boost.communicate(timeout=120)
    assert boost.returncode == 1 and "train iter_000" in stderr, stderr[-2000:]
    gone_by = time.monotonic() + 15
    while any(r.is_running() and r.status() != psutil.STATUS_ZOMBIE for r in ranks) and time.monotonic() < gone_by:
        time.sleep(0.2)
    alive = [r.pid for r in ranks if r.is_running() and r.status() != psutil.STATUS_ZOMBIE]
    for pid in alive:  # do not leave them to the rest of the suite
        os.kill(pid, signal.SIGKILL)
    assert alive == [], "training ranks survived their torchrun"
    killed = next(line for line in stderr.splitlines() if "of the phase still running after it ended, killed" in line)
    assert all(f"{r.pid} (" in killed and "llm2llm.training" in killed for r in ranks), killed


@pytest.mark.parametrize(
    "sent, restarts, requeued",
    [
        (signal.SIGUSR1, 0, True),  # the time limit is near: stop, then requeue
        (signal.SIGUSR1, 50, False),  # ... at most max_requeues times
        (signal.SIGTERM, 0, False),  # scancel or preemption: stop; Slurm decides
    ],
)
def test_the_sbatch_script_requeues_itself_when_its_time_limit_is_near(tmp_path, sent, restarts, requeued):
    """--signal=B:USR1@120: boost stops, and the job asks Slurm to requeue it (its training resumes from the last
    checkpoint), at most max_requeues times; SIGTERM (a cancel) stops it without a requeue."""
    runs = tmp_path / "runs"
    run_cli("slurm", "--profile", "tiny", "--runs-dir", str(runs), "--run", "job", cwd=REPO)
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.log"}\n')
    (tools / "scontrol").chmod(0o755)
    env = {**os.environ, "PATH": f"{tools}:{os.environ['PATH']}", "SLURM_JOB_ID": "7"}
    env["SLURM_RESTART_COUNT"] = str(restarts)
    job = subprocess.Popen(["bash", str(runs / "job" / "slurm.sbatch")], env=env, cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not (runs / "job" / "log.txt").exists():  # boost is running
        assert job.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    job.send_signal(sent)
    assert job.wait(timeout=120) == 0
    asked = (tmp_path / "scontrol.log").read_text() if (tmp_path / "scontrol.log").exists() else ""
    assert asked == ("requeue 7\n" if requeued else "")
