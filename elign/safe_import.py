"""Import mace-torch without its process-wide side effect on ``torch.load``.

``import mace`` sets ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` in ``os.environ``, which turns every later
``torch.load(..., weights_only=True)`` in the process into a full, unsafe unpickle. e3nn 0.4.4 needs
that variable only because it ``torch.load``s a constants file that pickles ``slice`` objects; we
allow-list ``slice`` for the weights-only unpickler instead and put the environment back as it was.
"""

from __future__ import annotations

import os
import threading
import warnings
from types import ModuleType

import torch

__all__ = ["import_mace", "WEIGHTS_ONLY_ENV_VAR"]

WEIGHTS_ONLY_ENV_VAR = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
_lock = threading.Lock()


def import_mace() -> ModuleType:
    """Import and return the ``mace`` package, leaving ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` as it was.

    Also imports ``mace.modules``, ``mace.tools`` and ``mace.calculators`` (the e3nn constants are
    loaded at that point, while ``slice`` is allow-listed). Raises an ImportError naming the extra.
    """
    with _lock:
        previous = os.environ.get(WEIGHTS_ONLY_ENV_VAR)
        torch.serialization.add_safe_globals([slice])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # e3nn's torch.load of its constants
                import mace
                import mace.calculators  # noqa: F401
                import mace.modules  # noqa: F401
                import mace.tools  # noqa: F401
        except ImportError as err:
            raise ImportError(
                f"mace-torch is not installed or failed to import ({err}); install with: pip install elign[mlff]"
            ) from err
        finally:
            if previous is None:
                os.environ.pop(WEIGHTS_ONLY_ENV_VAR, None)
            else:
                os.environ[WEIGHTS_ONLY_ENV_VAR] = previous
    return mace
