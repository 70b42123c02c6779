"""What the browser tests share beyond fixtures: an offline page, a measure of what a canvas shows, a poll for what
the page shows after a server round trip (a fixed wait is too short on a slow machine), and screenshots."""

from __future__ import annotations

import io
import time
from pathlib import Path

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"  # screenshots and server logs


def offline_page(context):
    """A page that records console errors and aborts (and records) every request beyond 127.0.0.1."""
    page = context.new_page()
    page.errors = []
    page.external = []
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: page.errors.append(str(e)))

    def offline(route) -> None:
        if route.request.url.startswith(("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:")):
            route.continue_()
        else:
            page.external.append(route.request.url)
            route.abort()

    page.route("**/*", offline)
    return page


def canvas_colours(page) -> int:
    """Distinct colours in the first 3D viewer's canvas (a blank canvas has a handful)."""
    from PIL import Image

    png = page.locator(".elign-viewer canvas").first.screenshot()
    img = Image.open(io.BytesIO(png)).convert("RGB").resize((200, 200))
    return len(img.getcolors(200 * 200) or [])


def eventually(page, condition, timeout_s: float = 15.0, every_ms: int = 200) -> bool:
    """Poll ``condition()`` until it holds or ``timeout_s`` passes; return its last value."""
    deadline = time.monotonic() + timeout_s
    while not (ok := bool(condition())) and time.monotonic() < deadline:
        page.wait_for_timeout(every_ms)
    return ok


def shot(page, name: str) -> Path:
    """A full-page screenshot of ``page`` as ``test-artifacts/<name>.png``."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
