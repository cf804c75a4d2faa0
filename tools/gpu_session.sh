#!/usr/bin/env bash
# (Maintainers) what this repository trains and measures on a lent GPU, in one call of about 8 minutes:
#   1. the unconditional weights: the wide network of MODEL_CARD.md with the CPU recipe's winning changes
#      (v target, cosine noise schedule; assets/measurements/RECIPE.md), alone on the GPU, for EPOCHS epochs
#   2. the conditional weights with the same recipe at the default widths, for COND_EPOCHS epochs, while
#      the unconditional weights are evaluated (DDIM-50, eta 0 and 1, N = 10,000), beside the shipped ones
#   3. the conditional weights evaluated at the shipped guidance (w = 2, DDIM-50, N = 10,000)
# Earlier sessions' versions of this script (bench rows, the 75-epoch eps run) are in git history; their
# output is in assets/measurements/gpu_h100_2026-11-27*.txt.
# Run from the repository root with MNIST's four IDX files gzipped in .carry/ and OUT set to a folder that
# comes back; results land in $OUT as two files.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 DDPM_MNIST_DATA=$PWD/data
OUT=${OUT:?set OUT}
EPOCHS=${EPOCHS:-70}            # about 4 s each for the wide network on an H100 with nothing else running
COND_EPOCHS=${COND_EPOCHS:-25}  # about 3.5 s each for the default widths
WORK=/tmp/gpu_session && rm -rf $WORK && mkdir -p $WORK/logs
started=$(date +%s)
log() { echo "[$(( $(date +%s) - started )) s] $*" | tee -a $WORK/logs/session.txt; }

mkdir -p data/MNIST/raw
for f in .carry/*.gz; do gunzip -c "$f" > "data/MNIST/raw/$(basename "$f" .gz)"; done
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > $WORK/logs/gpu.txt 2>&1
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" >> $WORK/logs/gpu.txt 2>&1
log "$(tr '\n' ' ' < $WORK/logs/gpu.txt)"

RECIPE="--schedule cosine --prediction v --loss-weighting min_snr --lr 2e-3 --lr-schedule cosine --amp bf16 --quiet"
log "1. unconditional, $EPOCHS epochs"
timeout 340 python3 -m ddpm_lib train --epochs $EPOCHS --channels 32,64,128 --batch-size 256 --warmup-steps 200 \
  --ema-decay 0.9995 $RECIPE --out $WORK/unconditional > $WORK/logs/train_unconditional.txt 2>&1
log "train rc=$?"; tail -n 3 $WORK/logs/train_unconditional.txt

log "2. conditional, $COND_EPOCHS epochs, beside the unconditional evaluations"
timeout 150 python3 -m ddpm_lib train --conditional --epochs $COND_EPOCHS --batch-size 128 --warmup-steps 100 \
  --ema-decay 0.999 $RECIPE --out $WORK/conditional > $WORK/logs/train_conditional.txt 2>&1 &
conditional=$!
U=$WORK/unconditional/ema.safetensors
for eta in 0 1; do
  timeout 60 python3 -m ddpm_lib evaluate --checkpoint $U --n 10000 --eta $eta --batch-size 2500 \
    > $WORK/eval_uncond_eta${eta}_10k.txt 2>&1
  log "uncond eta $eta rc=$?"
done
timeout 60 python3 -m ddpm_lib evaluate --n 10000 --eta 1 --batch-size 2500 > $WORK/eval_shipped_uncond_eta1_10k.txt 2>&1
log "shipped eta 1 rc=$?"
wait $conditional; log "conditional train rc=$?"; tail -n 3 $WORK/logs/train_conditional.txt

log "3. conditional evaluation, w = 2"
timeout 60 python3 -m ddpm_lib evaluate --checkpoint $WORK/conditional/ema.safetensors --conditional --guidance 2 \
  --n 10000 --batch-size 2500 > $WORK/eval_cond_w2_10k.txt 2>&1
log "cond rc=$?"
for f in $WORK/eval_*.txt; do echo "== $(basename $f)"; cat $f; done

cp $U $OUT/unconditional.safetensors 2>/dev/null
rm -f $WORK/*/checkpoint.pt
tar -czf $OUT/results.tar.gz -C $WORK .
log "packed"; ls -la $OUT
