"""A real browser for the UI tests: Debian's Chromium driven by Playwright, nothing downloaded.

`page()` yields a fresh page in a fresh profile on which every request that is not to the test's
own host is refused and recorded, so a test can assert that a page needs nothing from the
internet (these machines reach no CDN, and production networks may not either). When the test
fails inside the block, a screenshot of the page is saved under $PRECOMPUTE_VAR_DIR/screenshots/.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import HttpCredentials, Page, Route, ViewportSize, sync_playwright

from precompute.settings import get_settings

CHROMIUM = Path("/usr/bin/chromium")
# As root Chromium needs no sandbox; the rest keep it from calling Google's services, which on a
# closed network floods it with refused connections (see DESIGN.md, "Browsers").
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@dataclass
class Browsing:
    page: Page
    refused: list[str] = field(default_factory=list)  # URLs the page asked for off its host


@contextmanager
def page(
    name: str,
    allowed_hosts: tuple[str, ...] = ("127.0.0.1",),
    viewport: ViewportSize | None = None,
    credentials: HttpCredentials | None = None,
) -> Iterator[Browsing]:
    """A page in a fresh Chromium profile; `name` names the screenshot of a failure,
    `viewport` (Playwright's default, 1280x720, when None) what it shows of a dialog, which a
    full-page screenshot does not unroll, and `credentials` what the browser answers an HTTP
    authentication challenge with (as a person would type them into its prompt)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: `make browser` installs Debian's chromium")

    profile = tempfile.mkdtemp(prefix="precompute-chromium-")
    try:
        with sync_playwright() as playwright:
            # A persistent context is how Playwright takes a --user-data-dir: a fresh one each time.
            context = playwright.chromium.launch_persistent_context(
                profile,
                executable_path=str(CHROMIUM),
                headless=True,
                args=list(FLAGS),
                viewport=viewport,
                http_credentials=credentials,
            )
            try:
                tab = context.pages[0] if context.pages else context.new_page()
                browsing = Browsing(tab)

                def only_local(route: Route) -> None:
                    url = route.request.url
                    if urlsplit(url).hostname in allowed_hosts or url.startswith("data:"):
                        route.continue_()
                    else:
                        browsing.refused.append(url)
                        route.abort()

                context.route("**/*", only_local)
                try:
                    yield browsing
                except BaseException:
                    _screenshot(tab, name)
                    raise
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def _screenshot(tab: Page, name: str) -> None:
    folder = get_settings().var_dir / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}-{time.strftime('%Y%m%dT%H%M%S')}.png"
    try:
        tab.screenshot(path=str(path), full_page=True)
    except Exception as exc:  # the page may be what broke; the test's own error matters more
        print(f"no screenshot of {name}: {exc}")
    else:
        print(f"screenshot of the failed page: {path}")
