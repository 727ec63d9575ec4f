"""Debian's Chromium and ChromeDriver for the browser tests, installed with apt-get when missing (as
tests/slurm/localcluster.py installs Slurm), and a headless selenium session on them.

Only an absent apt-get (or no root to run it) skips; a failed install is a failure, so a CI machine
that should have a browser never passes by skipping."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from psyutil import apt_install

PACKAGES = ["chromium", "chromium-driver", "fonts-wqy-microhei"]  # a CJK font: screenshots show the Chinese
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
CJK_FONT = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")


def ensure_chromium() -> str | None:
    """Install Chromium + ChromeDriver if missing. Returns a reason to skip when apt-get is unavailable;
    raises when the install itself fails."""
    if CHROMIUM.exists() and CHROMEDRIVER.exists() and CJK_FONT.exists():
        return None
    if not shutil.which("apt-get"):
        return f"{CHROMIUM} / {CHROMEDRIVER} are not installed and there is no apt-get to install {PACKAGES}"
    if os.geteuid() != 0:
        return f"{CHROMIUM} / {CHROMEDRIVER} are not installed and apt-get needs root"
    failed = apt_install(PACKAGES)
    if failed is not None:
        raise RuntimeError(f"apt-get install {' '.join(PACKAGES)} failed: {failed}")
    return None


def headless_chrome(width: int = 1400, height: int = 1000):  # -> selenium.webdriver.Chrome
    """A headless Chromium driven through Debian's chromedriver (no Selenium Manager, no download)."""
    os.environ["SE_OFFLINE"] = "true"  # never let Selenium Manager look for a driver online
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--force-device-scale-factor=1", "--lang=zh-CN",
                "--no-first-run", "--disable-extensions", "--disable-background-networking"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=opts)
