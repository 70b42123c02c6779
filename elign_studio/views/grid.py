"""A grid of the sampled molecules' final frames in one WebGL canvas (3Dmol's viewer grid); a click on a cell
shows that molecule in the main viewer."""

from __future__ import annotations

import math

import panel as pn
import param
from panel.viewable import Viewer

from elign_studio.resources import ThreeDmolComponent
from elign_studio.session import StudioSession

__all__ = ["GridView", "MoleculeGrid"]

COLUMNS = 6
CELL_PX = 170


class MoleculeGrid(ThreeDmolComponent):
    """``molecules``: [{elements, xyz, bonds, label}] drawn as sticks, ``columns`` per row; ``clicked`` is
    the index of the last cell clicked (-1 before any)."""

    molecules = param.List(default=[])
    columns = param.Integer(default=COLUMNS, bounds=(1, None))
    clicked = param.Integer(default=-1)
    host_class = param.String(default="elign-grid", doc="CSS class of the element that holds the grid's canvas")

    _esm = f"""
const CELL = {CELL_PX};
export function render({{ model, el }}) {{
  const host = document.createElement('div');
  host.className = model.host_class;
  host.style.cssText = 'position:relative;width:100%';
  el.append(host);
  let pending = false;

  function draw() {{
    if (host.offsetWidth === 0) {{ pending = true; return; }}  // hidden: draw when shown
    pending = false;
    host.replaceChildren();
    const mols = model.molecules || [];
    if (!mols.length || !window.$3Dmol) {{ host.style.height = '0px'; return; }}
    const cols = Math.min(model.columns, mols.length), rows = Math.ceil(mols.length / cols);
    const inner = document.createElement('div');
    inner.style.cssText = 'position:relative;width:' + (cols * CELL) + 'px;height:' + (rows * CELL) + 'px';
    host.style.height = (rows * CELL) + 'px';
    host.append(inner);
    const grid = window.$3Dmol.createViewerGrid(inner, {{ rows: rows, cols: cols, control_all: false }},
                                                 {{ backgroundColor: 'white' }});
    mols.forEach((m, k) => {{
      const v = grid[Math.floor(k / cols)][k % cols];
      const atoms = m.elements.map((e, i) => ({{ elem: e, x: m.xyz[i][0], y: m.xyz[i][1], z: m.xyz[i][2],
                                                 serial: i, bonds: [], bondOrder: [] }}));
      for (const [i, j, o] of m.bonds) {{
        atoms[i].bonds.push(j); atoms[i].bondOrder.push(o); atoms[j].bonds.push(i); atoms[j].bondOrder.push(o);
      }}
      v.addModel().addAtoms(atoms);
      v.setStyle({{}}, {{ stick: {{ radius: 0.12, colorscheme: 'Jmol' }},
                          sphere: {{ scale: 0.22, colorscheme: 'Jmol' }} }});
      v.addLabel(m.label, {{ useScreen: true, position: {{ x: 4, y: 4, z: 0 }}, fontSize: 11, fontColor: 'black',
                              backgroundColor: 'white', backgroundOpacity: 0.7 }});
      v.zoomTo();
      v.render();
    }});
    inner.addEventListener('click', (ev) => {{
      const box = inner.getBoundingClientRect();
      const k = Math.floor((ev.clientY - box.top) / CELL) * cols + Math.floor((ev.clientX - box.left) / CELL);
      if (k >= 0 && k < mols.length) model.clicked = k;
    }});
  }}
  model.on('molecules', draw);
  model.on('columns', draw);
  model.on('after_layout', () => {{ if (pending) draw(); }});
  setTimeout(draw, 50);
}}
"""


class GridView(Viewer):
    """The final frame of every sampled molecule (all models side by side, in table order)."""

    session = param.ClassSelector(class_=StudioSession, doc="the state this view shows")

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.grid = MoleculeGrid(sizing_mode="stretch_width", min_height=40)
        self.session.param.watch(self._molecules, "sets")
        self.grid.param.watch(self._clicked, "clicked")

    def _molecules(self, *_) -> None:
        sets = self.session.sets
        cells = []
        for s in sets:
            for b, chain in enumerate(s.frames):
                last = chain[-1]
                label = f"{s.model_name} #{b}" if len(sets) > 1 else f"#{b}"
                cells.append({k: last[k] for k in ("elements", "xyz", "bonds")} | {"label": label})
        self.grid.molecules = cells
        self.grid.height = max(40, math.ceil(len(cells) / COLUMNS) * CELL_PX + 10)

    def _clicked(self, event) -> None:
        rows = self.session.rows
        if 0 <= event.new < len(rows):
            self.session.selected = rows[event.new]["index"]
        self.grid.clicked = -1  # the same cell can be clicked again

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Card(
            self.grid,
            title="Grid: every molecule at t = 0 (click one to view its trajectory)",
            collapsed=False,
            sizing_mode="stretch_width",
            css_classes=["elign-grid-card"],
        )
