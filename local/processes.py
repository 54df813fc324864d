"""Background servers the project starts for the demo (Airflow, the lookup API).

Each has a PID file under `var/run` and a log under `var/log`, and runs in its own process group
so that stopping it also stops its children (Airflow standalone is five processes). The PID file
holds the process's start time too: a PID the system has since given to another program is not
ours, and stopping must never signal that program's group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from local.http import healthy
from precompute.errors import PrecomputeError
from precompute.process_identity import start_time
from precompute.settings import Settings


@dataclass(frozen=True)
class Service:
    name: str
    pid_file: Path
    log: Path

    def pid(self) -> int | None:
        """The running server's PID, None when it is not running (or the PID is reused)."""
        try:
            pid_text, _, started = self.pid_file.read_text().strip().partition(" ")
            pid = int(pid_text)
        except (FileNotFoundError, ValueError):
            return None
        if not started or start_time(pid) != started:
            return None  # gone, or the PID now belongs to another program
        return pid

    def start(self, argv: Sequence[str], env: Mapping[str, str]) -> int:
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("a") as out:
            process = subprocess.Popen(
                list(argv),
                env=dict(env),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: stop() ends the children too
            )
        self.pid_file.write_text(f"{process.pid} {start_time(process.pid)}")
        return process.pid

    def wait_healthy(self, url: str, timeout: float) -> None:
        """Return once `url` answers 200; fail, naming the log, if the server exits or is slow."""
        deadline = time.monotonic() + timeout
        while not healthy(url):
            if self.pid() is None:
                raise PrecomputeError(f"{self.name} exited while starting: see {self.log}")
            if time.monotonic() > deadline:
                raise PrecomputeError(f"{self.name} did not answer {url} in {timeout:.0f} s")
            time.sleep(1)

    def stop(self, timeout: float = 30) -> str:
        pid = self.pid()
        if pid is None:
            stale = self.pid_file.exists()
            self.pid_file.unlink(missing_ok=True)
            return "not running (removed a stale PID file)" if stale else "not running"
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _group_alive(pid):
            time.sleep(0.2)
        if _group_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return f"stopped (was PID {pid})"


def _group_alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it was our child: a zombie still counts
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


def service(settings: Settings, name: str) -> Service:
    return Service(
        name, settings.var_dir / "run" / f"{name}.pid", settings.var_dir / "log" / f"{name}.log"
    )
