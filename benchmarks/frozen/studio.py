"""The studio's Sample (``elign_studio.sampling``: ``sample_set``, then ``score_frames``) with the force field as
an object: the studio of cpu_speed.py's "main", which scores frames with main's AIMNet2 calls.

A frozen copy, for benchmarks only (the library never imports it): the studio loads its force field by name, so
main's process runs this copy of the two steps, the same work, with the network and force field it is given.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch

from elign.diffusion.sampler import node_mask_from_sizes, sample_chain
from elign_studio import sampling

__all__ = ["sample_and_score"]

MAX_FRAMES = 101  # sample_set's default
CHUNK_FRAMES = 20  # score_frames' default


def sample_and_score(model, config, ff, model_name: str, seed: int, num: int, steps: int) -> sampling.SampledSet:
    """``score_frames(sample_set(model, config, model_name, seed, num, steps))`` with ``ff`` as the force field."""
    info = config.dataset_info()
    decoder, atomic_numbers = list(info.atom_decoder), list(info.atomic_numbers)
    steps = max(1, min(int(steps), int(model.T)))
    gen = torch.Generator().manual_seed(int(seed))
    node_mask = node_mask_from_sizes(sampling._sizes(info, num, None, gen))  # [B, N, 1]
    every = max(1, math.ceil(steps / max(1, MAX_FRAMES - 1)))
    molecules, traj = sample_chain(
        model, node_mask, steps, gen, trajectory_every=every, atomic_numbers=info.atomic_numbers, fixed_types=None
    )
    pos, types = torch.stack(traj.positions), torch.stack(traj.types)  # [F, B, N, 3], [F, B, N]
    final = sampling._score(ff, pos[-1:], types[-1:], node_mask, atomic_numbers)
    F_, B = pos.shape[:2]
    energy, rms = np.full((B, F_), np.nan), np.full((B, F_), np.nan)  # [B, F]
    energy[:, -1], rms[:, -1] = final["energy"][:, 0], final["rms_force"][:, 0]
    sampled = sampling.SampledSet(
        model_name=model_name,
        seed=int(seed),
        decoder=decoder,
        batch=molecules,
        times=list(traj.times),
        frames=_viewer_frames(pos, types, list(traj.times), node_mask, decoder, final),
        energy=energy,
        rms_force=rms,
        rows=sampling._rows(model_name, int(seed), molecules, decoder, final),
        frames_scored=F_ == 1,
        trajectory=(pos, types, node_mask),
        atomic_numbers=atomic_numbers,
    )
    return sampled if sampled.frames_scored else _score_frames(sampled, ff)


def _viewer_frames(pos, types, times, node_mask, decoder, final) -> list[list[dict]]:
    """Each molecule's viewer frames, forces on the final one (``chain_set``)."""
    F_, B = pos.shape[:2]
    sizes = node_mask.sum(dim=(1, 2)).round().long()  # [B]
    frames = []
    for b in range(B):
        n = int(sizes[b])
        last = final["forces"][0, b, :n] if final["valid"][0, b] else None
        chain = [
            sampling._viewer_frame(
                times[f], pos[f, b, :n].numpy(), types[f, b, :n].numpy(), last if f == F_ - 1 else None, decoder
            )
            for f in range(F_)
        ]
        if not final["valid"][0, b]:
            chain[-1]["why"] = final["reason"][b] or "not scorable"
        frames.append(chain)
    return frames


def _score_frames(sampled: sampling.SampledSet, ff) -> sampling.SampledSet:
    """``sampled`` with forces on every frame, by chunks of frames (``score_frames``)."""
    pos, types, node_mask = sampled.trajectory
    F_, B = pos.shape[:2]
    energy, rms = sampled.energy.copy(), sampled.rms_force.copy()  # [B, F]
    frames = [[dict(fr) for fr in chain] for chain in sampled.frames]
    for start in range(0, F_ - 1, CHUNK_FRAMES):
        stop = min(F_ - 1, start + CHUNK_FRAMES)
        part = sampling._score(ff, pos[start:stop], types[start:stop], node_mask, sampled.atomic_numbers)
        energy[:, start:stop], rms[:, start:stop] = part["energy"], part["rms_force"]
        for f in range(start, stop):
            for b, chain in enumerate(frames):
                if part["valid"][f - start, b]:
                    n = len(chain[f]["elements"])
                    chain[f].update(sampling._force_fields(part["forces"][f - start, b, :n], n))
                else:
                    chain[f]["why"] = part["reason"][(f - start) * B + b] or "not scorable"
    return replace(sampled, frames=frames, energy=energy, rms_force=rms, frames_scored=True)
