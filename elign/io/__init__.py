"""Files in and out: checkpoints (native and original EDM), molecule files (SDF, .npz, XYZ), shipped assets."""
