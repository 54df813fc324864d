"""The environment Airflow runs this project's DAGs in: where the DAGs are, how tasks reach Spark
(the `spark_default` connection, from the settings) and which spark-submit they run.

Cheap to import (no Airflow): the local platform starts Airflow with these variables.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from precompute.settings import Settings, project_root

SPARK_CONN_ID = "spark_default"

# Airflow standalone keeps its state in SQLite, whose writers wait 5 s for a lock by default. On
# two busy cores the UI's "unpause on trigger" waited longer behind the scheduler and the
# triggerer and failed with "database is locked" (HTTP 500): wait up to a minute instead.
SQLITE_CONNECT_ARGS = {"timeout": 60}


def spark_connection(settings: Settings) -> str:
    """AIRFLOW_CONN_SPARK_DEFAULT for the settings' Spark master.

    The whole master URL goes in `host`: the provider builds `--master` as host[:port], and a
    `spark://local[2]` URI would silently fall back to YARN.
    """
    return json.dumps({"conn_type": "spark", "host": settings.spark_master or "local[*]"})


def airflow_environment(settings: Settings) -> dict[str, str]:
    """Variables for every Airflow process this project starts (standalone, `dag.test`)."""
    venv_bin = str(Path(sys.executable).parent)
    return {
        "AIRFLOW_HOME": str(settings.airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(project_root() / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": "4",  # 2 cores: Spark jobs, PostgreSQL and Airflow share them
        f"AIRFLOW_CONN_{SPARK_CONN_ID.upper()}": spark_connection(settings),
        # spark-submit is found on the PATH; this venv's is the one that has the project.
        "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
        "PYSPARK_PYTHON": sys.executable,
    }


def api_server_environment(port: int) -> dict[str, str]:
    """Variables for `airflow standalone` serving its UI and REST API on 127.0.0.1:`port`,
    with its SQLite state.

    Its tasks report to the Execution API of that same server, whose URL Airflow otherwise
    derives as http://localhost:8080/execution/ whatever the port: on any other port every task
    fails before it starts (the supervisor's connection is refused).
    """
    return {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": f"{__name__}.SQLITE_CONNECT_ARGS",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
    }
