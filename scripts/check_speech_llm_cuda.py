"""Device check, fp16 + Triton kernels (head_dim 16: the Triton kernels take powers of two): the CLI with 2 rows
and UNIQUE / window on tiny random checkpoints, and the fp16 UNIQUE tokens vs CPU fp32 dense."""
import json, pathlib, subprocess, sys, tempfile
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
import numpy as np, soundfile as sf
import speech_checkpoints as sc
from speech_data import AUSTEN, clip
import unique_asr


def main() -> None:
    root = pathlib.Path(tempfile.mkdtemp())
    audio_dir = root / "meetings"; audio_dir.mkdir()
    for i, names in enumerate([[AUSTEN[0], AUSTEN[1]], [AUSTEN[2]], [AUSTEN[3], AUSTEN[4]]]):
        sf.write(audio_dir / f"rec{i}.flac", np.concatenate([clip(n) for n in names]), 16000)
    for fam in ("voxtral", "qwen2_audio"):
        folder = root / fam
        getattr(sc, fam)(folder, seed=3, head_dim=16)
        for mode in ("unique", "window", "quest"):
            out = root / f"out-{fam}-{mode}"
            r = subprocess.run(["unique-transcribe", str(audio_dir), "--model", str(folder), "--attention", mode,
                                "--page_size", "16", "--budget", "64", "--batch_size", "2", "--max_new_tokens", "6",
                                "-o", str(out)], capture_output=True, text=True)
            segs = {p.stem: len(json.loads(p.read_text())["segments"]) for p in sorted(out.glob("*.json"))}
            print(fam, mode, "fp16 exit", r.returncode, "segments", segs, "|", (r.stderr.strip().splitlines() or [""])[-1][:160])
        a = np.concatenate([clip(AUSTEN[0]), clip(AUSTEN[1])])
        tc = [s.tokens for s in unique_asr.load_model(str(folder), device="cpu").transcribe(a, max_new_tokens=6)[0]]
        for mode in ("dense", "unique"):
            g = unique_asr.load_model(str(folder), device="cuda", sparsity=unique_asr.SparsityConfig(mode=mode, page_size=16, budget=1024))
            tg = [s.tokens for s in g.transcribe(a, max_new_tokens=6)[0]]
            print(fam, mode, "fp16 CUDA (budget covers every page) windows equal to CPU fp32 dense:", sum(x == y for x, y in zip(tg, tc)), "of", len(tc))


if __name__ == "__main__":
    main()
