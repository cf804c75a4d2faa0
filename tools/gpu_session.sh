#!/usr/bin/env bash
# (Maintainers) what this repository measures and trains on a lent GPU, in one call of about 8 minutes:
#   1. the bench rows at batch 4096 (the rows at 128 and 1024 are in assets/measurements/gpu_h100_2026-11-27.txt)
#   2. the shipped unconditional weights: the model card's recipe, alone on the GPU, for EPOCHS epochs
#   3. the model card's figures (evaluate: DDIM-50 on 10,000 digits, DDPM-1000 on 2,000)
# Run from the repository root with MNIST's four IDX files gzipped in .carry/ and OUT set to a folder that
# comes back; results land in $OUT as a few files (the transfer takes at most 8).
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 DDPM_MNIST_DATA=$PWD/data
OUT=${OUT:?set OUT}
EPOCHS=${EPOCHS:-75}  # about 4.2 s each for the wide model on an H100 with nothing else running
WORK=/tmp/gpu_session && rm -rf $WORK && mkdir -p $WORK/logs
started=$(date +%s)
elapsed() { echo $(( $(date +%s) - started )); }
log() { echo "[$(elapsed) s] $*" | tee -a $WORK/logs/session.txt; }

mkdir -p data/MNIST/raw
for f in .carry/*.gz; do gunzip -c "$f" > "data/MNIST/raw/$(basename "$f" .gz)"; done
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > $WORK/logs/gpu.txt 2>&1
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" >> $WORK/logs/gpu.txt 2>&1
log "$(tr '\n' ' ' < $WORK/logs/gpu.txt)"

log "1. bench rows at batch 4096"
timeout 75 python3 - > $WORK/bench_4096.md 2> $WORK/logs/bench_err.txt <<'EOF'
import torch
from ddpm_lib.bench import train_throughput, training_rows
print(f"Device: {torch.cuda.get_device_name()}; torch {torch.__version__}; default SimpleUNet; 3 s per row")
print("| measurement | result |\n|---|---|")
for label, config in training_rows(torch.device("cuda")):
    if config.batch_size == 4096:
        rate, graphed = train_throughput(config, seconds=3)
        print(f"| {label}{'' if graphed or not config.cuda_graphs else ' (capture failed: plain step)'} | {rate:.0f} img/s |")
EOF
log "bench rc=$?"; cat $WORK/bench_4096.md; tail -n 3 $WORK/logs/bench_err.txt

log "2. shipped unconditional weights, $EPOCHS epochs"
WIDE="--channels 32,64,128 --batch-size 256 --lr 2e-3 --warmup-steps 200 --lr-schedule cosine --ema-decay 0.9995 --loss-weighting min_snr"
timeout 350 python3 -m ddpm_lib train --epochs $EPOCHS $WIDE --amp bf16 --quiet --out $WORK/unconditional \
  > $WORK/logs/train_unconditional.txt 2>&1
log "train rc=$?"; tail -n 4 $WORK/logs/train_unconditional.txt

log "3. evaluation"
U=$WORK/unconditional/ema.safetensors
timeout 50 python3 -m ddpm_lib evaluate --checkpoint $U --n 10000 --sampler ddim --steps 50 --batch-size 2500 > $WORK/eval_uncond_ddim50_10k.txt 2>&1
log "ddim rc=$?"; cat $WORK/eval_uncond_ddim50_10k.txt
timeout 70 python3 -m ddpm_lib evaluate --checkpoint $U --n 2000 --sampler ddpm --batch-size 2000 > $WORK/eval_uncond_ddpm_2k.txt 2>&1
log "ddpm rc=$?"; cat $WORK/eval_uncond_ddpm_2k.txt

cp $U $OUT/unconditional.safetensors 2>/dev/null
rm -f $WORK/*/checkpoint.pt
tar -czf $OUT/results.tar.gz -C $WORK .
log "packed"; ls -la $OUT
