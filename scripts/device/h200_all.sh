#!/bin/bash
# Every H200 Done-when figure of issues 12 and 11 in one device call (run with needs_h200; results under $OUT),
# for a session that may get a single H200 start: the three device scripts in turn, each stage under its own
# time limit (580 s together) so what it measured comes back, each printing its tables:
# kernels.sh without tests, launch variants or bench_refine (batch 80 / 1 at 32K / 128K, bf16, e4m3 and int8
# means with their refine arms); llm_decode.sh (16 layers, batch 80 / 32K, bf16 then int8 + refine 4);
# speech_llm_step.sh (Voxtral-Mini-3B shape, 16 x 40 min, our arms and transformers' step and prefill).
#   bash scripts/device/h200_all.sh
SKIP_TESTS=1 SKIP_REFINE=1 VARIANTS= BENCH_S=120 BATCH="80 1" TOKENS="32768 131072" bash scripts/device/kernels.sh
RUN_S=90 ROUNDS=2 bash scripts/device/llm_decode.sh
E2E_S=280 ROUNDS=2 ARMS="unique dense window" bash scripts/device/speech_llm_step.sh
