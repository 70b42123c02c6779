"""Size groups: which molecules of a padded batch the network evaluates together.

A dense batch is padded to its largest molecule, and the all-pairs edge work of a molecule group grows
with its count times its largest size squared. Evaluating molecules of similar size together, each group
trimmed to its own largest, removes most of the padding (QM9: about half the pair work of a batch of 64).
The maths per molecule is unchanged: padding atoms never enter a real atom's sums, so a molecule's output
does not depend on its group, up to float rounding.
"""

from __future__ import annotations

import torch

__all__ = ["GROUP_OVERHEAD_PAIRS", "size_groups"]

# The pair work a further group must save to be worth a separate network evaluation. An evaluation of the
# shipped network on a tiny molecule costs about what a few hundred atom pairs do; the margin keeps groups
# few and their matrix products large. Groups change speed only (results agree to float rounding).
GROUP_OVERHEAD_PAIRS = 2000


def size_groups(
    node_mask: torch.Tensor, overhead: float | None = None, exponent: int = 2
) -> list[tuple[torch.Tensor, int]] | None:
    """Partition a batch into groups of similar size: [(rows [b] long, atoms n)], or None for one group.

    node_mask [B, N, 1]. Groups are runs of consecutive sizes chosen by dynamic programming to minimise
    the sum over groups of (molecules x largest size^exponent + overhead): the all-pairs work of the
    EGNN by default; ``exponent=1`` for a model whose work grows with its padded atoms. None when that is
    the whole padded batch, or when a molecule's real atoms are not its first ones (the layout every batch
    of this library has; others are evaluated padded, correctly, only slower). overhead defaults to
    GROUP_OVERHEAD_PAIRS.
    """
    overhead = GROUP_OVERHEAD_PAIRS if overhead is None else overhead
    mask = node_mask[..., 0] > 0  # [B, N]
    B, N = mask.shape
    if B == 0 or bool(mask.all()):  # nothing, or no padding at all (one molecule, say): one group
        return None
    sizes = mask.sum(1)  # [B]
    if not torch.equal(mask, torch.arange(N, device=mask.device)[None, :] < sizes[:, None]):
        return None
    distinct, counts = torch.unique(sizes.cpu(), return_counts=True)  # ascending
    distinct, counts = distinct.tolist(), counts.tolist()
    k = len(distinct)
    best = [0.0] + [float("inf")] * k  # best[j]: cost of grouping the j smallest distinct sizes
    cut = [0] * (k + 1)
    for j in range(1, k + 1):
        molecules = 0
        for i in range(j, 0, -1):  # the last group holds distinct sizes i-1 .. j-1
            molecules += counts[i - 1]
            cost = best[i - 1] + molecules * distinct[j - 1] ** exponent + overhead
            if cost < best[j]:
                best[j], cut[j] = cost, i - 1
    bounds, j = [], k
    while j > 0:
        bounds.append((cut[j], j))
        j = cut[j]
    if len(bounds) == 1 and distinct[-1] == N:
        return None
    sizes_cpu = sizes.cpu()
    groups = []
    for lo, hi in reversed(bounds):
        rows = torch.nonzero((sizes_cpu >= distinct[lo]) & (sizes_cpu <= distinct[hi - 1]))[:, 0]
        groups.append((rows.to(node_mask.device), int(distinct[hi - 1])))
    return groups
