"""Frozen references: the code "main" ran, kept for same-run ratios against today's (cpu_speed.py,
compile_speed.py). For benchmarks only; the library never imports them.

Each is an object of its own that a benchmark builds explicitly and times beside the live code; none changes a
library class or module:

- ``egnn``: the EGNN forward before size groups and the fused pair kernels, built around a live network (its
  parameters shared), and a Pretrainer that trains through it;
- ``align``: FED-GRPO's update and energy potentials before the cheaper iteration (a trainer subclass), and
  AIMNet2's calls by whole batches padded to a multiple of 8 atoms (a force-field subclass);
- ``studio``, ``evaluate``: the studio's Sample and ``elign evaluate``, which load their force field by name,
  as copies that take main's network and force field as objects.
"""
