#!/usr/bin/env bash
# On a machine with an NVIDIA GPU (the device tool's H100/H200; see bench/README.md): the `1b`
# preset in bf16 on one GPU for a few steps through the real path (`cli.py train 1b --workers 1
# --device cuda`, Ray Train + FSDP2, metering on), then bench/nvml_watts.py. Results go to
# bench/results/gpu_1b.{md,json} and bench/results/meter-nvml.md, and to $OUT when it is set.
#
#     bash bench/gpu_check.sh            # env: STEPS=20 BATCH_TOKENS=65536 MICRO=4 GPU=auto
#
# Missing packages (ray, codecarbon, SQLAlchemy, ...) come from wheels made here by
# bench/gpu_wheels.sh: parts .whl/part-* carried in earlier calls and gathered in /tmp/whlparts.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
STEPS=${STEPS:-20}
BATCH_TOKENS=${BATCH_TOKENS:-65536}  # 32 sequences of 2048 tokens per optimiser step
MICRO=${MICRO:-4}
RES=bench/results
LOG=${OUT:-/tmp}/gpu_check.log
mkdir -p "$RES" /tmp/whlparts
exec > >(tee -a "$LOG") 2>&1

echo "== $(date -u) $(uname -a)"
nvidia-smi --query-gpu=name,memory.total,driver_version,power.limit --format=csv || exit 1

# 1. packages: gather this call's parts, install once all of them are here
cp .whl/part-* /tmp/whlparts/ 2>/dev/null || true
if ! $PY -c "import ray, codecarbon, sqlalchemy, alembic, typer" 2>/dev/null \
   && [ ! -f /tmp/site/.done ]; then
  ls -la /tmp/whlparts
  rm -rf /tmp/wheels
  if ! cat /tmp/whlparts/part-* | tar -C /tmp -xf -; then
    echo "wheel parts incomplete (have: $(ls /tmp/whlparts)); carry the rest in the next call"
    exit 3
  fi
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site /tmp/wheels/*.whl || exit 1
  touch /tmp/site/.done
fi
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
$PY -c "import ray, codecarbon, sqlalchemy, torch; print('ray', ray.__version__, 'torch', \
torch.__version__, 'cuda', torch.cuda.is_available())" || exit 1

# 2. data: no registry here, so the demo mixture cannot be fetched; this Python's own stdlib
export TALLY_HOME=/tmp/gpu-home
STDLIB=$($PY -c "import sysconfig; print(sysconfig.get_paths()['stdlib'])")
if [ ! -d "$TALLY_HOME/data/gpu" ]; then
  $PY cli.py data prepare "stdlib=$STDLIB/*.py" "email=$STDLIB/email/*.py" \
    "asyncio=$STDLIB/asyncio/*.py" --name gpu --vocab-size 8192 --workers 8 || exit 1
fi

# 3. the run: 1b, bf16 params with fp32 reduction (FSDP2 MixedPrecisionPolicy), one GPU
GPU=${GPU:-auto}
if [ "$GPU" = auto ]; then
  case "$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)" in
    *H200*) GPU=h200 ;; *H100*PCIe*) GPU=h100-pcie ;; *) GPU=h100 ;;
  esac
fi
t0=$(date +%s)
$PY cli.py train 1b --workers 1 --device cuda --gpu "$GPU" --max-steps "$STEPS" \
  --batch-tokens "$BATCH_TOKENS" --micro-batch "$MICRO" --checkpoint-every "$STEPS" \
  --data gpu --no-dashboard
rc=$?
echo "train exit $rc after $(( $(date +%s) - t0 )) s"
$PY bench/gpu_summary.py "$TALLY_HOME" "$RES/gpu_1b" --gpu "$GPU" \
  --note "$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1); $STEPS steps of $BATCH_TOKENS tokens, micro-batch $MICRO, bf16 (FSDP2 mixed precision); data: this Python's stdlib sources (vocab 8192)"

# 4. the NVML energy counter against NVML's power sensor on a matmul load
$PY bench/nvml_watts.py --seconds 30 --out "$RES/meter-nvml.md"

if [ -n "${OUT:-}" ]; then cp "$RES"/gpu_1b.md "$RES"/gpu_1b.json "$RES"/meter-nvml.md "$OUT"/ 2>/dev/null; fi
exit $rc
