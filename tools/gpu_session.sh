#!/usr/bin/env bash
# (Maintainers) everything this repository measures and trains on a lent GPU, in one call of about 9 minutes:
#   1. the CUDA-graph step against the plain step (tools/gpu_check.py)
#   2. python -m ddpm_lib bench (the GPU rows of the README)
#   3. the shipped weights, unconditional and conditional, trained side by side with the long-run recipe,
#      while tools/recipe.py screens training recipes at fixed step counts in four more processes
#   4. the model cards' figures (evaluate, sweep)
# Run from the repository root with MNIST's four IDX files gzipped in .carry/ and OUT set to a folder that
# comes back; results land in $OUT as a few files (the transfer takes at most 8).
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 DDPM_MNIST_DATA=$PWD/data
OUT=${OUT:?set OUT}
WORK=/tmp/gpu_session && rm -rf $WORK && mkdir -p $WORK/screen $WORK/logs
started=$(date +%s)
elapsed() { echo $(( $(date +%s) - started )); }
log() { echo "[$(elapsed) s] $*" | tee -a $WORK/logs/session.txt; }

mkdir -p data/MNIST/raw
for f in .carry/*.gz; do gunzip -c "$f" > "data/MNIST/raw/$(basename "$f" .gz)"; done
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > $WORK/logs/gpu.txt 2>&1
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" >> $WORK/logs/gpu.txt 2>&1
log "$(cat $WORK/logs/gpu.txt | tr '\n' ' ')"

log "1. graph vs plain step"
timeout 90 python3 tools/gpu_check.py > $WORK/logs/check.txt 2>&1; log "check rc=$?"; cat $WORK/logs/check.txt

log "2. bench"
timeout 120 python3 -m ddpm_lib bench --seconds 3 > $WORK/bench.md 2> $WORK/logs/bench_err.txt; log "bench rc=$?"; cat $WORK/bench.md

log "3. shipped weights and recipe screen"
WIDE="--channels 32,64,128 --batch-size 256 --lr 2e-3 --warmup-steps 200 --lr-schedule cosine --ema-decay 0.9995 --loss-weighting min_snr"
# Epochs that fit the time left: the wide model's graphed step rate, shared by two trainings and the screen.
read AMP EPOCHS < <(python3 - <<'EOF'
from dataclasses import replace
from ddpm_lib.bench import train_throughput
from ddpm_lib.config import TrainConfig
from ddpm_lib.unet import UNetConfig
wide = TrainConfig(model=UNetConfig(channels=(32, 64, 128)), batch_size=256, device="cuda")
rates = {amp: train_throughput(replace(wide, amp=amp), seconds=3)[0] for amp in ("fp32", "bf16")}
amp = max(rates, key=rates.get)
budget_seconds = 230
epochs = int(min(120, max(15, budget_seconds * rates[amp] * 0.35 / 60_000)))
import sys; print(f"wide model rates {rates}", file=sys.stderr)
print(amp, epochs)
EOF
)
AMP=${AMP:-bf16}; EPOCHS=${EPOCHS:-40}  # if the probe failed
log "shipped: amp=$AMP epochs=$EPOCHS"
for kind in unconditional conditional; do
  flag=""; [ $kind = conditional ] && flag="--conditional"
  timeout 290 python3 -m ddpm_lib train --epochs $EPOCHS $WIDE $flag --amp $AMP --quiet --out $WORK/$kind \
    > $WORK/logs/train_$kind.txt 2>&1 &
done
MARKS=100,200,300,500,750,1000,1500,2000,2500,3000
screen() { timeout 290 python3 tools/recipe.py --amp fp32 --n 2000 --out $WORK/screen/$1.csv "${@:2}" > $WORK/logs/screen_$1.txt 2>&1; }
screen p1 --variant baseline,ema_0.99,ema_0.995,ema_off --steps $MARKS &
screen p2 --variant min_snr,v,v_min_snr,cosine_schedule --steps $MARKS &
screen p3 --variant lr_1e-3,lr_4e-3,no_attention,narrow_8_16_32,wide_32_64_128 --steps $MARKS &
screen p4 --variant batch_64,batch_32,batch_32_lr_1e-3 --steps $MARKS,4000,5000,6000 &
wait
log "training and screen done"; tail -n 3 $WORK/logs/train_*.txt

log "4. evaluation"
U=$WORK/unconditional/ema.safetensors; C=$WORK/conditional/ema.safetensors
timeout 60 python3 -m ddpm_lib evaluate --checkpoint $U --n 10000 --sampler ddim --steps 50 > $WORK/eval_uncond_ddim50_10k.txt 2>&1
timeout 60 python3 -m ddpm_lib evaluate --checkpoint $U --n 2000 --sampler ddpm > $WORK/eval_uncond_ddpm_2k.txt 2>&1
timeout 60 python3 -m ddpm_lib evaluate --checkpoint $U --n 2000 --sampler ddim --steps 50 > $WORK/eval_uncond_ddim50_2k.txt 2>&1
timeout 60 python3 -m ddpm_lib evaluate --conditional --guidance 2 --checkpoint $C --n 10000 > $WORK/eval_cond_w2_10k.txt 2>&1
log "evaluations done"; cat $WORK/eval_*.txt
timeout 70 python3 -m ddpm_lib sweep --checkpoint $C --n 3000 --out $WORK/conditional_curves.csv > $WORK/logs/sweep.txt 2>&1
log "sweep rc=$?"

cp $U $OUT/unconditional.safetensors 2>/dev/null; cp $C $OUT/conditional.safetensors 2>/dev/null
rm -f $WORK/*/checkpoint.pt
tar -czf $OUT/results.tar.gz -C $WORK .
log "packed"; ls -la $OUT
