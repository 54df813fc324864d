"""The Airflow tasks that run the Spark jobs: each hands `jobs/<name>.py` of this checkout to
the warm driver when one answers (`jobs/warm_driver.py`), else spark-submits it against the
`spark_default` connection, with the project's Spark settings."""

from __future__ import annotations

from typing import Any

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

from jobs import warm_driver
from jobs.airflow_environment import SPARK_CONN_ID
from jobs.spark import LOCAL_MASTER, spark_conf
from precompute.settings import Settings, project_root


def job_application(name: str) -> str:
    """The file spark-submit runs for a job: `jobs/<name>.py` of this checkout."""
    return str(project_root() / "jobs" / f"{name}.py")


class SparkJob(SparkSubmitOperator):
    """spark-submit, unless the warm driver takes the job: same job, same arguments."""

    def __init__(self, *, job: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.job = job

    def execute(self, context: Any) -> None:
        args = [str(a) for a in self.application_args or []]
        errors: list[str] = []

        def write(line: str) -> None:
            self.log.info("%s", line)
            if line.startswith("error: "):
                errors.append(line.removeprefix("error: "))

        code = warm_driver.run_remote(Settings(), self.job, args, write)
        if code is None:
            self.log.info("no warm driver answers: spark-submit")
            super().execute(context)
        elif code != 0:
            why = errors[-1] if errors else "see the task log"
            raise RuntimeError(f"{self.job} failed on the warm driver (exit {code}): {why}")


def spark_job(
    job: str, arguments_from: str | None = None, *, task_id: str | None = None, **kwargs: Any
) -> SparkJob:
    """A task (named `job` unless `task_id` says) that spark-submits `jobs/<job>.py` against
    the `spark_default` connection, with the argument list another task returned
    (`arguments_from`: "task.key")."""
    arguments = None
    if arguments_from is not None:
        task, _, key = arguments_from.partition(".")
        pulled = f"ti.xcom_pull(task_ids='{task}')" + (f"['{key}']" if key else "")
        # A template that renders to the list itself: the DAGs render native objects.
        arguments = "{{ " + pulled + " }}"
    return SparkJob(
        job=job,
        task_id=task_id or job,
        application=job_application(job),
        application_args=arguments,
        conn_id=SPARK_CONN_ID,
        name=f"precompute-{job}",
        conf=submit_conf(Settings()),
        **kwargs,
    )


def submit_conf(settings: Settings) -> dict[str, str]:
    """The session settings spark-submit must start the driver with: the JARs on its
    classpath, its memory and JVM options cannot be changed once the JVM runs. The master
    comes from the connection."""
    conf = spark_conf(settings, "precompute", settings.spark_master or LOCAL_MASTER)
    return {k: v for k, v in conf.items() if k not in ("spark.master", "spark.app.name")}
