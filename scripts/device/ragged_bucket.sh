#!/bin/bash
# One device call: the prefill key bucket where it should matter most, rows that drift apart (bench_speech_pipeline.py
# --ragged: windows end at seeded lengths, so each row's prefill meets its own context length). Alternating
# processes, bucket off (0) and on (the library's 1800), ROUNDS each, 16 x MIN minutes, UNIQUE; then the table.
# Environment: MIN (20 on an H100, 40 fits an H200), ROUNDS, LIMIT (s for the whole call).
#   bash scripts/device/ragged_bucket.sh
export PYTHONUNBUFFERED=1
T0=$(date +%s)
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
if ls .whl/*.whl > /dev/null 2>&1; then  # soundfile / soxr wheels (pipeline_stages.sh's header)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -m pip install -q --no-deps --no-build-isolation -e . > $OUT/pip.log 2>&1 || { tail -20 $OUT/pip.log; exit 1; }
for i in $(seq ${ROUNDS:-2}); do
  for bucket in 0 1800; do
    left=$(( ${LIMIT:-560} - ($(date +%s)-T0) )); [ $left -lt 60 ] && break 2
    timeout $left python3 scripts/bench_speech_pipeline.py --out $OUT/ragged_b${bucket}_$i.json --recordings 16 \
      --minutes ${MIN:-20} --max-new-tokens 64 --arms unique --ragged --prefill-key-bucket ${bucket:-0} \
      > $OUT/ragged_b${bucket}_$i.log 2>&1
    echo "bucket $bucket round $i rc=$? t=$(( $(date +%s)-T0 ))s: $(grep -E '^ *unique ' $OUT/ragged_b${bucket}_$i.log)"
  done
done
