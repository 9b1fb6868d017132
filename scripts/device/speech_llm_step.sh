#!/bin/bash
# One device call for issue 11 (repository root on the GPU machine; results under $OUT): the
# Voxtral-Mini-3B-shape decode step over 16 recordings x 40 min, our arms (measured skinny-GEMM plan and
# cuBLAS) and transformers' step and prefill on the same weights, with the per-kernel profile, then the table.
# 16 x 40 min with the transformers arms needs the H200's memory (run with needs_h200).
# Environment: MIN, BATCH, ARMS, HF (transformers arms; "" for none), ROUNDS, E2E_S, EXTRA.
#   bash scripts/device/speech_llm_step.sh
export PYTHONUNBUFFERED=1
T0=$(date +%s)
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -m pip install -q --no-deps --no-build-isolation -e . > $OUT/pip.log 2>&1 || { tail -20 $OUT/pip.log; exit 1; }
cd scripts
timeout ${E2E_S:-420} python3 bench_e2e.py speech-llm --shape voxtral-mini-3b --minutes ${MIN:-40} --batch ${BATCH:-16} \
   --arms ${ARMS:-unique dense window unique-cublas dense-cublas} ${HF---hf-generate --hf-prefill} \
   --rounds ${ROUNDS:-3} --steps 16 --profile ${EXTRA} --out $OUT/e2e.json > $OUT/e2e.log 2>&1
echo "e2e rc=$? t=$(( $(date +%s)-T0 ))s"; tail -4 $OUT/e2e.log
[ -f $OUT/e2e.json ] && python3 bench_e2e.py report $OUT/e2e.json 2>&1 | tail -50
