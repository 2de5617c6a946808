"""Open Snakemake's report in a real headless browser and click through it as a reader would.

    click_through(report_html, landing="What ran") -> list of what was visited

Debian's Chromium (/usr/bin/chromium, `apt-get install chromium`) driven by Playwright (PyPI, the `test` extra),
pointed at that executable: Playwright's own browser download (`playwright install`) is never needed. The page
must open on the workflow description (the landing page, which must contain `landing`); then every menu entry
(Workflow, Statistics, About), every category under Results, every subcategory and every item of each is clicked:
an item's view button (image, rendered HTML; a data file's button must be a download of its bytes) and its info
button (which must show the item's caption and rule). Every result must have a row of its own. Any uncaught JavaScript exception, console error or failed request, and any view that leaves the page or
its content area blank, fails with what was clicked last.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
INSTALL = "apt-get update && apt-get install -y chromium"  # Debian/Ubuntu; `make test` does it where it can


def chromium_path() -> str | None:
    """Debian's Chromium, or $FULLSPECTRUM_CHROMIUM, or None."""
    override = os.environ.get("FULLSPECTRUM_CHROMIUM")
    if override:
        return override if Path(override).exists() else None
    for candidate in CHROMIUM_CANDIDATES:
        if Path(candidate).exists():
            return candidate
    return shutil.which("chromium")


def require_browser() -> str:
    """The browser's path; outside CI a missing browser or Playwright skips, in CI (CI set) it fails, saying how to
    install them."""
    problems = []
    path = chromium_path()
    if path is None:
        problems.append(f"Chromium is not installed (as root: {INSTALL})")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problems.append("Playwright is not installed (pip install -e '.[test]', or make test)")
    if problems:
        message = "the headless-browser report test needs " + "; ".join(problems)
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


# What counts as something on screen in the content area (the right-hand pane beside the navigation).
CONTENT = "#app > div > div:last-child"
# The JavaScript that tells what the content area shows: its text, whether an image has loaded with a size, and
# whether it holds an iframe (a rendered table: a data: URI, another origin, so its document is read through
# Playwright's frame, not from the page).
_CONTENT_STATE = """(selector) => {
    const area = document.querySelector(selector);
    if (!area) return {exists: false};
    const img = area.querySelector('img');
    const frame = area.querySelector('iframe');
    return {exists: true, text: area.innerText, img: img ? {complete: img.complete, width: img.naturalWidth} : null,
            frame: frame ? {src: frame.src.slice(0, 30), text: null, tables: null} : null,
            svg: area.querySelectorAll('svg, canvas').length, app: document.querySelector('#app').innerText.length};
}"""


class ReportBrowser:
    """One page of the report with every error the browser reports collected, and the steps taken so far."""

    def __init__(self, page, url: str):
        self.page, self.url = page, url
        self.errors: list[str] = []
        self.steps: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        page.on("console", lambda msg: self.errors.append(f"console {msg.type}: {msg.text}")
                if msg.type == "error" else None)
        page.on("requestfailed", lambda request: self.errors.append(
            f"request failed: {request.url[:80]} ({request.failure})"))
        page.on("crash", lambda _: self.errors.append("the page crashed"))

    def check(self, what: str) -> None:
        """No error so far and the app still drawn; `what` names the step for the failure message."""
        self.steps.append(what)
        self.page.wait_for_timeout(50)  # let React's effects and any error events arrive
        assert not self.errors, f"after {' > '.join(self.steps[-3:])}: {self.errors}"
        length = self.page.evaluate("document.querySelector('#app') ? document.querySelector('#app').innerText.length"
                                    " : 0")
        assert length > 0, f"after {what}: the page went blank"

    def nav(self):
        return self.page.locator("nav.transition-all")

    def click_nav(self, text: str, what: str) -> None:
        """Click the navigation's menu or category entry whose visible text is exactly `text`."""
        self.nav().get_by_text(text, exact=True).first.click()
        self.check(what)

    def content_state(self) -> dict:
        state = self.page.evaluate(_CONTENT_STATE, CONTENT)
        if state.get("frame") is not None:
            handle = self.page.query_selector(f"{CONTENT} iframe")
            frame = handle.content_frame() if handle else None
            if frame is not None:
                try:
                    state["frame"].update(frame.evaluate(
                        "document.readyState === 'complete' && document.body ? {text: document.body.innerText, "
                        "tables: document.querySelectorAll('table').length} : {}"))
                except Exception as error:  # a frame navigating away while read: read it again next time
                    state["frame"]["error"] = str(error)
        return state

    def wait_content(self, predicate, what: str, timeout_ms: int = 10_000) -> dict:
        """Wait until the content area satisfies `predicate`; fail with what it shows if it never does."""
        state = self.content_state()
        waited = 0
        while not predicate(state) and waited < timeout_ms:
            self.page.wait_for_timeout(100)
            waited += 100
            state = self.content_state()
        assert predicate(state), f"after {what}: the content area shows nothing: {state}"
        self.check(what)
        return state

    def home(self) -> None:
        """Back to the menu by the breadcrumbs' first entry (the home icon)."""
        self.nav().locator("ol > li").first.locator("a").click()
        self.check("home")


def _shows_something(state: dict) -> bool:
    if not state.get("exists"):
        return False
    if state["img"] is not None:
        return state["img"]["complete"] and state["img"]["width"] > 0
    if state["frame"] is not None:
        return bool(state["frame"]["text"] and state["frame"]["text"].strip())
    return bool(state["text"].strip()) or state["svg"] > 0


def _visit_items(browser: ReportBrowser, where: str, files: int, visited: list[str]) -> None:
    """Every row of the navigation's results table: its view button, then its info button and back. Each of the
    `files` results of the list must have a row of its own (labels shared by two results would hide one)."""
    rows = browser.nav().locator("table tbody tr")
    count = rows.count()
    assert count > 0, f"{where}: no item listed"
    assert count == files, f"{where}: {count} rows for {files} results: some can be reached only by search"
    crumb = browser.nav().locator("ol > li a").last  # the category or subcategory crumb leads back here
    crumb_text = crumb.inner_text().strip()
    for index in range(count):
        row = browser.nav().locator("table tbody tr").nth(index)
        label = " / ".join(cell.strip() for cell in row.locator("td").all_inner_texts() if cell.strip())
        what = f"{where} > {label}"
        view, info = row.locator("td").last.locator("a").nth(0), row.locator("td").last.locator("a").nth(1)
        href, download = view.get_attribute("href"), view.get_attribute("download")
        if download is not None:  # a data file: the button downloads its bytes, embedded in the report
            assert href and href.startswith("data:") and len(href) > len("data:;base64,"), f"{what}: empty download"
            browser.check(f"{what} (download {download})")
        else:
            view.click()
            state = browser.wait_content(_shows_something, f"{what} (view)")
            if state["frame"] is not None:
                assert state["frame"]["tables"], f"{what}: the rendered page has no table: {state['frame']}"
        info.click()
        browser.check(f"{what} (info)")
        text = browser.nav().inner_text().upper()  # headings may be upper-cased by CSS
        assert "DESCRIPTION" in text and "SNAKEMAKE RULE" in text, f"{what}: no caption or rule in its info: {text!r}"
        visited.append(what)
        # back to the list: the crumb of the category or subcategory (by its visible name)
        browser.nav().locator("ol > li a", has_text=crumb_text).first.click()
        browser.check(f"back to {crumb_text}")


def click_through(report: Path, landing: str = "What ran", timeout_s: float = 90) -> list[str]:
    """Click through every part of `report` (a self-contained report.html); return the items visited."""
    from playwright.sync_api import sync_playwright

    executable = require_browser()
    visited: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True,
                                             args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(timeout_s * 1000 / 3)
            report_browser = ReportBrowser(page, Path(report).resolve().as_uri())
            page.goto(report_browser.url, wait_until="load")
            page.wait_for_selector("nav.transition-all >> text=Workflow")
            report_browser.check("open")
            # The report opens on the description: the landing page beside the rule graph.
            opening = report_browser.wait_content(lambda s: s.get("exists") and landing in s["text"], "open")
            assert landing in opening["text"], opening
            for entry in ("Workflow", "Statistics"):
                report_browser.click_nav(entry, entry)
                report_browser.wait_content(_shows_something, entry)
            report_browser.click_nav("About", "About")
            assert report_browser.nav().inner_text().strip(), "About: empty"
            report_browser.home()
            categories = page.evaluate("Object.keys(categories)")
            assert categories, "the report has no result category"
            for category in sorted(categories):
                report_browser.click_nav(category, category)
                subcategories = page.evaluate(f"Object.keys(categories[{category!r}])")
                files = {sub: page.evaluate(f"categories[{category!r}][{sub!r}].length") for sub in subcategories}
                if page.evaluate(f"isSingleSubcategory({category!r})"):
                    _visit_items(report_browser, category, files[subcategories[0]], visited)
                else:
                    for subcategory in sorted(subcategories):
                        report_browser.click_nav(subcategory, f"{category} > {subcategory}")
                        _visit_items(report_browser, f"{category} > {subcategory}", files[subcategory], visited)
                        report_browser.nav().locator("ol > li a", has_text=category).first.click()
                        report_browser.check(f"back to {category}")
                report_browser.home()
            total = page.evaluate("Object.values(categories).flatMap(Object.values).flat().length")
            assert len(visited) == total, f"visited {len(visited)} of {total} results: {visited}"
        finally:
            browser.close()
    return visited
