#!/bin/bash
# One device call for issue 12's end-to-end line (repository root on the GPU machine; results under $OUT): the
# 16-layer llm-decode step at batch 80 / 32K, dense and UNIQUE with bf16 page statistics, then UNIQUE with int8
# key means re-ranked by the bf16 means (SparsityConfig.refine 4) in a second run on the same warm card, tables
# last. 32K at batch 80 does not fit an 80 GB H100 (issue 12): run it on the H200.
# Environment: CONTEXTS, BATCH, ROUNDS, RUN_S (per run, s), REFINE.
#   bash scripts/device/llm_decode.sh
export PYTHONUNBUFFERED=1
T0=$(date +%s)
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -m pip install -q --no-deps --no-build-isolation -e . > $OUT/pip.log 2>&1 || { tail -20 $OUT/pip.log; exit 1; }
cd scripts
for arm in bf16 int8; do
  extra=""; [ $arm = int8 ] && extra="--stats-dtype int8 --refine ${REFINE:-4}"
  arms="dense unique"  # dense in both runs: each ratio against the dense arm of its own run
  timeout ${RUN_S:-240} python3 bench_e2e.py llm-decode --contexts ${CONTEXTS:-32768} --batch ${BATCH:-80} \
     --arms $arms --rounds ${ROUNDS:-3} --profile $extra --out $OUT/llm_decode_$arm.json > $OUT/llm_decode_$arm.log 2>&1
  echo "$arm rc=$? t=$(( $(date +%s)-T0 ))s"; tail -3 $OUT/llm_decode_$arm.log
done
for arm in bf16 int8; do [ -f $OUT/llm_decode_$arm.json ] && python3 bench_e2e.py report $OUT/llm_decode_$arm.json 2>&1 | tail -12; done
