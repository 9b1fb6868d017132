#!/bin/bash
# Every H200 Done-when figure of issues 12 and 11 in one device call (run with needs_h200; results under $OUT),
# for a session that may get a single H200 start: (1) bench_kernels, batch 80 / 1 at 32K / 128K, bf16, e4m3 and
# int8 means with their refine arms, no launch variants; (2) llm-decode, 16 layers, batch 80 / 32K, bf16 then
# int8 + refine 4; (3) the Voxtral-Mini-3B-shape step at 16 x 40 min with transformers' step and prefill.
# Each stage under its own limit (KERNELS_S, LLM_S per run, SPEECH_S) so what it measured comes back; tables last.
#   bash scripts/device/h200_all.sh
export PYTHONUNBUFFERED=1
T0=$(date +%s)
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -m pip install -q --no-deps --no-build-isolation -e . > $OUT/pip.log 2>&1 || { tail -20 $OUT/pip.log; exit 1; }
timeout ${KERNELS_S:-120} python3 scripts/bench_kernels.py --batch 80 1 --tokens 32768 131072 --rounds 3 --rep-ms 10 \
   --scores unique --codes fp8 int8 --variants --out $OUT/kernels.json > $OUT/kernels.log 2>&1
echo "kernels rc=$? t=$(( $(date +%s)-T0 ))s"
for arm in bf16 int8; do
  extra=""; [ $arm = int8 ] && extra="--stats-dtype int8 --refine 4"
  timeout ${LLM_S:-90} python3 scripts/bench_e2e.py llm-decode --contexts 32768 --batch 80 --arms dense unique \
     --rounds 2 --profile $extra --out $OUT/llm_decode_$arm.json > $OUT/llm_decode_$arm.log 2>&1
  echo "llm-decode $arm rc=$? t=$(( $(date +%s)-T0 ))s"
done
timeout ${SPEECH_S:-280} python3 scripts/bench_e2e.py speech-llm --shape voxtral-mini-3b --minutes 40 --batch 16 \
   --arms unique dense window --hf-generate --hf-prefill --rounds 2 --steps 16 --profile --out $OUT/speech.json \
   > $OUT/speech.log 2>&1
echo "speech-llm rc=$? t=$(( $(date +%s)-T0 ))s"
[ -f $OUT/kernels.json ] && python3 scripts/bench_kernels.py --report $OUT/kernels.json 2>&1 | head -8
for f in llm_decode_bf16 llm_decode_int8 speech; do
  [ -f $OUT/$f.json ] && python3 scripts/bench_e2e.py report $OUT/$f.json 2>&1 | tail -8
done
