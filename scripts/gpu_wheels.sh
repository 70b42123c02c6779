#!/usr/bin/env bash
# Download, here, the wheels that mace-torch needs on a lent GPU machine (Python 3.12, x86-64) beyond what its
# image already holds (torch, numpy, scipy, e3nn of another version, h5py, matplotlib, pandas, torchmetrics...),
# into .whl/ (ignored by git). gpu_session.sh installs them there into /tmp/site when .whl/ travels (carry).
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.whl  # the folder gpu_session.sh installs from
grep -qxF "/$dest/" .git/info/exclude 2>/dev/null || echo "/$dest/" >> .git/info/exclude
# what `from mace import modules, calculators` imports and the image lacks (measured with sys.modules here)
wheels=(mace-torch==0.3.16 e3nn==0.4.4 ase==3.29.0 matscipy==1.3.1 torch-ema==0.3 lmdb orjson)
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d "$dest" "${wheels[@]}"
du -sh "$dest"
ls "$dest"
