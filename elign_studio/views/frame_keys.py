"""The frame player with keyboard control, in the browser: Left / Right step one frame back / forward, Home / End
go to the first / last frame, Space plays or pauses, while the keyboard focus is on a viewer of the player's
group (a click on a viewer gives it the focus) or on the player itself, and not in a text field.

The keys set the player's own value and play direction in the page, as its buttons do: the viewers and the
frame readout follow through their browser links, and the server hears of the new frame as of a click.
"""

from __future__ import annotations

import json

import param
from panel.custom import Child, JSComponent

__all__ = ["KEYS_HINT", "KeyedPlayer"]

KEYS_HINT = "Keys (click a viewer first): \u2190 \u2192 step a frame, Home / End first / last, Space play / pause"


class KeyedPlayer(JSComponent):
    """``player`` (a :class:`panel.widgets.Player`) drawn with the keys hint below it; its keys are those pressed
    in an element marked ``data-elign-group`` = ``group`` (the viewers of the same view, and this one)."""

    player = Child(doc="the frame player the keys drive")
    group = param.String(default="", doc="the view whose viewers pass their keys to this player")

    _esm = f"""
const HINT = {json.dumps(KEYS_HINT)};
const FIELDS = ['TEXTAREA', 'SELECT'];
const CLICKABLE_INPUTS = ['range', 'checkbox', 'radio', 'button', 'submit', 'reset'];
const LISTENING = window.elignPlayerKeys || (window.elignPlayerKeys = new Map());  // group -> its key listeners
function typing(t) {{  // the key goes to a text field: not the player's
  return t.isContentEditable || FIELDS.includes(t.tagName) ||
    (t.tagName === 'INPUT' && !CLICKABLE_INPUTS.includes(t.type));
}}

export function render({{ model, data, el }}) {{
  const wrap = document.createElement('div');
  wrap.className = 'elign-keyed-player';
  wrap.dataset.elignGroup = model.group;
  wrap.dataset.lmSuppressShortcuts = 'true';  // JupyterLab leaves these keys to the player
  wrap.style.cssText = 'width:100%';
  const hint = document.createElement('div');
  hint.className = 'elign-keys-hint';
  hint.style.cssText = 'font:11px sans-serif;color:#666;padding:0 6px';
  hint.textContent = HINT;
  wrap.append(model.get_child('player'), hint);
  el.append(wrap);

  function ours(ev) {{
    return ev.composedPath().some(n => n.dataset && n.dataset.elignGroup === model.group && model.group);
  }}
  function onKey(ev) {{
    if (ev.defaultPrevented || ev.altKey || ev.ctrlKey || ev.metaKey || !ours(ev)) return;
    const target = ev.composedPath()[0], p = data.player;
    if (!p || typing(target)) return;
    const slider = target.tagName === 'INPUT' && target.type === 'range';  // moves itself with arrows, Home, End
    let value = null;
    if (ev.key === 'ArrowLeft' && !slider) value = Math.max(p.start, p.value - p.step);
    else if (ev.key === 'ArrowRight' && !slider) value = Math.min(p.end, p.value + p.step);
    else if (ev.key === 'Home' && !slider) value = p.start;
    else if (ev.key === 'End' && !slider) value = p.end;
    else if (ev.key !== ' ') return;
    ev.preventDefault();  // no page scroll, no click of a focused button
    if (value !== null) {{ p.value = value; return; }}
    if (p.direction !== 0) {{ p.direction = 0; return; }}
    if (p.value >= p.end) p.value = p.start;  // played to the end: play again from the start
    p.direction = 1;
  }}
  function onKeyUp(ev) {{ if (ev.key === ' ' && ours(ev) && !typing(ev.composedPath()[0])) ev.preventDefault(); }}
  function stop(listeners) {{
    document.removeEventListener('keydown', listeners[0]);
    document.removeEventListener('keyup', listeners[1]);
  }}
  if (LISTENING.has(model.group)) stop(LISTENING.get(model.group));  // drawn again: one listener a group
  const mine = [onKey, onKeyUp];
  LISTENING.set(model.group, mine);
  document.addEventListener('keydown', onKey);
  document.addEventListener('keyup', onKeyUp);
  model.on('remove', () => {{
    stop(mine);
    if (LISTENING.get(model.group) === mine) LISTENING.delete(model.group);
  }});
}}
"""
