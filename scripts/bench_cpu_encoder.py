"""Our Whisper encoder vs CTranslate2's (faster-whisper's) on one 30 s window, same weights and threads,
alternated calls after one warm-up call each; prints seconds per call and the ratio of medians (>1: ours faster).

    OMP_WAIT_POLICY=PASSIVE python scripts/bench_cpu_encoder.py int8
"""
import time, tempfile, sys, os
from pathlib import Path
import numpy as np, torch
sys.path.insert(0, "scripts")
import unique_asr
from bench_cpu import ct2_folder
import ctranslate2
from faster_whisper import WhisperModel
torch.set_num_threads(2)
ct = sys.argv[1]
ours = unique_asr.load_model("base", device="cpu", dtype=ct).bundle.model
with tempfile.TemporaryDirectory() as tmp:
    fw = WhisperModel(str(ct2_folder("base", Path(tmp))), device="cpu", compute_type=ct, cpu_threads=2)
mel = torch.randn(1, 80, 3000)
sv = ctranslate2.StorageView.from_array(mel.numpy())
def t(fn):
    s = time.perf_counter(); fn(); return time.perf_counter() - s
with torch.inference_mode():
    ours.encode(mel); fw.model.encode(sv)
    rows = [(t(lambda: ours.encode(mel)), t(lambda: fw.model.encode(sv))) for _ in range(3)]
print(ct, "encoder per 30 s window, ours / ct2 (s):", [(round(a, 2), round(b, 2)) for a, b in rows],
      "ratio of medians", round(np.median([b for _, b in rows]) / np.median([a for a, _ in rows]), 2), os.getloadavg()[0])
