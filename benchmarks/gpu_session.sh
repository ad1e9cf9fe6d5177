#!/usr/bin/env bash
# Issue 18's GPU checks in one device lease, most important first, each under its own
# time limit so that one slow part cannot take the others' results with it.
#
# Run on the GPU machine from the repository root, with agfsync and the packages the
# machine lacks carried as wheels in .whl/ (benchmarks/gpu_wheels.txt says which and how):
#     bash benchmarks/gpu_session.sh "$OUT"
# Writes log.txt (every part's output and its exit status) and one JSON per part.
# PARTS picks parts (default: all four, in this order); E2E_ARGS adds options of
# pipeline_e2e.py, e.g. the paper settings with the UNet compiled:
#     PARTS=e2e E2E_ARGS="--compile-denoiser --prompts-per-category 6" bash ...
set -u
parts=" ${PARTS:-e2e preprocessing options-sd15 options-sdxl} "
out=${1:?usage: gpu_session.sh OUTPUT_FOLDER}
mkdir -p "$out"
log="$out/log.txt"
begin=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl >>"$log" 2>&1 || { echo "wheel install failed"; tail "$log"; exit 1; }
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
{
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv
    nproc; free -g | head -2; uname -r
    python3 -P -c "import torch, diffusers, transformers, distilabel, agfsync.steps; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__, 'distilabel', distilabel.__version__)"
} >>"$log" 2>&1 || { echo "imports failed"; tail -30 "$log"; exit 1; }

part() {  # part NAME SECONDS COMMAND...: run COMMAND, at most SECONDS, output to the log
    local name=$1 limit=$2 start rc
    shift 2
    [[ $parts == *" $name "* ]] || return 0
    start=$(date +%s)
    echo "=== $name (limit ${limit} s, at $((start - begin)) s)" >>"$log"
    timeout -k 10 "$limit" "$@" >>"$log" 2>&1
    rc=$?
    echo "=== $name: exit $rc after $(($(date +%s) - start)) s" | tee -a "$log"
}

part e2e 250 python3 benchmarks/pipeline_e2e.py --model-dir /tmp/m --work-dir /tmp/e2e \
    --prompts-per-category 2 --steps 50 --calibration-images 24 --json "$out/e2e.json" \
    ${E2E_ARGS:-}
part preprocessing 50 python3 benchmarks/judge_preprocessing.py --device cuda \
    --json "$out/preprocessing.json"
part options-sd15 150 python3 benchmarks/engine_options.py --architecture sd15 \
    --model-dir /tmp/m/sd15 --num-prompts 2 --num-images 8 --batch-size 8 \
    --json "$out/options-sd15.json"
part options-sdxl 115 python3 benchmarks/engine_options.py --architecture sdxl \
    --options baseline,vae_fp16,fuse_qkv,fast_sampling --num-prompts 1 --num-images 4 \
    --batch-size 4 --json "$out/options-sdxl.json"
echo "total $(($(date +%s) - begin)) s"
grep -E "^(=== |\| |pipeline|projection|  |fast sampling|calibration|built|total)" "$log" | tail -80
