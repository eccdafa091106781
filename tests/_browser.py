"""Headless Debian Chromium driven by Playwright (the console it is pointed at:
``ca_server.start_console``).

Nothing is downloaded: Playwright (PyPI) launches ``/usr/bin/chromium`` by
``executable_path``. Each user is a browser context presenting that user's client
certificate through Playwright's ``client_certificates``: Playwright's driver (Node.js)
makes the TLS connection to the console itself, with the certificate and key, and
relays it to the page. So the console's server certificate is checked by Node, and the
CA is trusted by starting the driver with ``NODE_EXTRA_CA_CERTS`` naming the CA root —
not by ``ignore_https_errors``: a console whose certificate does not chain to its CA
fails the page (Playwright answers 503 "client-certificate error").

Missing chromium or playwright: a skip with the reason on a laptop, a failure under
``MTLSKIT_REQUIRE_INTEGRATION=1`` (CI), as ``conftest.require_program`` does.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from conftest import require_program

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext

CHROMIUM = "/usr/bin/chromium"
# Quiet, deterministic, no network of its own: the browser talks to the console only.
ARGS = (
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
)


def require_browser() -> str:
    """Chromium's path once both it and playwright are here: else skip, or fail in CI."""
    found = require_program("chromium")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        message = "playwright is not installed in this venv; pyproject's test extra has it"
        if os.environ.get("MTLSKIT_REQUIRE_INTEGRATION") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM if Path(CHROMIUM).exists() else found


@dataclass
class Chromium:
    """One headless Chromium whose Playwright driver trusts ``trust`` (PEM); a context per user."""

    browser: Browser
    origin: str

    def user(self, cert: Path, key: Path, **options: Any) -> BrowserContext:
        """A fresh context (own cookies) presenting ``cert`` (chain PEM) and ``key`` to
        ``origin``; nothing else is offered to any other origin."""
        offered = {"origin": self.origin, "certPath": str(cert), "keyPath": str(key)}
        return self.browser.new_context(client_certificates=[offered], **options)


@contextlib.contextmanager
def chromium(trust: Path, origin: str) -> Iterator[Chromium]:
    """Headless Chromium for ``origin`` (https://127.0.0.1:PORT), closed (with its driver) after."""
    executable = require_browser()
    from playwright.sync_api import sync_playwright

    previous = os.environ.get("NODE_EXTRA_CA_CERTS")
    os.environ["NODE_EXTRA_CA_CERTS"] = str(trust)  # read once, when the driver starts
    try:
        manager = sync_playwright()
        playwright = manager.start()
    finally:
        if previous is None:
            os.environ.pop("NODE_EXTRA_CA_CERTS", None)
        else:
            os.environ["NODE_EXTRA_CA_CERTS"] = previous
    try:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=list(ARGS)
        )
        try:
            yield Chromium(browser=browser, origin=origin)
        finally:
            browser.close()
    finally:
        manager.__exit__(None, None, None)
