"""Number inputs bound to session params that bring an out-of-range entry back into range and say so.

A Panel input built from a bounded param rejects an out-of-range entry on the server while the browser keeps
showing it, so the number on screen is not the one used. These inputs accept any entry, clamp it to the
param's bounds, show the kept value and explain the change in the session's status line.
"""

from __future__ import annotations

import panel as pn
import param

__all__ = ["bounded_int_input"]


def bounded_int_input(owner: param.Parameterized, name: str, **widget_kwargs) -> pn.widgets.IntInput:
    """An IntInput for the Integer param ``owner.name``, both ways linked, clamping to its bounds."""
    p = owner.param[name]
    box = pn.widgets.IntInput(name=p.label, value=getattr(owner, name), description=p.doc, **widget_kwargs)

    def _typed(event) -> None:
        low, high = p.bounds or (None, None)  # read now: a model's largest size changes with the model
        typed = p.default if event.new is None else event.new
        kept = max(typed, low) if low is not None else typed
        kept = min(kept, high) if high is not None else kept
        if kept != event.new:
            box.value = kept  # the browser shows the number that is used
            if hasattr(owner, "status"):
                owner.status = f"{p.label}: {event.new} is out of range, {kept} is used"
        setattr(owner, name, kept)

    box.param.watch(_typed, "value")
    owner.param.watch(lambda e: setattr(box, "value", e.new), name)
    return box
