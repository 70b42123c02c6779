"""The studio inside Jupyter, offline: every script the app needs is sent inline with the notebook output.

Panel's notebook loader takes Bokeh and Panel from a CDN unless told to inline them, takes the bundled
extensions (Tabulator, the ES-module shim of custom components) from a CDN even then when it reloads, and
resolves a component's local ``__javascript__`` (our vendored 3Dmol.js) against the notebook's URL, where
nothing serves it. Any script that fails to load blocks the loader until its timeout, so the cell stays blank.
:func:`load_resources` publishes one complete inline bundle instead: Bokeh, Panel, HoloViews' Bokeh backend,
Tabulator and the shim from the installed packages, and 3Dmol.js from this package.

``pn.extension(inline=True)`` (or ``pn.config.inline = True``, or ``PANEL_INLINE=1``) inlines Bokeh, Panel and
the extensions it names, but never a component's own scripts; a plain ``pn.extension()`` asks a CDN for Bokeh,
Panel and the ES-module shim. :func:`extension` is the offline ``pn.extension()`` of a notebook that shows the
studio: Panel's set-up with its scripts inline, and 3Dmol.js, once per cell (``create_app()`` in the same cell
sends nothing again).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["extension", "in_notebook", "load_resources"]

THREEDMOL = Path(__file__).resolve().parent / "static" / "3Dmol-min.js"
LOAD_MIME = "application/vnd.holoviews_load.v0+json"  # run by the HoloViz JupyterLab extension
_PUBLISHED = {"cell": None}  # the execution count of the cell whose output last carried the bundle


def in_notebook() -> bool:
    """True inside an IPython kernel (Jupyter), where the app is shown through comms, not a server."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


def _threedmol_script() -> str:
    """3Dmol.js run as a plain script: its UMD wrapper must not register with a page's AMD loader, so that
    the library sets ``window.$3Dmol`` (as it does from a script tag)."""
    source = THREEDMOL.read_text(encoding="utf-8")
    return f"(function (define, exports, module) {{\n{source}\n}}).call(window);"


def _cell() -> int | None:
    """The execution count of the cell running now (None outside IPython)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return getattr(get_ipython(), "execution_count", None)


def extension() -> None:
    """``pn.extension()`` for the studio, offline: Panel's set-up of the notebook (its comms) with Bokeh, Panel and
    Tabulator inline, and 3Dmol.js beside them: this cell's output carries every script the studio needs."""
    import panel as pn

    pn.extension("tabulator", inline=True, notifications=False)
    if in_notebook():
        load_resources(bundle=False)


def load_resources(bundle: bool = True) -> None:
    """Publish Bokeh, Panel, Tabulator, the ES-module shim (``bundle``) and 3Dmol.js inline (no network), unless
    this cell's output carries them already."""
    import holoviews as hv
    import holoviews.plotting.bokeh  # noqa: F401  (registers the Bokeh renderer without publishing scripts)
    import panel as pn
    import panel.models.tabulator  # noqa: F401  (its scripts join the inline bundle)
    from IPython.display import publish_display_data
    from panel.config import panel_extension
    from panel.io.notebook import load_notebook

    from elign_studio.resources import ThreeDmolComponent

    pn.config.inline = True
    pn.config.notifications = False
    for name in ("tabulator",):
        if name not in panel_extension._loaded_extensions:
            panel_extension._loaded_extensions.append(name)
    hv.Store.set_current_backend("bokeh")
    cell = _cell()
    if cell is not None and _PUBLISHED["cell"] == cell:
        return
    _PUBLISHED["cell"] = cell
    script = _threedmol_script()
    publish_display_data({LOAD_MIME: script, "application/javascript": script})  # as Panel publishes its own
    # sent above; in a kernel the component never asks for it by URL again: a relative URL resolves against the
    # notebook's page, where nothing serves it (after a browser reload, a re-run cell asked for it and went blank)
    ThreeDmolComponent.__javascript__ = []
    if bundle:
        load_notebook(inline=True, reloading=False)
