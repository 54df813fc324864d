"""A small client for Airflow 3's REST API: the calls the UI's Trigger button makes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from local import http
from precompute.errors import PrecomputeError

FINISHED = {"success", "failed"}


class AirflowError(PrecomputeError):
    """Airflow refused a call, or a DAG run did not succeed."""


class Airflow:
    def __init__(self, base: str, username: str, password: str) -> None:
        self.base = base.rstrip("/")
        self._token: str | None = None
        token = self._call("POST", "/auth/token", {"username": username, "password": password})
        self._token = token["access_token"]

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        # Longer than the minute Airflow's writes may wait for SQLite's lock on a busy machine
        # (jobs.airflow_environment): a slow answer is not a failed one.
        answer = http.call(method, self.base + path, body, token=self._token, timeout=90)
        if not answer.ok:
            raise AirflowError(
                f"Airflow answered {answer.status} to {method} {path}: {answer.text()[:500]}"
            )
        return answer.json()

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> None:
        """Until the DAG processor has parsed the DAG file."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._call("GET", f"/api/v2/dags/{dag_id}")
                return
            except AirflowError:
                if time.monotonic() > deadline:
                    raise AirflowError(
                        f"DAG {dag_id} did not appear in Airflow within {timeout:.0f} s: "
                        "look for import errors in the UI (Browse > DAG import errors)"
                    ) from None
                time.sleep(2)

    def unpause(self, dag_id: str) -> None:
        self._call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> str:
        """Start a run (no logical date, as the UI does); its run id."""
        run = self._call(
            "POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf}
        )
        run_id: str = run["dag_run_id"]
        return run_id

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        """The DAG's runs, as the API describes them (state, conf, triggered_by, ...)."""
        listing = self._call("GET", f"/api/v2/dags/{dag_id}/dagRuns")
        runs: list[dict[str, Any]] = listing["dag_runs"]
        return runs

    def new_run(self, dag_id: str, known: set[str], timeout: float) -> dict[str, Any]:
        """The first run of the DAG not in `known` (one Airflow started by itself: a landed
        batch, a schedule), once it appears."""
        deadline = time.monotonic() + timeout
        while True:
            fresh = [r for r in self.runs(dag_id) if r["dag_run_id"] not in known]
            if fresh:
                return min(fresh, key=lambda r: str(r.get("queued_at") or ""))
            if time.monotonic() > deadline:
                raise AirflowError(
                    f"no {dag_id} run started within {timeout:.0f} s: is the DAG paused, or "
                    "Airflow's triggerer down? (UI: Assets > landing)"
                )
            time.sleep(0.5)

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        listing = self._call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        return {t["task_id"]: t["state"] or "none" for t in listing["task_instances"]}

    def wait(
        self,
        dag_id: str,
        run_id: str,
        progress: Callable[[str], None],
        timeout: float = 1800,
    ) -> None:
        """Until the run finishes, reporting each task's state as it changes; raises with the
        failed task's log tail when the run fails."""
        deadline = time.monotonic() + timeout
        seen: dict[str, str] = {}
        while True:
            for task, state in self.task_states(dag_id, run_id).items():
                if seen.get(task) != state and state != "none":
                    progress(f"{task}: {state}")
                    seen[task] = state
            run = self._call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
            if run["state"] == "queued" and "(queued)" not in seen:
                ahead = self._call("GET", f"/api/v2/dags/{dag_id}/dagRuns?state=running")
                names = [r["dag_run_id"] for r in ahead["dag_runs"] if r["dag_run_id"] != run_id]
                if names:
                    progress(f"queued behind {', '.join(names)} (one run at a time)")
                    seen["(queued)"] = "reported"
            if run["state"] == "success":
                return
            if run["state"] == "failed":
                failed = [t for t, s in seen.items() if s in ("failed", "upstream_failed")]
                raise AirflowError(
                    f"DAG run {dag_id}/{run_id} failed at {', '.join(failed) or 'unknown'}:\n"
                    + self._log_tail(dag_id, run_id, failed[0] if failed else None)
                )
            if time.monotonic() > deadline:
                raise AirflowError(
                    f"DAG run {dag_id}/{run_id} still {run['state']} after {timeout:.0f} s"
                )
            time.sleep(3)

    def _log_tail(self, dag_id: str, run_id: str, task: str | None, lines: int = 15) -> str:
        if task is None:
            return ""
        try:
            log = self._call(
                "GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task}/logs/1"
            )
        except AirflowError as exc:
            return f"(no log: {exc})"
        content = log.get("content", "")
        if isinstance(content, list):
            content = "\n".join(
                str(item.get("event", item)) if isinstance(item, dict) else str(item)
                for item in content
            )
        return "\n".join(str(content).splitlines()[-lines:])
