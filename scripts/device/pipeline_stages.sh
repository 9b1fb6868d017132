#!/bin/bash
# One device call for issue 11's whole-pipeline line (repository root on the GPU machine; results under $OUT):
# the prefill attention arms (bench_prefill.py: page gather, masked SDPA, the lower-right bias, flash forced; 16
# rows one call each against rows of equal length batched; --growing: a new key length every call), then the whole pipeline of MIN-minute recordings:
# UNIQUE, UNIQUE with its wall time split by stage (audio tokens, prefill, decode steps, token choice, host), and transformers'
# generate on HF_WINDOWS windows per recording. 16 x 40 min needs the H200's memory (needs_h200); an H100 takes
# MIN=20. The speech-LLM GPU tests run first (SKIP_TESTS=1: not). Environment: MIN, ARMS, HF_WINDOWS, PIPE_S,
# TESTS_S, SKIP_TESTS, SKIP_PREFILL (the fixed-length prefill arms), BUCKET (llm.PREFILL_KEY_BUCKET for the
# pipeline; 0: off; unset: the library's), RAGGED (set: windows end at seeded ragged lengths, rows drift apart;
# give ARMS without transformers).
#   bash scripts/device/pipeline_stages.sh
# The device image lacks soundfile and soxr (fourteenth session): carry them as wheels in .whl (run's carry: [".whl"],
# .whl listed in .git/info/exclude), fetched here with
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp -d .whl \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
#     soundfile==0.13.1 cffi==2.0.0 pycparser==2.23 soxr==1.0.0 silero-vad==6.2.3
export PYTHONUNBUFFERED=1
T0=$(date +%s)
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
if ls .whl/*.whl > /dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -c "import soundfile, soxr" 2> /dev/null || { echo "soundfile / soxr missing here: carry .whl (header)"; exit 1; }
python3 -m pip install -q --no-deps --no-build-isolation -e . > $OUT/pip.log 2>&1 || { tail -20 $OUT/pip.log; exit 1; }
if [ -z "$SKIP_TESTS" ]; then  # the speech-LLM GPU tests first: graphs vs eager (the tail's graphs, beams), no-sync loop
  # (one deselected: it loads the bundled tiny.en, whose weight package the device image lacks; a CPU test in CI)
  timeout ${TESTS_S:-240} python3 -m pytest -q -p no:cacheprovider tests/models/test_speech_graph_step.py \
    tests/models/test_speech_families.py tests/models/test_llm_parity.py tests/kernels/test_pdl.py \
    tests/kernels/test_fused_step.py tests/attention/test_dense.py \
    --deselect tests/models/test_speech_families.py::test_registry_picks_the_family > $OUT/speech_gpu_tests.log 2>&1
  echo "speech GPU tests rc=$? t=$(( $(date +%s)-T0 ))s"; grep -E "passed|failed|^FAILED|^ERROR" $OUT/speech_gpu_tests.log | tail -8
fi
if [ -z "$SKIP_PREFILL" ]; then  # the fixed-length arms (measured in the fourteenth session)
  timeout 90 python3 scripts/bench_prefill.py --contexts 2048 8192 30000 --out $OUT/prefill.json > $OUT/prefill.log 2>&1
  echo "prefill rc=$? t=$(( $(date +%s)-T0 ))s"; tail -6 $OUT/prefill.log
fi
# the pipeline's pattern: a new key length every prefill (exact vs key-length buckets vs memory-efficient SDPA)
timeout 90 python3 scripts/bench_prefill.py --growing 7000 12 --out $OUT/prefill_growing.json > $OUT/prefill_growing.log 2>&1
echo "prefill growing rc=$? t=$(( $(date +%s)-T0 ))s"; tail -6 $OUT/prefill_growing.log
timeout ${PIPE_S:-420} python3 scripts/bench_speech_pipeline.py --out $OUT/pipeline.json --recordings 16 \
  --minutes ${MIN:-40} --max-new-tokens 64 --arms ${ARMS:-unique unique-stages transformers} \
  --hf-windows ${HF_WINDOWS:-2} ${BUCKET:+--prefill-key-bucket $BUCKET} ${RAGGED:+--ragged} > $OUT/pipeline.log 2>&1
echo "pipeline rc=$? t=$(( $(date +%s)-T0 ))s"; tail -8 $OUT/pipeline.log
