"""Exports of what a session shows: the sampled (or opened) molecules as SDF, the shown chain as XYZ."""

from __future__ import annotations

import time
from pathlib import Path

from elign_studio.exports import write_molecules_sdf, write_trajectory_xyz
from elign_studio.state.sampling import SamplingState

__all__ = ["ExportState"]


class ExportState(SamplingState):
    """Writes ``sets`` (all rows or the chosen ones) and the ``selected`` molecule's chain into exports/."""

    def export_sdf(self, which: str = "all", indices: list[int] | None = None) -> Path:
        """Write all (or the selected table rows') molecules with their metrics to an SDF in exports/."""
        rows = self.rows
        chosen = list(range(len(rows))) if which == "all" or not indices else sorted(set(indices))
        if not chosen:
            raise ValueError("nothing to export: sample molecules first")
        path = self.settings.writable("exports", time.strftime("molecules-%Y%m%d-%H%M%S.sdf"))
        return write_molecules_sdf(path, self.sets, [rows[i] for i in chosen])

    def export_trajectory(self) -> Path:
        """The shown molecule's denoising chain as a multi-frame extended XYZ in exports/
        (:func:`elign_studio.exports.write_trajectory_xyz`)."""
        if not self.sets:
            raise ValueError("nothing to export: sample molecules first")
        path = self.settings.writable("exports", time.strftime(f"trajectory-{self.selected}-%Y%m%d-%H%M%S.xyz"))
        return write_trajectory_xyz(path, self.sets, self.selected)
