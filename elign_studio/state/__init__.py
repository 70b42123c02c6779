"""The parts of a studio session's state, one module per concern, each a ``param.Parameterized`` whose params
carry their docs; :class:`elign_studio.session.StudioSession` is all of them in one object.

- ``base``: ``SessionBase``: settings, status line, error banner, force field, the sampling thread;
- ``checkpoints``: ``CheckpointState``: the models and their names, ``ModelChoice`` (a choice among them);
- ``alignment``: ``AlignmentState``: preset and settings, the run and its training thread;
- ``sampling``: ``SamplingState``: sampling settings, the sets shown, molecule and frame, background jobs;
- ``export``: ``ExportState``: SDF and trajectory XYZ of what is shown.
"""
