"""The workbench in a real browser: start the Streamlit server, click through every page in headless Chromium
(Debian's package, driven by Playwright), save a screenshot of each.

Screenshots go to a temporary folder, or to ``$HICO_SCREENSHOTS`` (``HICO_SCREENSHOTS=docs/screenshots`` renews
the README's pictures). Skips when Chromium or Playwright is missing (``make test`` installs both where it can).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from conftest import scratch, streamlit_server

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (apt-get install chromium)"),
]

FIRST_SCREEN = "Sample frames"  # the Data page's counts, class table and frames are up (the pair comes after)
PAGES = [  # (url path, text that shows the page has rendered its content)
    ("", "A positive pair"),  # the Data page is the default one, at the root
    ("train", "Runs"),
    ("curves", "Training loss"),
    ("embeddings", "silhouette"),
    ("evaluate", "Run the probe"),
    ("compare", "Every result"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_runs, tiny_study):
    with scratch(tmp_path_factory, "browser") as tmp:
        yield from _serve(tmp, tiny_runs, tiny_study)


def _serve(tmp: Path, tiny_runs: Path, tiny_study: Path):
    env = {**os.environ, "HICO_CACHE": str(tmp / "cache"), "HICO_RUNS": str(tmp / "runs")}
    shutil.copytree(tiny_runs / "tiny", tmp / "runs" / "demo")  # the session's short demo run (conftest.py)
    shutil.copytree(tiny_study, tmp / "runs" / "studies" / "tiny")  # and its tiny study
    with streamlit_server(ROOT, env) as server:
        yield server.url


def test_every_page_renders_in_chromium(server, tmp_path):
    shots = Path(os.environ.get("HICO_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        for path, text in PAGES:
            started = time.perf_counter()
            page.goto(f"{server}/{path}")
            if not path:  # the first screen of a fresh server, frames decoded into an empty cache
                page.get_by_text(FIRST_SCREEN).first.wait_for(timeout=120_000)
                print(f"/: {time.perf_counter() - started:.1f} s to the first useful screen ({FIRST_SCREEN!r})")
            page.get_by_text(text).first.wait_for(timeout=120_000)
            print(f"/{path}: {time.perf_counter() - started:.1f} s to show {text!r}")
            page.wait_for_timeout(1500)  # let images and charts paint
            assert not page.get_by_text("Traceback").count(), path
            assert not page.get_by_text("Page not found").count(), path
            page.screenshot(path=str(shots / f"{path or 'data'}.png"), full_page=False)
        hover_and_click_a_map_point(page, shots)
        dark = browser.new_page(viewport={"width": 1400, "height": 1000}, color_scheme="dark")
        dark.goto(f"{server}/embeddings")  # Streamlit follows the system's dark mode, and so do the maps
        maps = dark.frame_locator('iframe[title="level_maps.level_maps"]')
        maps.locator("path.point").first.wait_for(timeout=120_000)
        background = maps.locator(".map").first.evaluate("d => d._fullLayout.paper_bgcolor")  # plotly's: white
        assert brightness(background) < 80, background  # unless the component follows the theme
        dark.screenshot(path=str(shots / "embeddings-dark.png"), full_page=False)
        page.goto(f"{server}/train")  # navigation by the sidebar works too
        page.get_by_role("link", name="Curves").click()
        page.get_by_text("Training loss").first.wait_for(timeout=60_000)
        browser.close()
    assert {p.name for p in shots.glob("*.png")} >= {f"{name or 'data'}.png" for name, _ in PAGES} | {
        "embeddings-hover.png"
    }


def hover_and_click_a_map_point(page, shots: Path) -> None:
    """On the Embeddings page: hovering a point shows its frame thumbnail and caption and rings the frame on all
    three maps; clicking it shows its nearest neighbours below the maps."""
    page.goto(page.url.rsplit("/", 1)[0] + "/embeddings")
    maps = page.frame_locator('iframe[title="level_maps.level_maps"]')
    point = maps.locator(".map").nth(1).locator("path.point").first  # a point of the medium-level map
    point.wait_for(timeout=120_000)
    box = point.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x - 30, y - 30)
    page.mouse.move(x, y, steps=5)
    tip = maps.locator("#tip")
    tip.wait_for(state="visible", timeout=10_000)
    assert maps.locator("#tip-img").get_attribute("src").startswith("data:image/jpeg;base64,")
    assert " · frame " in maps.locator("#tip-text").inner_text()
    rings = maps.locator(".map").evaluate_all("divs => divs.map(d => d.data[d.data.length - 1].x.length)")
    assert rings == [1, 1, 1], rings  # the hovered frame is ringed on every level's map
    page.screenshot(path=str(shots / "embeddings-hover.png"), full_page=False)
    page.mouse.click(x, y)
    page.get_by_text("The frame and its nearest neighbours").wait_for(timeout=60_000)
    page.get_by_text("global level").first.wait_for(timeout=60_000)  # captions stream in after the heading


def brightness(colour: str) -> float:
    """Mean of the red, green and blue channels (0-255) of a CSS colour ``#rrggbb`` or ``rgb(r, g, b)``."""
    if colour.startswith("#"):
        hex6 = "".join(c * 2 for c in colour[1:]) if len(colour) == 4 else colour[1:]  # #fff is #ffffff
        return sum(int(hex6[i : i + 2], 16) for i in (0, 2, 4)) / 3
    return sum(float(c) for c in colour[colour.index("(") + 1 : -1].split(",")[:3]) / 3
