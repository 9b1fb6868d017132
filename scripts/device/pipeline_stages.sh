#!/bin/bash
# One device call for issue 11's whole-pipeline line (repository root on the GPU machine; results under $OUT):
# the prefill attention arms (bench_prefill.py: page gather, masked SDPA, the lower-right bias, flash forced; 16
# rows one call each against rows of equal length batched), then the whole pipeline of MIN-minute recordings:
# UNIQUE, UNIQUE with its wall time split by stage (audio tokens, prefill, decode steps, token choice, host), and transformers'
# generate on HF_WINDOWS windows per recording. 16 x 40 min needs the H200's memory (needs_h200); an H100 takes
# MIN=20. Environment: MIN, ARMS, HF_WINDOWS, PIPE_S.
#   bash scripts/device/pipeline_stages.sh
export PYTHONUNBUFFERED=1
T0=$(date +%s)
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -m pip install -q --no-deps --no-build-isolation -e . > $OUT/pip.log 2>&1 || { tail -20 $OUT/pip.log; exit 1; }
timeout 90 python3 scripts/bench_prefill.py --contexts 2048 8192 30000 --out $OUT/prefill.json > $OUT/prefill.log 2>&1
echo "prefill rc=$? t=$(( $(date +%s)-T0 ))s"; tail -6 $OUT/prefill.log
timeout ${PIPE_S:-420} python3 scripts/bench_speech_pipeline.py --out $OUT/pipeline.json --recordings 16 \
  --minutes ${MIN:-40} --max-new-tokens 64 --arms ${ARMS:-unique unique-stages transformers} \
  --hf-windows ${HF_WINDOWS:-2} > $OUT/pipeline.log 2>&1
echo "pipeline rc=$? t=$(( $(date +%s)-T0 ))s"; tail -8 $OUT/pipeline.log
