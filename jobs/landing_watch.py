"""Airflow's watcher of the landing root: an event the moment a batch folder is ready, so the
scoring DAG (scheduled on the `landing` asset) starts within seconds of a batch landing, with no
cron poll.

The trigger runs in Airflow's triggerer. It lists the landing root every
`PRECOMPUTE_LANDING_POLL_SECONDS` (a directory listing, no Spark, no database) and fires once
for each ready folder (`jobs.landing`) it has not announced before. What is announced is kept
in the triggerer's memory: after a triggerer restart, folders still under the landing root are
announced again, and a scoring run that finds them ingested already plans nothing. Several
folders announced together make one run, which scores them in landing order.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from jobs.landing import ready_folders

CLASSPATH = "jobs.landing_watch.LandingTrigger"


class LandingTrigger(BaseEventTrigger):
    """Fires {"batch": NAME, "path": PATH} for each batch folder that becomes ready."""

    def __init__(self, landing_root: str, require_marker: bool, poll_seconds: float) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.landing_root = landing_root
        self.require_marker = require_marker
        self.poll_seconds = poll_seconds

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return CLASSPATH, {
            "landing_root": self.landing_root,
            "require_marker": self.require_marker,
            "poll_seconds": self.poll_seconds,
        }

    async def run(self) -> AsyncIterator[TriggerEvent]:
        announced: set[str] = set()
        root = Path(self.landing_root)
        while True:
            try:
                ready = await asyncio.to_thread(ready_folders, root, self.require_marker)
            except OSError as exc:  # the root unmounted or unreadable for a moment: look again
                self.log.warning("cannot list the landing root %s: %s", root, exc)
                await asyncio.sleep(self.poll_seconds)
                continue
            for folder in ready:
                if folder.name not in announced:
                    announced.add(folder.name)
                    self.log.info("batch %s landed: starting a scoring run", folder.name)
                    event = {"batch": folder.name, "path": str(folder)}
                    yield TriggerEvent(event)  # type: ignore[no-untyped-call]
            announced &= {f.name for f in ready}  # a folder moved away and back is new again
            await asyncio.sleep(self.poll_seconds)
