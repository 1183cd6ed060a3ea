"""Render a report in a real headless Chromium (Debian's `chromium`, driven by Playwright)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser")) if p), None)


@dataclass
class Rendered:
    plots: list[dict[str, float | str]]  # every figure: its title and its SVG's rendered size
    errors: list[str]  # console errors and uncaught page errors
    title: str
    screenshot: Path


def render(html: Path, screenshot: Path) -> Rendered:
    if CHROMIUM is None:
        pytest.fail("chromium is not installed: run `sh scripts/system-deps.sh` (apt: chromium)")
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
            page.goto(html.resolve().as_uri(), wait_until="load")
            plots = page.evaluate("""[...document.querySelectorAll('figure.plot')].map(f => {
                const svg = f.querySelector('svg');
                const box = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
                return {title: f.dataset.plot, width: box.width, height: box.height,
                        marks: svg ? svg.querySelectorAll('path, rect, use, circle').length : 0}; })""")
            title = page.title()
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    keep = os.environ.get("QEFFBUILD_SCREENSHOTS")  # a folder to keep screenshots in, to look at them
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, Path(keep) / screenshot.name)
    return Rendered(plots, errors, title, screenshot)
