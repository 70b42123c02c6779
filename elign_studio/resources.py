"""Vendored front-end resources, declared on a class at the package root so Panel serves them from
``static/`` (3Dmol.js 2.5.5, BSD-3-Clause, licence in ``static/3Dmol-LICENSE.txt``): the app works offline.
"""

from __future__ import annotations

from panel.custom import JSComponent

__all__ = ["ThreeDmolComponent"]


class ThreeDmolComponent(JSComponent):
    """Base of components that draw with ``window.$3Dmol``."""

    __javascript__ = ["static/3Dmol-min.js"]

    _esm = "export function render({ el }) {}"
