"""The driver's side of the worker processes: start, ask, time out, stop.

Every worker gets the same thread settings in its environment (2 threads for
OpenMP, MKL, OpenBLAS, XLA, tokenizers) and pins itself to 2 CPUs; its stderr
goes to a log file in the cache (`logs/`), shown in part when it fails.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

from data import BENCH_DIR, REPO_ROOT, cache_dir

THREADS = 2


def benchmark_cpus() -> list[int]:
    """The CPUs every worker pins itself to: the first `THREADS` this process may use."""
    return sorted(os.sched_getaffinity(0))[:THREADS]


class WorkerError(RuntimeError):
    """A worker answered with an error, died or did not answer in time."""


def worker_env(keras_backend: str | None) -> dict[str, str]:
    """The environment of a worker: 2 threads everywhere, offline hubs, our `src` first."""
    env = dict(os.environ)
    threads = str(THREADS)
    env.update(
        OMP_NUM_THREADS=threads,
        MKL_NUM_THREADS=threads,
        OPENBLAS_NUM_THREADS=threads,
        NUMEXPR_NUM_THREADS=threads,
        TF_NUM_INTRAOP_THREADS=threads,
        TF_NUM_INTEROP_THREADS="1",
        XLA_FLAGS=f"--xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads={threads}",
        JAX_PLATFORMS="cpu",
        CUDA_VISIBLE_DEVICES="",
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
        TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONUNBUFFERED="1",
    )
    paths = [str(REPO_ROOT / "src"), str(BENCH_DIR)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    if keras_backend:
        env["KERAS_BACKEND"] = keras_backend
    else:
        env.pop("KERAS_BACKEND", None)
    return env


class WorkerProcess:
    """One running `worker.py`; `request()` sends one JSON request and waits for the answer."""

    def __init__(
        self,
        engine: str | None,
        model: str | None,
        keras_backend: str | None = None,
        start_timeout: float = 120.0,
    ):
        self.name = f"{engine or 'machine'}-{model or 'none'}"
        log_dir = cache_dir() / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path: Path = log_dir / f"{self.name}.log"
        command = [sys.executable, str(BENCH_DIR / "worker.py")]
        if engine:
            command += ["--engine", engine, "--model", model or ""]
        self._log = open(self.log_path, "w")
        started = time.perf_counter()
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=worker_env(keras_backend),
            text=True,
            bufsize=1,
        )
        self._answers: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.ready = self._receive(start_timeout)
        # Interpreter start-up plus the worker's own imports, before any framework.
        self.start_seconds = time.perf_counter() - started

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self._answers.put(line)
        self._answers.put(None)

    def _receive(self, timeout: float) -> dict:
        try:
            line = self._answers.get(timeout=timeout)
        except queue.Empty:
            self.close(kill=True)
            raise WorkerError(f"{self.name}: no answer within {timeout:.0f} s") from None
        if line is None:
            self.close(kill=True)
            raise WorkerError(f"{self.name}: the process exited.\n{self.log_tail()}")
        answer = json.loads(line)
        if not answer.get("ok"):
            raise WorkerError(answer.get("error", "unknown error"))
        return answer

    def request(self, op: str, timeout: float = 600.0, **fields) -> dict:
        """Send `{"op": op, **fields}` and return the answer (raises `WorkerError`)."""
        if self._process.poll() is not None:
            raise WorkerError(f"{self.name}: the process has exited.\n{self.log_tail()}")
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps({"op": op, **fields}) + "\n")
        self._process.stdin.flush()
        return self._receive(timeout)

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def close(self, kill: bool = False) -> None:
        """Ask the worker to quit (or kill it) and wait for it."""
        if self._process.poll() is None:
            if kill:
                self._process.kill()
            else:
                try:
                    assert self._process.stdin is not None
                    self._process.stdin.write(json.dumps({"op": "quit"}) + "\n")
                    self._process.stdin.flush()
                    self._process.wait(timeout=30)
                except (OSError, subprocess.TimeoutExpired):
                    self._process.kill()
            self._process.wait()
        self._log.close()

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_prepare(model_key: str, timeout: float = 1800.0) -> None:
    """Run `worker.py --prepare MODEL`: the preset converted, the peers' exports written."""
    log = cache_dir() / "logs" / f"prepare-{model_key}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        done = subprocess.run(
            [sys.executable, str(BENCH_DIR / "worker.py"), "--prepare", model_key],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=worker_env("jax"),
            timeout=timeout,
        )
    if done.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise WorkerError(f"exporting {model_key} failed:\n{tail}")
