"""The local platform as commands: the demo, stopping what the project started, the settings."""

from __future__ import annotations

import argparse

from cli.parsers import Commands
from jobs import warm_driver
from local import demo
from local.embedded_pg import embedded_server
from local.processes import service
from precompute.settings import Settings, printable


def add_to(commands: Commands) -> None:
    commands.add_parser("settings", help="print the effective settings").set_defaults(
        handler=show_settings
    )
    commands.add_parser("demo", help="run the main job on the embedded defaults").set_defaults(
        handler=run_demo
    )
    commands.add_parser("down", help="stop everything the project started").set_defaults(
        handler=down
    )
    commands.add_parser(
        "spark-driver", help="run the warm Spark driver the DAGs hand their Spark jobs to"
    ).set_defaults(handler=spark_driver)


def show_settings(args: argparse.Namespace, settings: Settings) -> int:
    for name, value in printable(settings).items():
        print(f"{name} = {value}")
    return 0


def run_demo(args: argparse.Namespace, settings: Settings) -> int:
    return demo.run(settings)


def spark_driver(args: argparse.Namespace, settings: Settings) -> int:
    return warm_driver.serve(settings)


def down(args: argparse.Namespace, settings: Settings) -> int:
    for name in ("lookup-api", "airflow", "spark-driver"):
        print(f"{name}: {service(settings, name).stop()}")
    if settings.embedded_database:
        print(f"database: {embedded_server(settings).stop()}")
    return 0
