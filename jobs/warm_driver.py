"""The warm driver: one long-lived Spark session that runs the jobs' stages on request.

A small run spends most of its time starting a JVM, loading classes and generating code, not on
its rows: measured on the 2-core machine, 1,000 rows took 33 s per stage through spark-submit and
11 s for ingest, score and publish together in a session that had run once before. So the local
platform keeps one driver running (`precompute spark-driver`, started by the demo) and the DAGs'
Spark tasks hand it their job: the same `jobs/<name>.py` main, in the same process, one job at a
time (Spark jobs on two cores gain nothing from running side by side).

When no driver answers, or `PRECOMPUTE_SPARK_DRIVER=submit`, the tasks spark-submit as before:
that is also the way to a cluster, where the driver's session would hold executors between
runs. The driver runs with the settings it was started with (restart it after changing them).

Protocol (HTTP on 127.0.0.1, a bearer token kept in a private file under the var folder):
`POST /jobs {"job": NAME, "args": [...], "settings": FINGERPRINT}` answers with the job's
output, line by line as it is printed, and a last line `precompute-exit: CODE`; 409 when the
client's settings put data elsewhere than the driver's (another database or lake). A client
that goes away cancels the job's Spark work. `GET /health` answers 200 while the session lives.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import http.server
import importlib
import io
import json
import queue
import secrets
import select
import shutil
import signal
import socket
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from jobs.spark import spark_session
from precompute.private_files import write_private
from precompute.settings import Settings, project_root

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# The jobs a driver runs: the DAGs' Spark tasks. Nothing else is importable through it.
JOBS = ("stages", "train", "maintenance", "lookup_log")
EXIT_PREFIX = "precompute-exit: "
MAX_REQUEST_BYTES = 1 << 20


def token_file(settings: Settings) -> Path:
    """Where the driver on the settings' port keeps its token (one file per port)."""
    return settings.var_dir / "spark-driver" / f"{settings.spark_driver_port}.token"


def fingerprint(settings: Settings) -> str:
    """The settings and the code a job runs with. A driver refuses the jobs of a client whose
    settings or code differ from its own (another database, another master, a checkout changed
    since the driver started): the client spark-submits instead, and `precompute demo` restarts
    the driver. The workers' interpreter is left out: the same venv is named in several ways."""
    values = settings.model_dump(mode="json", exclude={"spark_python"})
    values["database_url"] = (
        settings.database_url.get_secret_value() if settings.database_url else None
    )
    values["code"] = _code_version()
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()


def _code_version() -> str:
    """A digest of the Python code jobs run (`jobs/`, `precompute/`): a long-lived driver
    keeps the modules it imported, so a client running other code must not use it."""
    root = project_root()
    digest = hashlib.sha256()
    for folder in ("jobs", "precompute"):
        for path in sorted((root / folder).rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


# ---- client: what the Airflow tasks call -----------------------------------------------------


def run_remote(
    settings: Settings, job: str, args: Sequence[str], write: Callable[[str], None]
) -> int | None:
    """Run `job` on the warm driver, passing each output line to `write`; its exit code, or
    None when no driver answers (the caller spark-submits instead)."""
    if settings.spark_driver != "auto":
        return None
    try:
        token = token_file(settings).read_text().strip()
    except FileNotFoundError:
        return None
    conn = http.client.HTTPConnection("127.0.0.1", settings.spark_driver_port, timeout=2)
    try:
        conn.request(
            "POST",
            "/jobs",
            body=json.dumps({"job": job, "args": list(args), "settings": fingerprint(settings)}),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        conn.sock.settimeout(None)  # a job takes as long as it takes; Airflow's timeout rules
        answer = conn.getresponse()
    except (TimeoutError, ConnectionRefusedError):
        conn.close()
        return None  # no driver on the port: spark-submit
    try:
        if answer.status == 409:  # a driver for other settings or code: not ours to use
            write(
                f"the warm driver on port {settings.spark_driver_port} runs with other settings "
                "or code (restart it): spark-submit"
            )
            return None
        if answer.status != 200:
            raise RuntimeError(
                f"the warm driver refused the job ({answer.status}): {answer.read()[:300]!r}"
            )
        # The exit status is the last line before the driver closes the connection, nothing
        # else: a job's own output cannot end the job early, whatever it prints.
        last: str | None = None
        for raw in answer:
            if last is not None:
                write(last)
            last = raw.decode("utf-8", "replace").rstrip("\n")
        if last is not None and last.startswith(EXIT_PREFIX):
            code = last[len(EXIT_PREFIX) :]
            if code.lstrip("-").isdigit():
                return int(code)
        if last is not None:
            write(last)
        raise RuntimeError("the warm driver went away during the job (see its log)")
    finally:
        conn.close()


def driver_healthy(settings: Settings) -> bool:
    """A driver answers on the settings' port and runs jobs with these settings and code."""
    conn = http.client.HTTPConnection("127.0.0.1", settings.spark_driver_port, timeout=2)
    try:
        conn.request("GET", "/health")
        answer = conn.getresponse()
        return answer.status == 200 and json.loads(answer.read())["settings"] == fingerprint(
            settings
        )
    except (OSError, ValueError, KeyError):
        return False
    finally:
        conn.close()


# ---- server ------------------------------------------------------------------------------------


@dataclass
class _Job:
    name: str
    args: list[str]
    lines: queue.Queue[str | None] = field(default_factory=queue.Queue)
    finished: threading.Event = field(default_factory=threading.Event)
    client_left: threading.Event = field(default_factory=threading.Event)


class _Lines(io.TextIOBase):
    """stdout and stderr of a job: each whole line goes to the job's client."""

    def __init__(self, job: _Job) -> None:
        self.job = job
        self.partial = ""
        self.lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self.lock:
            *whole, self.partial = (self.partial + text).split("\n")
            for line in whole:
                self.job.lines.put(line)
        return len(text)

    def flush(self) -> None:
        pass

    def close_job(self, code: int) -> None:
        with self.lock:
            if self.partial:
                self.job.lines.put(self.partial)
            self.job.lines.put(f"{EXIT_PREFIX}{code}")
            self.job.lines.put(None)


def serve(settings: Settings) -> int:
    """Start the session, then run jobs from clients one at a time until stopped."""
    spark = spark_session(settings, "precompute-warm-driver")
    _warm_up(spark, settings.var_dir / "spark-driver" / "warm-up")
    token = secrets.token_urlsafe(32)
    jobs: queue.Queue[_Job] = queue.Queue()
    server = _Server(
        ("127.0.0.1", settings.spark_driver_port), _handler(token, fingerprint(settings), jobs)
    )
    threading.Thread(target=server.serve_forever, daemon=True, name="http").start()
    token_file(settings).parent.mkdir(parents=True, exist_ok=True)
    write_private(token_file(settings), token)  # clients find the driver once it listens
    print(
        f"warm driver: Spark {spark.version} on {spark.sparkContext.master}, "
        f"jobs on http://127.0.0.1:{settings.spark_driver_port}",
        flush=True,
    )
    stopping = _Stopping(spark)
    signal.signal(signal.SIGTERM, stopping.handle)
    try:
        while not stopping.asked:
            job = jobs.get()
            stopping.running = True
            _run(spark, job)
            stopping.running = False
            # Tables a job cached must not answer the next job's reads of the same files.
            spark.catalog.clearCache()
            if spark.sparkContext._jsc is None or spark.sparkContext._jsc.sc().isStopped():
                print("warm driver: the Spark session stopped; exiting", flush=True)
                return 1
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        with contextlib.suppress(FileNotFoundError):
            token_file(settings).unlink()
        server.shutdown()


def _warm_up(spark: SparkSession, scratch: Path) -> None:
    """What every first job would pay otherwise: Delta's classes and log replay, Parquet
    writing, code generation, the Python workers. On a scratch table, removed afterwards."""
    # pyspark is loaded by the session already; this module is imported by the DAGs' tasks.
    from pyspark.sql import functions as F

    table = str(scratch / "table")
    try:
        rows = spark.range(10_000).select(
            "id", F.col("id").cast("string").alias("s"), (F.col("id") * 0.5).alias("x")
        )
        rows.write.format("delta").mode("overwrite").save(table)
        back = spark.read.format("delta").load(table)
        back.mapInArrow(lambda batches: batches, back.schema).count()
        back.groupBy(F.col("id") % 7).agg(F.avg("x")).collect()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        # To the driver's own log, not to the client of whichever job is running.
        traceback.print_exc(file=sys.__stderr__)


class _Stopping:
    """SIGTERM (`precompute down`): idle, stop at once; during a job, cancel its Spark work so
    it fails the way any job fails (its stages record it and give back what they claimed),
    then stop. Never an exception thrown into the middle of a job."""

    def __init__(self, spark: SparkSession) -> None:
        self.spark = spark
        self.asked = False
        self.running = False

    def handle(self, signum: int, frame: object) -> None:
        self.asked = True
        if not self.running:
            raise KeyboardInterrupt
        # py4j is not safe to call from a signal handler: cancel from a thread of its own.
        threading.Thread(target=self.spark.sparkContext.cancelAllJobs, daemon=True).start()


def _run(spark: SparkSession, job: _Job) -> None:
    """One job, in this (the session's) thread, its output sent to its client."""
    out = _Lines(job)
    original: tuple[TextIO, TextIO] = (sys.stdout, sys.stderr)
    sys.stdout = sys.stderr = out
    cancel = threading.Thread(target=_cancel_when_gone, args=(spark, job), daemon=True)
    cancel.start()
    code = 1
    try:
        if job.client_left.is_set():
            print("warm driver: the client left before the job started; not run")
            return
        print(f"warm driver: {job.name} {' '.join(job.args)}")
        code = importlib.import_module(f"jobs.{job.name}").main(job.args)
    except SystemExit as exc:  # argparse refusing arguments; a job that exits
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code)
            code = 1
    except Exception:  # the client hears it; the driver goes on with the next job
        traceback.print_exc()
    finally:
        sys.stdout, sys.stderr = original
        job.finished.set()
        out.close_job(code)
        print(f"warm driver: {job.name} ended with {code}", flush=True)


def _cancel_when_gone(spark: SparkSession, job: _Job) -> None:
    """A job whose client went away (its Airflow task was stopped) stops at its next Spark
    action: its stages record the failure and release their leases as for any failure."""
    while not job.finished.is_set():
        if job.client_left.wait(0.5):
            while not job.finished.wait(1.0):
                spark.sparkContext.cancelAllJobs()
            return


def _handler(
    token: str, settings_print: str, jobs: queue.Queue[_Job]
) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # the answer ends when the connection closes

        def do_GET(self) -> None:
            if self.path != "/health":
                return self._answer(404, b"not found\n")
            return self._answer(200, json.dumps({"settings": settings_print}).encode())

        def do_POST(self) -> None:
            if self.path != "/jobs":
                return self._answer(404, b"not found\n")
            given = self.headers.get("Authorization", "")
            if not secrets.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return self._answer(401, b"a valid bearer token is required\n")
            declared = self.headers.get("Content-Length") or "0"
            length = int(declared) if declared.isdigit() else 0
            if not 0 < length <= MAX_REQUEST_BYTES:
                return self._answer(413, b"the request must be a JSON body under 1 MiB\n")
            try:
                body = json.loads(self.rfile.read(length))
                name, args = body["job"], [str(a) for a in body.get("args", [])]
                theirs = body["settings"]
            except (ValueError, KeyError, TypeError):
                return self._answer(
                    400, b'expected {"job": NAME, "args": [...], "settings": ...}\n'
                )
            if theirs != settings_print:
                return self._answer(409, b"this driver runs with other settings or code\n")
            if name not in JOBS:
                return self._answer(400, f"unknown job {name!r}: one of {JOBS}\n".encode())
            job = _Job(name, args)
            jobs.put(job)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.end_headers()
            while True:
                try:
                    line = job.lines.get(timeout=1.0)
                except queue.Empty:  # a queued or quiet job: is its client still there?
                    if _closed(self.connection):
                        job.client_left.set()
                    continue
                if line is None:
                    return None
                try:
                    self.wfile.write(line.encode("utf-8", "replace") + b"\n")
                    self.wfile.flush()
                except OSError:
                    job.client_left.set()

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # the driver prints each job's start and end itself

    return Handler


def _closed(connection: socket.socket) -> bool:
    """The peer closed its end (a request is never followed by more bytes here)."""
    ready, _, _ = select.select([connection], [], [], 0)
    if not ready:
        return False
    try:
        return connection.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True
