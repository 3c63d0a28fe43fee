"""Headless Chromium driven by selenium, for the web page's tests.

Debian's ``chromium`` and ``chromium-driver`` packages (scripts/browser installs
them); selenium from PyPI (the [test] extra). One browser per test; each window is
a tab of its own with its own sessionStorage, so each is a device of its own.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Callable

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
DRIVER_CANDIDATES = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")

#: flags for a headless browser run as root in a container, quiet on the network
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
    "--window-size=1100,720",
)


def find_browser() -> tuple[str, str] | None:
    """The paths of chromium and chromedriver, or None when either is missing."""
    browser = next((p for p in CHROMIUM_CANDIDATES if os.path.exists(p)), None)
    driver = next((p for p in DRIVER_CANDIDATES if os.path.exists(p)), None) or shutil.which("chromedriver")
    if browser is None or driver is None:
        return None
    return browser, driver


def start_chromium(browser: str, driver: str) -> tuple[Any, str]:
    """A new headless Chromium with a fresh profile.

    Returns:
        The selenium WebDriver and the profile directory (remove it when done).
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="goim-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    web = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    web.set_page_load_timeout(30)
    return web, profile


def wait_for(web: Any, condition: Callable[[Any], Any], what: str, timeout: float = 20.0) -> Any:
    """Poll ``condition(web)`` until it is truthy (selenium's WebDriverWait), or fail naming ``what``."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    # the page re-renders its lists: an element found a moment ago may be gone
    ignored = (NoSuchElementException, StaleElementReferenceException)
    try:
        return WebDriverWait(web, timeout, poll_frequency=0.1, ignored_exceptions=ignored).until(condition)
    except TimeoutException:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None
