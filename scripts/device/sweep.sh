#!/bin/bash
# Launch-config sweep of the selection kernels (scripts/sweep_launch.py) at the shapes the issues time: batch
# 4 / 16 at 30 000 tokens (issue 11's Voxtral rows), batch 80 at 32K (issue 12), batch 40 (rows between), and
# batch 80 / 32K at head_dim 64 (the llm-decode model), with bf16 and int8 means; results under $OUT.
# Environment: SWEEP_S (limit per shape, s), SHAPES ("B:N" or "B:N:head_dim" ...).
# (The eleventh session's grid, with the attention's DecodeConfig: benchmarks/sweep_h100_*.json.)
#   bash scripts/device/sweep.sh
export PYTHONUNBUFFERED=1
T0=$(date +%s)
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
git rev-parse --short HEAD 2>/dev/null
python3 -m pip install -q --no-deps --no-build-isolation -e . > $OUT/pip.log 2>&1 || { tail -20 $OUT/pip.log; exit 1; }
for shape in ${SHAPES:-16:30000 4:30000 80:32768 40:30000 80:32768:64}; do
  IFS=: read B N D <<< "$shape"
  timeout ${SWEEP_S:-110} python3 scripts/sweep_launch.py --batch ${B:-16} --tokens ${N:-30000} --head-dim ${D:-128} \
    --codes int8 --rounds 3 \
    --select-grid block_r=1024,2048,4096 select_warps=none,1,2,4,8 \
    --select-grid pages_per_program=128,384,512,1024 --select-grid block_p=32,128 \
    --select-grid filter_split=0,256 --select-grid int8_mma=false \
    --select-grid score_maxnreg=0,48,56 \
    --out $OUT/sweep_${B}_${N}_${D:-128}.json > $OUT/sweep_${B}_${N}_${D:-128}.log 2>&1
  echo "B=$B N=$N D=${D:-128} rc=$?  t=$(( $(date +%s)-T0 ))s"
  [ -f $OUT/sweep_${B}_${N}_${D:-128}.json ] && python3 scripts/sweep_launch.py --report $OUT/sweep_${B}_${N}_${D:-128}.json
  grep -E "Error|error" $OUT/sweep_${B}_${N}_${D:-128}.log | head -5
done
