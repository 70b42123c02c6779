"""The studio inside JupyterLab, offline: the cell of the README renders, and Sample draws a molecule.

Every request beyond 127.0.0.1 is aborted, as on a machine without internet, so the page works only if the
app's scripts come with the notebook output (elign_studio.notebook). Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import pytest
from helpers import ARTIFACTS, canvas_colours, offline_page

pytestmark = pytest.mark.browser


def test_studio_renders_and_samples_in_jupyterlab(jupyter_lab, browser) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 1400})
    page = offline_page(context)
    try:
        page.goto(jupyter_lab)
        page.get_by_text("(ipykernel) | Idle").wait_for(timeout=120_000)  # the kernel is up
        page.locator(".jp-Notebook .jp-Cell .jp-InputArea-editor").first.click()
        page.keyboard.press("Shift+Enter")
        sample = page.locator(".jp-OutputArea").get_by_role("button", name="Sample")
        sample.wait_for(timeout=90_000)
        page.locator(".elign-viewer canvas").first.wait_for(timeout=60_000)
        blank = canvas_colours(page)
        sample.click()
        page.get_by_text("Sampled 1 molecule").wait_for(timeout=120_000)
        page.get_by_text("atoms,").first.wait_for(timeout=30_000)
        page.wait_for_timeout(1000)
        page.locator(".elign-viewer canvas").first.scroll_into_view_if_needed()
        assert canvas_colours(page) > max(blank, 10), "the viewer in the notebook shows no molecule"
        missing = [e for e in page.errors if "3Dmol" in e or "Panel" in e or "Bokeh" in e]
        assert missing == [], missing
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "jupyter-sampled.png"))
        context.close()


def test_after_a_reload_rerunning_the_cell_in_the_same_kernel_renders_again(jupyter_lab, browser) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 1400})
    page = offline_page(context)
    try:
        for attempt in ("first run", "after a reload"):
            if attempt == "after a reload":
                page.reload()
            else:
                page.goto(jupyter_lab)
            page.get_by_text("(ipykernel) | Idle").wait_for(timeout=120_000)
            page.locator(".jp-Notebook .jp-Cell .jp-InputArea-editor").first.click()
            page.keyboard.press("Shift+Enter")
            page.locator(".jp-OutputArea").get_by_role("button", name="Sample").wait_for(timeout=90_000)
            page.locator(".elign-viewer canvas").first.wait_for(timeout=60_000)
        missing = [e for e in page.errors if "3Dmol" in e or "Panel" in e or "Bokeh" in e]
        assert missing == [], missing
        assert not [u for u in page.external if "__javascript__" in u or "3Dmol" in u]
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "jupyter-after-reload.png"))
        context.close()


def stop_kernels(lab_url: str) -> None:
    """Shut down every kernel of the JupyterLab (each notebook's studio polls and warms up in its own)."""
    import json
    import urllib.request

    api = lab_url.split("/lab/")[0] + "/api/kernels"
    for kernel in json.loads(urllib.request.urlopen(api, timeout=30).read()):
        urllib.request.urlopen(urllib.request.Request(f"{api}/{kernel['id']}", method="DELETE"), timeout=30)


@pytest.mark.parametrize("notebook", ["offline.ipynb", "inline.ipynb"])
def test_the_offline_cells_ask_for_nothing_beyond_the_machine(jupyter_lab, browser, notebook) -> None:
    """``extension()`` of elign_studio.notebook (and ``pn.extension(inline=True)``) before ``create_app()``: no
    script is asked of a CDN (a plain ``pn.extension()`` asks for Bokeh, Panel and the ES-module shim there)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1400})
    page = offline_page(context)
    stop_kernels(jupyter_lab)  # the other tests' studios stop polling
    try:
        page.goto(jupyter_lab.replace("studio.ipynb", notebook) + "?reset")  # this notebook alone in the workspace
        page.get_by_text("(ipykernel) | Idle").wait_for(timeout=120_000)
        page.locator(".jp-Notebook:visible .jp-Cell .jp-InputArea-editor").first.click()  # the notebook shown
        page.keyboard.press("Shift+Enter")
        page.locator(".jp-OutputArea:visible").get_by_role("button", name="Sample").wait_for(timeout=120_000)
        page.locator(".elign-viewer:visible canvas").first.wait_for(timeout=60_000)
        page.wait_for_timeout(1000)
        assert page.external == [], page.external
        missing = [e for e in page.errors if "3Dmol" in e or "Panel" in e or "Bokeh" in e]
        assert missing == [], missing
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"jupyter-{notebook.split('.')[0]}.png"))
        context.close()
        stop_kernels(jupyter_lab)
