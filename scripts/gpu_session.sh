#!/usr/bin/env bash
# Continue the shipped backbone's lineage on a lent GPU in one call, and leave everything worth keeping in $OUT.
#
# Here, once:     .venv/bin/elign data --dense runs/qm9_dense.npz        (27 MB, travels with `carry`)
# There:          bash scripts/gpu_session.sh MINUTES [SAMPLES]          (carry: runs/qm9_dense.npz)
# Back here:      tar xf $OUT/backbone.tar -C runs/ && elign evaluate --samples $OUT/samples.npz --json ...
#
# In order: training speed (benchmarks/train_speed.py), `elign pretrain --resume` of a copy of
# assets/relay (the constant-rate run the backbone is taken from; the shipped backbone itself may be an
# annealed copy whose saved settings end its run) for MINUTES, SAMPLES molecules (default 1000) at 1000 steps from the result, written
# losslessly as .npz (no RDKit needed there). $OUT receives session.log, backbone.tar (model.safetensors,
# state.pt, metrics.jsonl, config.json of the continued run), samples.npz and RESULTS.md (the benchmark
# file with the new block appended). The lent machine's python3 already holds torch, numpy, safetensors
# and tqdm; nothing is installed. Environment: PRETRAIN_ARGS (extra `elign pretrain` options, e.g. a
# larger --batch-size; any change of batch size changes the data order), SPEED_STEPS (0 skips the speed
# benchmark), DEVICE (default cuda), DATA, PYTHON, RUN (the run folder, default runs/backbone_continued),
# ALIGN_ITERATIONS (default 0: off; N > 0 times N iterations of the paper alignment preset on CUDA with a
# MACE-OFF23-small-shaped reward, benchmarks/align_speed.py, after the sampling). The MACE needs mace-torch,
# which the image lacks: run scripts/gpu_wheels.sh here once and carry .whl as well; it is installed into
# /tmp/site there.
set -euo pipefail
minutes=${1:?usage: scripts/gpu_session.sh MINUTES [SAMPLES]}
samples=${2:-1000}
out=${OUT:?OUT must name the folder that comes back}
data=${DATA:-runs/qm9_dense.npz}
py=${PYTHON:-python3}
device=${DEVICE:-cuda}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
[ -f "$data" ] || { echo "missing $data: run 'elign data --dense $data' here and carry it" >&2; exit 2; }

run=${RUN:-runs/backbone_continued}
log="$out/session.log"
{
    date -u
    nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
    if [ "${SPEED_STEPS:-20}" -gt 0 ]; then
        "$py" benchmarks/train_speed.py --data "$data" --steps "${SPEED_STEPS:-20}"
        cp benchmarks/RESULTS.md "$out/RESULTS.md"
    fi
    rm -rf "$run" && mkdir -p "$(dirname "$run")" && cp -r assets/relay "$run"
    "$py" -m elign.cli pretrain --data "$data" --out "$run" --resume --max-minutes "$minutes" --device "$device" \
        --no-progress ${PRETRAIN_ARGS:-}
    "$py" -m elign.cli sample --checkpoint "$run/model.safetensors" --num "$samples" --steps 1000 --seed 0 \
        --batch-size "$samples" --device "$device" --out "$out/samples.npz"
    if [ "${ALIGN_ITERATIONS:-0}" -gt 0 ]; then
        if [ -d .whl ]; then
            "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
                .whl/*.whl
            export PYTHONPATH="/tmp/site:$PYTHONPATH"
        fi
        "$py" benchmarks/align_speed.py --mlff mace-off-small-like --skip-cpu --iterations "$ALIGN_ITERATIONS"
        cp benchmarks/RESULTS.md "$out/RESULTS.md"
    fi
    date -u
} 2>&1 | tee "$log"
name=$(basename "$run")
tar cf "$out/backbone.tar" -C "$(dirname "$run")" "$name/model.safetensors" "$name/state.pt" "$name/metrics.jsonl" \
    "$name/config.json"
ls -l "$out"
