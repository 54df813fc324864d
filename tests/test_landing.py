"""The landing contract and Airflow's watcher of the landing root, on real folders.

The watcher is the trigger class Airflow's triggerer runs; here its `run` is driven by asyncio
directly, as the triggerer does (the whole path, landing to an asset-triggered DAG run, is in
tests/test_airflow_ui.py).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from jobs.landing import MARKER, ready_folders
from jobs.landing_watch import CLASSPATH, LandingTrigger


def make_batch(root: Path, name: str, mtime: int, *, marker: bool = False) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "part-0.csv").write_text("entity_id\nc1\n")
    if marker:
        (folder / MARKER).touch()
    os.utime(folder, (mtime, mtime))
    return folder


def test_ready_folders_are_complete_visible_folders_in_landing_order(tmp_path: Path) -> None:
    make_batch(tmp_path, "b", 100)
    make_batch(tmp_path, "a", 200)
    make_batch(tmp_path, ".c.partial", 50)  # still being written
    make_batch(tmp_path, "_tmp", 50)
    (tmp_path / "stray.csv").write_text("x\n")  # a file, not a batch folder
    assert [p.name for p in ready_folders(tmp_path, require_marker=False)] == ["b", "a"]
    assert ready_folders(tmp_path / "missing", require_marker=False) == []


def test_with_the_marker_required_a_folder_waits_for_its_success_file(tmp_path: Path) -> None:
    make_batch(tmp_path, "in-progress", 100)
    done = make_batch(tmp_path, "done", 200, marker=True)
    assert ready_folders(tmp_path, require_marker=True) == [done]
    (tmp_path / "in-progress" / MARKER).touch()
    os.utime(tmp_path / "in-progress", (100, 100))
    assert [p.name for p in ready_folders(tmp_path, require_marker=True)] == ["in-progress", "done"]


def test_the_watcher_fires_once_per_landed_batch_in_landing_order(tmp_path: Path) -> None:
    make_batch(tmp_path, "old", 100)

    async def watch() -> list[dict[str, str]]:
        trigger = LandingTrigger(str(tmp_path), require_marker=False, poll_seconds=0.05)
        events = trigger.run()
        seen = [(await anext(events)).payload]  # what was there when it started
        partial = make_batch(tmp_path, ".new.partial", 300)
        waiting = asyncio.ensure_future(anext(events))
        await asyncio.sleep(0.3)
        assert not waiting.done()  # a folder being written is not announced
        partial.rename(tmp_path / "new")
        seen.append((await asyncio.wait_for(waiting, 5)).payload)
        later = asyncio.ensure_future(anext(events))
        await asyncio.sleep(0.3)
        assert not later.done()  # nothing is announced twice
        later.cancel()
        return seen

    events = asyncio.run(watch())
    assert events == [
        {"batch": "old", "path": str(tmp_path / "old")},
        {"batch": "new", "path": str(tmp_path / "new")},
    ]


def test_the_watcher_serializes_to_what_the_triggerer_rebuilds() -> None:
    trigger = LandingTrigger("/landing", require_marker=True, poll_seconds=2.0)
    classpath, kwargs = trigger.serialize()
    assert classpath == CLASSPATH
    rebuilt = LandingTrigger(**kwargs)
    assert rebuilt.serialize() == (classpath, kwargs)
