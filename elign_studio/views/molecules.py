"""The table of sampled molecules: select one to view it, export the selection or all as SDF."""

from __future__ import annotations

import io

import pandas as pd
import panel as pn
import param
from panel.viewable import Viewer

from elign_studio.session import StudioSession
from elign_studio.views.downloads import exported_file

__all__ = ["MoleculeTable"]

COLUMNS = [  # "molecule" is the rows' "index" (Tabulator hides a column named "index")
    "model",
    "seed",
    "molecule",
    "formula",
    "atoms",
    "stable",
    "valid",
    "connected",
    "rms_force_eV_A",
    "energy_per_atom_eV",
    "not_scored_because",  # beside the figures it explains, not behind a horizontal scroll
    "atom_stability",
    "smiles",
    "mlff_scored",
]


class MoleculeTable(Viewer):
    """The sampled molecules with their chemistry and force-field figures; a click selects, SDF export."""

    session = param.ClassSelector(class_=StudioSession, doc="the state this view shows and edits")

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.table = pn.widgets.Tabulator(
            pd.DataFrame(columns=COLUMNS),
            selectable="checkbox",
            show_index=False,
            disabled=True,
            height=260,
            sizing_mode="stretch_width",
            pagination=None,
            formatters={
                "energy_per_atom_eV": {"type": "money", "precision": 4},
                "rms_force_eV_A": {"type": "money", "precision": 4},
                "atom_stability": {"type": "money", "precision": 3},
            },
        )
        self.which = pn.widgets.RadioButtonGroup(options=["all", "selected"], value="all", name="Export")
        self.download = pn.widgets.FileDownload(
            callback=self._export,
            filename="molecules.sdf",
            label="Download SDF",
            button_type="primary",
            css_classes=["elign-download"],
        )
        self.session.param.watch(self._rows, "sets")
        self.table.param.watch(self._ticked, "selection")
        self.table.on_click(self._clicked)

    def _rows(self, *_) -> None:
        rows = pd.DataFrame(self.session.rows).rename(columns={"index": "molecule"})
        self.table.value = rows.reindex(columns=COLUMNS)
        self.table.selection = []

    def _ticked(self, event) -> None:  # the last ticked row is shown
        if event.new:
            self.session.selected = self.session.rows[event.new[-1]]["index"]

    def _clicked(self, event) -> None:  # a click on any cell shows that molecule
        rows = self.session.rows
        if 0 <= event.row < len(rows):
            self.session.selected = rows[event.row]["index"]

    def _export(self) -> io.BytesIO | None:
        selection = list(self.table.selection)
        return exported_file(self.session, self.download, lambda: self.session.export_sdf(self.which.value, selection))

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(
            pn.pane.Markdown(
                "### Sampled molecules\nClick a row to show it in the viewer; tick rows and "
                "choose *selected* to export only those. SD tags carry the metrics."
            ),
            self.table,
            pn.Row(self.which, self.download),
            sizing_mode="stretch_width",
        )
