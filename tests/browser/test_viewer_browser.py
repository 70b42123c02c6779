"""Two models side by side in Chromium: the player's keys, linked cameras, the PNG with its title and colour bar.

Screenshots go to test-artifacts/. Run with ``pytest -m browser tests/browser``.
"""

from __future__ import annotations

import re

import pytest
from helpers import ARTIFACTS, eventually, shot

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def page(page):
    """The studio with one molecule of each shipped model sampled side by side (seed 0)."""
    pg = page
    pg.get_by_role("button", name="Sample").wait_for(timeout=30_000)
    pg.locator(".elign-side-by-side").get_by_role("checkbox").check()
    pg.locator(".elign-link-cameras").get_by_role("checkbox").wait_for(timeout=10_000)
    pg.get_by_role("button", name="Sample").click()
    pg.get_by_text(re.compile(r"Sampled 1 molecule\(s\) from .+, .+ in")).wait_for(timeout=90_000)
    assert eventually(pg, lambda: pg.locator(".elign-viewer canvas").count() == 2, 20), "one viewer drew"
    pg.get_by_text(re.compile(r"#0 +t = ")).nth(1).wait_for(timeout=20_000)
    return pg


def readout(page) -> int:
    """The frame the readout above the player names."""
    el = page.locator(".elign-frame-readout").first
    text = el.evaluate("el => (el.shadowRoot ? el.shadowRoot.textContent : el.textContent)")
    return int(re.search(r"Frame: (\d+)\s*$", text).group(1))


def last_frame(page) -> int:
    status = page.get_by_text(re.compile(r"\(\d+ frames\)")).first.inner_text()
    return int(re.search(r"\((\d+) frames\)", status).group(1)) - 1


def shown_t(page, k: int = 0) -> int:
    """The diffusion time t that viewer ``k``'s title names."""
    return int(re.search(r"t = (\d+)", page.get_by_text(re.compile(r"#0 +t = ")).nth(k).inner_text()).group(1))


def view(page, k: int) -> list[float]:
    return page.locator(".elign-viewer").nth(k).evaluate("el => el.elignViewer.getView()")


def drag(page, k: int, dx: float, dy: float) -> None:
    """Rotate viewer ``k`` with the mouse: press near its centre, move, release."""
    box = page.locator(".elign-viewer canvas").nth(k).bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + dx / 2, y + dy / 2, steps=4)
    page.mouse.move(x + dx, y + dy, steps=4)
    page.mouse.up()


def test_keys_on_a_viewer_step_jump_and_play_the_frames(page) -> None:
    last = last_frame(page)
    assert eventually(page, lambda: readout(page) == last), readout(page)
    box = page.locator(".elign-viewer canvas").first.bounding_box()
    page.mouse.click(box["x"] + 4, box["y"] + 4)  # a corner of the viewer: its focus, no atom
    for key, frame in (("ArrowLeft", last - 1), ("Home", 0), ("ArrowRight", 1), ("End", last), ("Home", 0)):
        page.keyboard.press(key)
        assert eventually(page, lambda f=frame: readout(page) == f), (key, readout(page), frame)
    assert eventually(page, lambda: shown_t(page, 1) == shown_t(page, 0) > 0)  # both viewers at frame 0
    t0 = shown_t(page)
    page.keyboard.press(" ")
    assert eventually(page, lambda: readout(page) >= 3), f"Space did not play: frame {readout(page)}"
    page.keyboard.press(" ")
    page.wait_for_timeout(400)
    paused = readout(page)
    page.wait_for_timeout(800)
    assert readout(page) == paused < last, "Space did not pause"
    expected_t = t0 - paused * t0 // last  # evenly spaced frames from t0 down to 0
    assert eventually(page, lambda: shown_t(page, 0) == shown_t(page, 1) == expected_t), (shown_t(page), expected_t)
    shot(page, "20-keys")
    formula = page.get_by_label("Formula (isomers; empty: free)")
    formula.click()
    page.keyboard.press("Home")  # a key typed into a field stays there
    page.keyboard.press("ArrowRight")
    page.wait_for_timeout(500)
    assert readout(page) == paused
    assert page.errors == []


def test_rotating_one_viewer_turns_the_other_while_cameras_are_linked(page) -> None:
    assert eventually(page, lambda: view(page, 0) == pytest.approx(view(page, 1), abs=1e-6))
    before = view(page, 0)
    drag(page, 0, 80, 30)
    assert view(page, 0) != pytest.approx(before, abs=1e-3), "the drag did not rotate viewer 1"
    assert eventually(page, lambda: view(page, 1) == pytest.approx(view(page, 0), abs=1e-6)), view(page, 1)
    page.mouse.move(0, 0)
    shot(page, "21-linked-cameras")
    link = page.locator(".elign-link-cameras").get_by_role("checkbox")
    link.uncheck()
    page.wait_for_timeout(1000)  # the setting reaches the viewers through the server
    drag(page, 1, -60, 40)
    assert view(page, 1) != pytest.approx(view(page, 0), abs=1e-3), "unlinked, the cameras still move together"
    link.check()
    assert eventually(page, lambda: view(page, 1) == pytest.approx(view(page, 0), abs=1e-6)), "relinking"
    assert page.errors == []


def test_the_png_carries_a_title_and_the_colour_bar(page) -> None:
    from PIL import Image

    canvas_height = page.locator(".elign-viewer canvas").first.evaluate("c => c.height")
    with page.expect_download(timeout=30_000) as info:
        page.locator(".elign-png").first.click()
    target = ARTIFACTS / "viewer-with-bar.png"
    ARTIFACTS.mkdir(exist_ok=True)
    info.value.save_as(target)
    img = Image.open(target).convert("RGB")
    assert img.height > canvas_height + 30, (img.size, canvas_height)
    title = img.crop((0, 0, img.width, img.height - canvas_height - 30))  # above the view
    assert len(title.getcolors(img.width * 40) or []) > 2, "no title above the view"
    dark = sum(title.convert("L").histogram()[:70])  # pixels of the caption's letters
    assert dark > 50, "the title has no text"
    bar = img.crop((0, img.height - 30, img.width, img.height))  # below the view
    colours = bar.getcolors(img.width * 30) or []
    assert len(colours) > 20, f"the bar region holds {len(colours)} colours"
    assert any(g > 200 and b < 80 for _, (r, g, b) in colours), "no yellow end of the colour bar"
    assert page.errors == []
