#!/bin/bash
# The speech-LLM GPU tests in one device call (repository root; logs under $OUT): graph replays against eager steps
# (whole recordings decoded together: the tail's graphs over some rows, beams), the greedy loop under sync debug
# mode, parity with transformers and the fused / PDL kernels. Carry .whl (pipeline_stages.sh's header).
#   bash scripts/device/speech_gpu_tests.sh
export PYTHONUNBUFFERED=1
if ls .whl/*.whl > /dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -m pip install -q --no-deps --no-build-isolation -e . > $OUT/pip.log 2>&1 || { tail -20 $OUT/pip.log; exit 1; }
timeout ${TESTS_S:-300} python3 -m pytest -q -p no:cacheprovider tests/models/test_speech_graph_step.py \
  tests/models/test_speech_families.py tests/models/test_llm_parity.py tests/kernels/test_pdl.py \
  tests/kernels/test_fused_step.py tests/attention/test_dense.py > $OUT/speech_gpu_tests.log 2>&1
echo "speech GPU tests rc=$?"; grep -E "passed|failed|^FAILED|^ERROR" $OUT/speech_gpu_tests.log | tail -12
