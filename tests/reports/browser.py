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
    misaligned: list[str]  # table columns whose header and cells align differently
    covered: list[str]  # plots whose legend covers a bar or a dot


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
            misaligned = page.evaluate("""[...document.querySelectorAll('table')].flatMap(t => {
                const heads = [...t.querySelectorAll('thead th')];
                const first = t.querySelector('tbody tr');
                if (!first) return [];
                return [...first.querySelectorAll('td')].flatMap((td, i) => {
                    const a = getComputedStyle(heads[i]).textAlign, b = getComputedStyle(td).textAlign;
                    return a === b ? [] : [`${heads[i].textContent}: header ${a}, cells ${b}`]; }); })""")
            covered = page.evaluate("""[...document.querySelectorAll('figure.plot')].flatMap(f => {
                const legend = f.querySelector('g[id^="legend"]');
                if (!legend) return [];
                const l = legend.getBoundingClientRect();
                const marks = [...f.querySelectorAll('g[id^="patch_"], g[id^="PathCollection"] use')]
                    .filter(m => !legend.contains(m)).slice(0);
                const hit = marks.slice(2).some(m => { const r = m.getBoundingClientRect();
                    return r.width > 0 && r.left < l.right - 1 && r.right > l.left + 1 && r.top < l.bottom - 1
                        && r.bottom > l.top + 1; });
                return hit ? [f.dataset.plot] : []; })""")
            title = page.title()
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    keep = os.environ.get("QEFFBUILD_SCREENSHOTS")  # a folder to keep screenshots in, to look at them
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, Path(keep) / screenshot.name)
    return Rendered(plots, errors, title, screenshot, misaligned, covered)
