"""The table of sampled molecules: select one to view it, export the selection or all as SDF."""

from __future__ import annotations

import io

import pandas as pd
import panel as pn

from elign_studio.session import StudioSession

__all__ = ["molecules_view"]

COLUMNS = [  # "molecule" is the rows' "index" (Tabulator hides a column named "index")
    "model",
    "seed",
    "molecule",
    "formula",
    "atoms",
    "stable",
    "atom_stability",
    "valid",
    "connected",
    "smiles",
    "energy_per_atom_eV",
    "rms_force_eV_A",
    "mlff_scored",
    "not_scored_because",
]


def molecules_view(session: StudioSession) -> pn.viewable.Viewable:
    table = pn.widgets.Tabulator(
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

    def _rows(*_) -> None:
        table.value = pd.DataFrame(session.rows).rename(columns={"index": "molecule"}).reindex(columns=COLUMNS)
        table.selection = []

    session.param.watch(_rows, "sets")

    def _select(event) -> None:
        rows = session.rows
        if event.new:
            r = rows[event.new[-1]]
            session.selected = r["index"]

    table.param.watch(_select, "selection")

    def _clicked(event) -> None:  # a click on any cell shows that molecule
        if 0 <= event.row < len(session.rows):
            session.selected = session.rows[event.row]["index"]

    table.on_click(_clicked)
    which = pn.widgets.RadioButtonGroup(options=["all", "selected"], value="all", name="Export")

    def _export() -> io.BytesIO | None:
        try:
            path = session.export_sdf(which.value, list(table.selection))
        except (ValueError, OSError) as e:
            session.error = f"Export failed: {e}"
            return None
        download.filename = path.name
        session.status = f"Exported {path}"
        return io.BytesIO(path.read_bytes())

    download = pn.widgets.FileDownload(
        callback=_export,
        filename="molecules.sdf",
        label="Download SDF",
        button_type="primary",
        css_classes=["elign-download"],
    )
    return pn.Column(
        pn.pane.Markdown(
            "### Sampled molecules\nClick a row to show it in the viewer; tick rows and "
            "choose *selected* to export only those. SD tags carry the metrics."
        ),
        table,
        pn.Row(which, download),
        sizing_mode="stretch_width",
    )
