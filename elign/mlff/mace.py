"""MACE force fields through mace-torch: MACE-OFF by name or any ``.model`` file, batched on the device.

The dense MoleculeBatch is turned into MACE's graph input with tensor ops only (no per-molecule Python
loop): real atoms are gathered with the node mask, edges are all pairs of the same molecule within
``r_max`` (found on the dense ``[B, N, N]`` distance block), and the results are scattered back.

Loading a ``.model`` file: such a file is a pickle of a whole ``torch.nn.Module``. It is loaded with
``torch.load(weights_only=True)`` and an allow-list made of the mace / e3nn / torch.nn / torch.fx
globals the file names; a file that names anything else (``os.system``, ``builtins.eval``, ...) is
refused. The one allow-listed global that runs code, ``torch.fx``'s graph-module rebuild (e3nn's
generated code), goes through :func:`_checked_reduce_graph_module`, which rejects imports other than
the ones fx itself writes and code that calls ``exec``/``eval``/``open`` or reaches for dunders.
Only load models from sources you trust; ``trusted=True`` skips the checks (a full unpickle).
"""

from __future__ import annotations

import ast
import importlib
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from elign.mlff.base import ComputeOutput, ForceField, missing_extra
from elign.safe_import import import_mace

__all__ = ["MACE_OFF_URLS", "MACEForceField", "build_graph", "load_mace_model", "mace_off_path"]

MACE_OFF_URLS = {
    "small": "https://raw.githubusercontent.com/ACEsuit/mace-off/main/mace_off23/MACE-OFF23_small.model",
    "medium": "https://raw.githubusercontent.com/ACEsuit/mace-off/main/mace_off23/MACE-OFF23_medium.model",
    "large": "https://raw.githubusercontent.com/ACEsuit/mace-off/main/mace_off23/MACE-OFF23_large.model",
}

_ALLOWED_PREFIXES = (
    "mace.",
    "e3nn.",
    "torch.nn.",
    "torch.fx.",
    "torch._C._nn.",
    "torch.jit._script.",
    "collections.OrderedDict",
    "numpy.core.multiarray.",
    "numpy._core.multiarray.",
    "numpy.dtype",
    "numpy.dtypes.",
    "numpy.ndarray",
    "builtins.set",
    "builtins.frozenset",
    "builtins.slice",
)
_FX_IMPORT_LINES = {
    "NoneType = type(None)",
    "from math import inf",
    "from math import nan",
    "from torch import device",
    "import torch",
    "import torch.fx._pytree as fx_pytree",
    "import torch.utils._pytree as pytree",
}
_FORBIDDEN_NAMES = {"exec", "eval", "compile", "open", "__import__", "globals", "locals", "vars",
                    "getattr_static",
                    "os", "sys", "subprocess", "builtins", "importlib", "breakpoint", "input"}  # fmt: skip


def _check_fx_source(import_block: str, code: str) -> None:
    for line in import_block.splitlines():
        if line.strip() and line.strip() not in _FX_IMPORT_LINES:
            raise ValueError(f"refusing a model file: unexpected import line in fx code: {line!r}")
    tree = ast.parse(code)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom | ast.Global | ast.Nonlocal):
            raise ValueError("refusing a model file: fx code contains an import or global statement")
        if isinstance(node, ast.Name) and node.id in _FORBIDDEN_NAMES:
            raise ValueError(f"refusing a model file: fx code uses {node.id!r}")
        if isinstance(node, ast.Attribute) and node.attr.startswith("__"):
            raise ValueError(f"refusing a model file: fx code reaches for {node.attr!r}")


def _checked_reduce_graph_module(body: dict[str, Any], import_block: str) -> torch.nn.Module:
    from torch.fx.graph_module import reduce_graph_module

    _check_fx_source(import_block, body.get("_code") or body.get("code") or "")
    return reduce_graph_module(body, import_block)


def load_mace_model(path: str | os.PathLike, map_location: str | torch.device = "cpu", trusted: bool = False):
    """Load a MACE ``.model`` file (a pickled module) safely; see the module docstring."""
    import_mace()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MACE model file not found: {path}")
    if trusted:
        return torch.load(path, map_location=map_location, weights_only=False)
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception as err:
        raise ValueError(f"{path} is not a readable torch checkpoint (truncated or not a .model file): {err}") from err
    bad = [n for n in names if not n.startswith(_ALLOWED_PREFIXES)]
    if bad:
        raise ValueError(
            f"refusing to load {path}: it references globals outside mace/e3nn/torch.nn: {sorted(bad)}. "
            "If you trust this file, pass trusted=True."
        )
    allowed: list[Any] = []
    for name in names:
        if name == "torch.fx.graph_module.reduce_graph_module":
            allowed.append((_checked_reduce_graph_module, name))
            continue
        module, _, attr = name.rpartition(".")
        try:
            allowed.append(getattr(importlib.import_module(module), attr))
        except (ImportError, AttributeError) as err:
            raise ValueError(f"{path} needs {name}, which this mace-torch version lacks: {err}") from err
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with torch.serialization.safe_globals(allowed):
            model = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "atomic_numbers"):
        raise ValueError(f"{path} does not hold a MACE model (got {type(model).__name__})")
    return model


def mace_off_path(size: str, download: bool = True) -> Path:
    """Local path of the MACE-OFF23 model ``size``; downloads it into mace's cache when allowed."""
    if size not in MACE_OFF_URLS:
        raise ValueError(f"unknown MACE-OFF size {size!r}; choose one of {sorted(MACE_OFF_URLS)}")
    import_mace()
    from mace.tools.utils import get_cache_dir

    url = MACE_OFF_URLS[size]
    path = Path(get_cache_dir()) / os.path.basename(url)
    if path.is_file():
        return path
    hint = (
        f"MACE-OFF23 '{size}' weights are not in {path} and could not be downloaded. On a machine with "
        f"network access download {url} and either copy it to {path} or pass the file's path: "
        f"load_force_field('/path/to/{os.path.basename(url)}')."
    )
    if not download:
        raise FileNotFoundError(hint)
    try:
        from mace.calculators.foundations_models import _urlretrieve_with_timeout

        path.parent.mkdir(parents=True, exist_ok=True)
        _urlretrieve_with_timeout(url, str(path))
    except Exception as err:
        raise FileNotFoundError(f"{hint} ({type(err).__name__}: {err})") from err
    return path


def build_graph(
    positions: torch.Tensor, numbers: torch.Tensor, mask: torch.Tensor, z_index: torch.Tensor,
    num_elements: int,
    r_max: float,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:  # fmt: skip
    """MACE's input dict from a dense batch, with tensor ops only; returns (data, node_index [B, N]).

    positions [B, N, 3], numbers [B, N] long, mask [B, N] bool, z_index [128] long (element -> column).
    """
    B, N, _ = positions.shape
    device, dtype = positions.device, positions.dtype
    n_per = mask.sum(dim=1)  # [B]
    flat_pos = positions[mask]  # [n_nodes, 3]
    n_nodes = flat_pos.shape[0]
    node_index = torch.full((B, N), -1, dtype=torch.long, device=device)  # [B, N]
    node_index[mask] = torch.arange(n_nodes, device=device)
    batch_vec = torch.arange(B, device=device)[:, None].expand(B, N)[mask]  # [n_nodes]
    ptr = torch.zeros(B + 1, dtype=torch.long, device=device)
    ptr[1:] = torch.cumsum(n_per, dim=0)
    diff = positions[:, :, None, :] - positions[:, None, :, :]  # [B, N, N, 3]
    dist = diff.norm(dim=-1)  # [B, N, N]
    eye = torch.eye(N, dtype=torch.bool, device=device)
    adj = mask[:, :, None] & mask[:, None, :] & ~eye & (dist < r_max)  # [B, N, N]
    b, i, j = adj.nonzero(as_tuple=True)
    edge_index = torch.stack([node_index[b, i], node_index[b, j]])  # [2, n_edges] (sender, receiver)
    node_attrs = torch.nn.functional.one_hot(z_index[numbers[mask]], num_elements).to(dtype)  # [n_nodes, n_el]
    n_edges = edge_index.shape[1]
    data = {
        "positions": flat_pos.detach().clone(),
        "node_attrs": node_attrs,
        "edge_index": edge_index,
        "shifts": torch.zeros(n_edges, 3, dtype=dtype, device=device),
        "unit_shifts": torch.zeros(n_edges, 3, dtype=dtype, device=device),
        "cell": torch.zeros(B * 3, 3, dtype=dtype, device=device),
        "batch": batch_vec,
        "ptr": ptr,
        "weight": torch.ones(B, dtype=dtype, device=device),
        "head": torch.zeros(B, dtype=torch.long, device=device),
    }
    return data, node_index


class MACEForceField(ForceField):
    """A MACE model (MACE-OFF or any .model file) on dense batches; energies eV, forces eV/A.

    Reference energies: each supported element evaluated alone by the model (no spin input in MACE).
    """

    def __init__(
        self,
        model: str | os.PathLike | torch.nn.Module,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        trusted: bool = False,
    ) -> None:
        super().__init__(device, dtype)
        try:
            import_mace()
        except ImportError as err:
            raise missing_extra("mace-torch", err) from err
        if isinstance(model, str) and model.startswith("mace-off-"):
            self.name = model
            model = mace_off_path(model.removeprefix("mace-off-"))
        elif not isinstance(model, torch.nn.Module):
            self.name = f"mace:{Path(model).name}"
        else:
            self.name = "mace"
        if not isinstance(model, torch.nn.Module):
            model = load_mace_model(model, map_location="cpu", trusted=trusted)
        self.model = model.to(device=self.device, dtype=dtype).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        zs = [int(z) for z in self.model.atomic_numbers.tolist()]
        self.supported_elements = frozenset(zs)
        self.r_max = float(self.model.r_max)
        self._z_index = torch.zeros(128, dtype=torch.long, device=self.device)  # [128]
        self._z_index[torch.tensor(zs, device=self.device)] = torch.arange(len(zs), device=self.device)
        self._num_elements = len(zs)

    def _compute(self, positions: torch.Tensor, numbers: torch.Tensor, mask: torch.Tensor) -> ComputeOutput:
        B, N, _ = positions.shape
        data, node_index = build_graph(positions, numbers, mask, self._z_index, self._num_elements, self.r_max)
        with torch.enable_grad():
            out = self.model(data, training=False, compute_force=True)
        energy = out["energy"].detach()  # [B]
        flat_forces = out["forces"].detach()  # [n_nodes, 3]
        forces = torch.zeros(B, N, 3, dtype=flat_forces.dtype, device=flat_forces.device)  # [B, N, 3]
        forces[mask] = flat_forces
        return ComputeOutput(energy=energy, forces=forces)

    def _compute_energy(self, positions: torch.Tensor, numbers: torch.Tensor, mask: torch.Tensor) -> ComputeOutput:
        data, _ = build_graph(positions, numbers, mask, self._z_index, self._num_elements, self.r_max)
        out = self.model(data, training=False, compute_force=False)
        return ComputeOutput(energy=out["energy"].detach(), forces=None)
