"""Debian's headless Chromium driven by Selenium and the system chromedriver, for tests and tools.

WebRTC between Chromium and a streamer on the same machine needs a private network namespace where only
loopback exists (Chromium would otherwise pick another interface's address): ``private_network`` wraps a
command in one (``unshare``, a user namespace too, so it runs without root where unprivileged user
namespaces are allowed).
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import time
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--allow-loopback-in-peer-connection", "--use-fake-ui-for-media-stream",
    "--disable-features=WebRtcHideLocalIpsWithMdns", "--autoplay-policy=no-user-gesture-required",
    "--window-size=1280,900",
)


def missing_tools() -> list[str]:
    """What a browser run needs and this machine lacks (setup.sh --dev installs them)."""
    return [tool for tool in (CHROMIUM, CHROMEDRIVER, "unshare", "ip") if not shutil.which(tool)]


def private_network(command: list[str]) -> list[str]:
    """``command`` run in a new network namespace with loopback up (and nothing else)."""
    return ["unshare", "--map-root-user", "--net", "sh", "-c", f"ip link set lo up && exec {shlex.join(command)}"]


def only_loopback() -> bool:
    """This process sees no network interface but loopback (it runs inside ``private_network``)."""
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def chromium(profile: str) -> Any:
    """A Selenium driver of a fresh headless Chromium whose user data lives in ``profile`` (a fresh folder)."""
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager download anything
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, "--use-fake-device-for-media-stream", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def wait_js(driver: Any, script: str, timeout: float, what: str) -> Any:
    """The first truthy value ``script`` returns in the page, polled every 0.1 s; TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"not within {timeout} s: {what}")
