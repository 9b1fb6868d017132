#!/bin/bash
# One device call for issue 12 (run from the repository root on the GPU machine; results under $OUT):
# the GPU tests of the kernels (14 workers: 8 reached 91 % of them in 200 s on an H100), then one
# bench_kernels.py run of the UNIQUE arms with fp8 and int8 means and the opt-in launch variants, then the
# re-ranking kernel alone (scripts/bench_refine.py), then the tables. Each stage has its own time limit so what
# it measured comes back. Environment: TEST_S, BENCH_S, REFINE_S (stage limits, s), SKIP_TESTS, SKIP_REFINE,
# BATCH, TOKENS, ROUNDS, VARIANTS (set and empty: no launch variants).
#   bash scripts/device/kernels.sh
export PYTHONUNBUFFERED=1
T0=$(date +%s)
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader
git rev-parse --short HEAD 2>/dev/null
python3 -m pip install -q --no-deps --no-build-isolation -e . > $OUT/pip.log 2>&1 || { tail -20 $OUT/pip.log; exit 1; }
if [ -z "$SKIP_TESTS" ]; then
  timeout ${TEST_S:-240} python3 -m pytest -q -m gpu -n 14 tests/kernels -p no:cacheprovider > $OUT/tests.log 2>&1
  echo "tests rc=$? $(tail -1 $OUT/tests.log)  t=$(( $(date +%s)-T0 ))s"
  grep -E "FAILED|Error" $OUT/tests.log | head -20
fi
timeout ${BENCH_S:-360} python3 scripts/bench_kernels.py --batch ${BATCH:-1 80} --tokens ${TOKENS:-131072 32768} \
   --rounds ${ROUNDS:-3} --rep-ms 10 --scores unique --codes fp8 int8 --variants ${VARIANTS-radix bound radixbound kth8 f16 i8wide} \
   --out $OUT/kernels.json > $OUT/bench.log 2>&1
echo "bench rc=$?  t=$(( $(date +%s)-T0 ))s"
tail -5 $OUT/bench.log
if [ -z "$SKIP_REFINE" ]; then
  timeout ${REFINE_S:-90} python3 scripts/bench_refine.py --batch 1 80 --k 64 128 504 --extra 4 --rounds 3 \
     --out $OUT/refine.json > $OUT/refine.log 2>&1
  echo "refine rc=$?  t=$(( $(date +%s)-T0 ))s"
fi
[ -f $OUT/kernels.json ] && python3 scripts/bench_kernels.py --report $OUT/kernels.json 2>&1 | tail -60
[ -f $OUT/refine.log ] && tail -9 $OUT/refine.log
