"""A real one-node Slurm on localhost for the tests: munged, slurmctld and slurmd from Debian's
packages (slurm-wlm, munge; `.ci/run` installs them), each with its own key, socket, ports, state
and logs under one folder, so nothing of the machine's own setup is used or changed.

    with LocalSlurm(folder) as slurm:    # sets SLURM_CONF for sbatch / squeue / scontrol
        subprocess.run(["sbatch", ...])
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("slurmctld", "slurmd", "munged", "sbatch", "squeue", "scontrol")


def missing_binaries() -> list[str]:
    return [name for name in DAEMONS if shutil.which(name) is None and not Path("/usr/sbin", name).exists()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _binary(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


class LocalSlurm:
    def __init__(self, folder: Path, cpus: int = 2, memory_mib: int = 8000):
        self.folder = Path(folder)
        self.cpus, self.memory_mib = cpus, memory_mib
        self.conf = self.folder / "slurm.conf"
        self._saved_env = os.environ.get("SLURM_CONF")

    def _write_config(self) -> None:
        f = self.folder
        for sub in ("state", "spool", "log"):
            (f / sub).mkdir(parents=True, exist_ok=True)
        key = f / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        host = socket.gethostname().split(".")[0]
        ctld_port, slurmd_port = _free_port(), _free_port()
        self.conf.write_text(f"""ClusterName=llm2llm-test
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={f}/munge.socket
StateSaveLocation={f}/state
SlurmdSpoolDir={f}/spool
SlurmctldPidFile={f}/slurmctld.pid
SlurmdPidFile={f}/slurmd.pid
SlurmctldLogFile={f}/log/slurmctld.log
SlurmdLogFile={f}/log/slurmd.log
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobRequeue=1
KillWait=60
MinJobAge=3600
ReturnToService=2
MpiDefault=none
SchedulerType=sched/backfill
NodeName={host} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mib} State=UNKNOWN
PartitionName=local Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")

    def start(self, timeout: float = 60) -> "LocalSlurm":
        self._write_config()
        f = self.folder
        subprocess.run(
            [
                _binary("munged"),
                "--force",
                f"--key-file={f}/munge.key",
                f"--socket={f}/munge.socket",
                f"--pid-file={f}/munged.pid",
                f"--log-file={f}/log/munged.log",
                f"--seed-file={f}/munge.seed",
            ],
            check=True,
            capture_output=True,
        )
        os.environ["SLURM_CONF"] = str(self.conf)
        subprocess.run([_binary("slurmctld"), "-f", str(self.conf)], check=True, capture_output=True)
        subprocess.run([_binary("slurmd"), "-f", str(self.conf)], check=True, capture_output=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = subprocess.run(
                ["sinfo", "--noheader", "--format=%T"], capture_output=True, text=True
            ).stdout.strip()
            if state == "idle":
                return self
            time.sleep(0.5)
        logs = "\n".join(p.read_text()[-1500:] for p in (f / "log").glob("*.log"))
        self.stop()
        raise RuntimeError(f"the local Slurm did not come up (node state {state!r}):\n{logs}")

    def stop(self) -> None:
        subprocess.run(["scancel", "--full", "--user", os.environ.get("USER", "root")], capture_output=True)
        import psutil

        for name in ("slurmd", "slurmctld", "munged"):
            pid_file = self.folder / f"{name}.pid"
            try:
                daemon = psutil.Process(int(pid_file.read_text().split()[0]))
                daemon.send_signal(signal.SIGTERM)
                daemon.wait(timeout=20)
            except (OSError, ValueError, psutil.NoSuchProcess):
                pass
            except psutil.TimeoutExpired:
                daemon.kill()
        if self._saved_env is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = self._saved_env

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` as key -> value."""
        out = subprocess.run(
            ["scontrol", "show", "job", job_id, "--oneliner"], capture_output=True, text=True, check=True
        ).stdout
        return dict(item.split("=", 1) for item in out.split() if "=" in item)

    def __enter__(self) -> "LocalSlurm":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
