#!/bin/bash
# Nsight Compute over the page-selection kernels at the shapes the issues time (scripts/profile_select.py makes
# the calls; results under $OUT): why score + top-k runs below the byte floor -- achieved occupancy, issue
# activity, DRAM throughput and the largest warp stall reasons of the scoring and select kernels, per means
# format, at batch 80 / 32K (head_dim 128 and the llm-decode model's 64) and batch 16 / 30K (Voxtral rows); CASES
# may add batch 1 (its split filter and merge).
# Environment: CASES ("B:N:D:code ..."), NCU_S (limit per case, s).
#   bash scripts/device/ncu_select.sh
export PYTHONUNBUFFERED=1
T0=$(date +%s)
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -m pip install -q --no-deps --no-build-isolation -e . > $OUT/pip.log 2>&1 || { tail -20 $OUT/pip.log; exit 1; }
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu 2>/dev/null | head -1)
[ -z "$NCU" ] && { echo "ncu not found"; exit 1; }
for case in ${CASES:-80:32768:128:bf16 80:32768:128:int8 80:32768:64:bf16 80:32768:64:int8 16:30000:128:int8}; do
  IFS=: read B N D C <<< "$case"
  # calls 1-2 compile and warm; the third call's two kernels are profiled (score + select; batch 1: filter + merge)
  timeout ${NCU_S:-90} $NCU --clock-control none -k regex:"_score_kernel|_select_kernel|_filter_kernel|_merge_kernel" \
    --launch-skip 4 --launch-count 2 --section SpeedOfLight --section Occupancy --section WarpStateStats \
    --section LaunchStats --section MemoryWorkloadAnalysis --csv --page raw \
    python3 scripts/profile_select.py --batch ${B:-80} --tokens ${N:-32768} --head-dim ${D:-128} --code ${C:-bf16} \
    > $OUT/ncu_${B}_${N}_${D}_${C}.csv 2> $OUT/ncu_${B}_${N}_${D}_${C}.log
  echo "$case rc=$?  t=$(( $(date +%s)-T0 ))s"
done
python3 scripts/profile_select.py --summarize $OUT/ncu_*.csv
