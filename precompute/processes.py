"""Background servers the project starts for the demo (Airflow, the lookup API).

Each has a PID file under `var/run` and a log under `var/log`, and runs in its own process group
so that stopping it also stops its children (Airflow standalone is five processes).
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

from precompute.settings import Settings


@dataclass(frozen=True)
class Service:
    name: str
    pid_file: Path
    log: Path

    def pid(self) -> int | None:
        """The running server's PID, None when it is not running."""
        try:
            pid = int(self.pid_file.read_text().strip())
            os.kill(pid, 0)
        except (FileNotFoundError, ValueError, ProcessLookupError):
            return None
        except PermissionError:
            return pid  # alive, owned by someone else
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
        self.pid_file.write_text(str(process.pid))
        return process.pid

    def stop(self, timeout: float = 30) -> str:
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return "not running"
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
