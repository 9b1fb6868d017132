"""Whole-pipeline speed of speech-LLM transcription (issue 11): audio files in, segments out, through the code
path of `unique-transcribe --model <folder> --batch_size N --attention <mode>` (the API's `transcribe_many`: audio
read, log-mel, encoder, every window's prefill into its recording's row, continuous-batching greedy decode),
against transformers' `generate` on the same weights.

The checkpoint is written by transformers (`save_pretrained` of a random `VoxtralForConditionalGeneration` at the
Voxtral-Mini-3B-2507 shape, bf16, with a byte-level tokenizer of the real vocabulary size holding Voxtral's special
tokens): random weights, so speed only (random weights almost never emit the end id, so every window generates
exactly --max-new-tokens tokens in every arm). The audio is real speech (tests/data/speech) tiled to --minutes per
recording; VAD off, so windows are back-to-back 30 s cuts.

Arms: `unique`, `dense`, `window`, `quest` (graphed decode steps: the default), `<mode>-eager` (the same without
CUDA graphs), `<mode>-stages` (graphed, with the wall time split by stage: STAGES, synchronised timers; also the
spread of the decode steps' wall times and, on CUDA, the device time of every graph replay), and
`transformers`: `VoxtralForConditionalGeneration.generate` (sdpa, bf16) on the first
--hf-windows windows of every recording, batched over the recordings, each window decoded on its own (one
window of context: less work per window than our arms, which keep the whole recording in context), features by
transformers' WhisperFeatureExtractor. RTFx = seconds of audio / seconds of wall time; model load excluded
(reported apart). Every arm first runs a 1-minute warm-up (Triton compilation, graph capture).

`--ragged`: our arms end each window's transcript after a length drawn per (recording, window) in [max/4, max]
(seeded, the same in every arm; `RaggedEnds`), as real transcripts of different lengths do, so the rows drift apart
and each row's prefill meets its own context length (without it, every row of this random checkpoint runs to
--max-new-tokens and all rows stay in step). Not with the transformers arm (it would decode more tokens).

    python scripts/bench_speech_pipeline.py --out $OUT/pipeline.json              # 16 x 5 min, 64 tokens/window
    python scripts/bench_speech_pipeline.py --device cpu --tiny --recordings 2 --minutes 1   # smoke test
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parent.parent
SPEECH = ROOT / "tests" / "data" / "speech"
SR = 16000
SPECIALS = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AUDIO]", "[BEGIN_AUDIO]", "[TRANSCRIBE]"]
# Voxtral-Mini-3B-2507's hub config.json (also in scripts/bench_e2e.py): Llama decoder behind a Whisper-large-v3
# encoder, 4 frames stacked per audio token (375 tokens per 30 s window).
TEXT = dict(vocab_size=131072, hidden_size=3072, intermediate_size=8192, num_hidden_layers=30, num_attention_heads=32,
            num_key_value_heads=8, head_dim=128, max_position_embeddings=131072, rms_norm_eps=1e-5,
            rope_theta=100000000.0)
AUDIO = dict(num_mel_bins=128, num_hidden_layers=32, num_attention_heads=20, intermediate_size=5120, hidden_size=1280,
             max_source_positions=1500)
TINY_TEXT = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, max_position_embeddings=65536)
TINY_AUDIO = dict(num_mel_bins=128, num_hidden_layers=1, num_attention_heads=2, intermediate_size=128, hidden_size=32,
                  max_source_positions=1500)


def write_tokenizer(folder: Path, vocab_size: int) -> None:
    """Byte-level tokenizer: Voxtral's specials, the 256 bytes, then filler tokens up to vocab_size."""
    import transformers as tf
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {t: i for i, t in enumerate(SPECIALS)}
    for ch in pre_tokenizers.ByteLevel.alphabet():
        vocab[ch] = len(vocab)
    while len(vocab) < vocab_size:
        vocab[f"w{len(vocab)}"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tf.PreTrainedTokenizerFast(tokenizer_object=tok, additional_special_tokens=SPECIALS, unk_token="<unk>",
                               bos_token="<s>", eos_token="</s>").save_pretrained(folder)


def write_checkpoint(folder: Path, tiny: bool, device: torch.device) -> float:
    """A random Voxtral checkpoint (bf16 safetensors) in folder; returns its size in GiB."""
    import transformers as tf

    text, audio = (TINY_TEXT, TINY_AUDIO) if tiny else (TEXT, AUDIO)
    write_tokenizer(folder, text["vocab_size"])
    config = tf.VoxtralConfig(text_config=dict(model_type="llama", **text),
                              audio_config=dict(model_type="voxtral_encoder", **audio),
                              audio_token_id=SPECIALS.index("[AUDIO]"))
    torch.manual_seed(0)
    with torch.device(device):  # random init on the device: minutes faster than on the CPU at 4.7 B parameters
        model = tf.VoxtralForConditionalGeneration(config).to(torch.bfloat16)
    model.save_pretrained(folder)
    size = sum(p.numel() * 2 for p in model.parameters()) / 2**30
    del model
    torch.cuda.empty_cache() if device.type == "cuda" else None
    return size


def write_audio(folder: Path, recordings: int, minutes: float) -> tuple[list[str], float]:
    """Recordings of real speech clips tiled to `minutes` each (a different clip order per recording)."""
    clips = [sf.read(p, dtype="float32")[0] for p in sorted(SPEECH.glob("*.flac"))]
    paths, total = [], 0.0
    for r in range(recordings):
        order = np.random.default_rng(r).permutation(len(clips))
        parts, n = [], 0
        while n < minutes * 60 * SR:
            for i in order:
                parts.append(clips[i])
                parts.append(np.zeros(SR // 4, np.float32))
                n += len(clips[i]) + SR // 4
        audio = np.concatenate(parts)[: int(minutes * 60 * SR)]
        path = folder / f"rec{r:02d}.wav"  # PCM: encoding 16 x 40 min as FLAC would take minutes of the call
        sf.write(path, audio, SR, subtype="PCM_16")
        paths.append(str(path))
        total += len(audio) / SR
    return paths, total


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# RowDecoder methods timed by a `-stages` arm (stage name -> method; a stage's time excludes the stages it calls:
# `_prefill` calls `_audio_tokens`): each call is bracketed by device synchronisations, so the stages add up to the
# wall time less the host's own work (audio read and resampling, bookkeeping), at the cost of the overlap they
# remove (greedy rows: the host one step behind the device, RowDecoder._run_greedy).
STAGES = (("audio tokens (log-mel + encoder)", "_audio_tokens"), ("prefill", "_prefill"),
          ("decode steps", "_step"), ("token choice (logits -> host)", "_choose"))


def step_spread(seconds: list[float]) -> dict:
    """How the decode steps' time is spread: count, median ms, and the seconds spent in steps over 3x the median
    (graph captures at a new page-table width, Triton compilations for new launch constants)."""
    if not seconds:
        return {"count": 0}
    median = float(np.median(seconds))
    slow = [t for t in seconds if t > 3 * median]
    return {"count": len(seconds), "median_ms": median * 1e3, "slow_count": len(slow), "slow_s": sum(slow),
            "p90_ms": float(np.percentile(seconds, 90)) * 1e3}


class StageTimer:
    """Wraps the STAGES methods of RowDecoder for the duration of a `with` block; `seconds` per stage."""

    def __init__(self, device: torch.device):
        self.device, self.seconds, self.saved = device, {name: 0.0 for name, _ in STAGES}, {}
        self.calls: dict[str, list[float]] = {name: [] for name, _ in STAGES}  # seconds of each call
        self.replays: list[tuple] = []  # CUDA events around each graph replay (device time of a graphed step)
        self.open: list[str] = []  # the stages being timed, innermost last

    def __enter__(self):
        from unique_asr.stream_decoding import RowDecoder

        for name, method in STAGES:
            original = self.saved[method] = getattr(RowDecoder, method)

            def timed(*a, _original=original, _name=name, **kw):
                sync(self.device)
                start = time.perf_counter()
                self.open.append(_name)
                try:
                    out = _original(*a, **kw)
                    sync(self.device)
                finally:
                    self.open.pop()
                took = time.perf_counter() - start
                self.seconds[_name] += took
                self.calls[_name].append(took)
                if self.open:  # exclusive times: the enclosing stage does not count this one
                    self.seconds[self.open[-1]] -= took
                return out

            setattr(RowDecoder, method, timed)
        if self.device.type == "cuda":
            replay = self.saved["replay"] = torch.cuda.CUDAGraph.replay

            def replay_timed(graph, _replay=replay):
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                _replay(graph)
                b.record()
                self.replays.append((a, b))

            torch.cuda.CUDAGraph.replay = replay_timed
        return self

    def replay_ms(self) -> list[float]:
        """Device ms of each graph replay (from the event before it to the one after: the step's kernels, and the
        launch's own latency when the device was idle)."""
        sync(self.device)
        return [a.elapsed_time(b) for a, b in self.replays]

    def __exit__(self, *exc):
        from unique_asr.stream_decoding import RowDecoder

        for method, original in self.saved.items():
            setattr(torch.cuda.CUDAGraph if method == "replay" else RowDecoder, method, original)
        return False


class RaggedEnds:
    """Within a `with` block, RowDecoder ends a window's transcript after `length(recording, window)` tokens (or
    at the end id / max_new, as always): lengths in [max_new / 4, max_new] from a hash of the recording's name and
    the window's first sample, so every arm and every run decodes the same lengths."""

    def __init__(self, max_new: int):
        self.max_new = max_new

    def length(self, source, start_sample: int) -> int:
        import zlib

        low = max(1, self.max_new // 4)
        name = Path(str(source)).name  # the file's name: the bench writes its audio under a fresh temporary folder
        return low + zlib.crc32(f"{name}:{start_sample}".encode()) % (self.max_new - low + 1)

    def __enter__(self):
        from unique_asr.stream_decoding import RowDecoder

        self.saved = original = RowDecoder._ends

        def ends(decoder, row):
            window = row.job.key
            return original(decoder, row) or len(row.tokens) >= self.length(row.recording.source, window.start_sample)

        RowDecoder._ends = ends
        return self

    def __exit__(self, *exc):
        from unique_asr.stream_decoding import RowDecoder

        RowDecoder._ends = self.saved
        return False


def run_ours(model, paths, arm: str, args, device) -> dict:
    """One arm: `<mode>` (graphed steps), `<mode>-eager` (no CUDA graphs), `<mode>-stages` (graphed, stage timers)."""
    import unique_asr
    from unique_asr.stream_transcribe import transcribe_many

    mode, _, variant = arm.partition("-")
    eager = variant == "eager"
    options = unique_asr.TranscribeOptions(
        batch_size=len(paths), vad=False, sparsity=unique_asr.SparsityConfig(mode=mode),
        # no repetition guard: random weights may loop, and every arm (transformers' too) decodes --max-new-tokens
        decode=unique_asr.DecodeOptions(max_new_tokens=args.max_new_tokens, repetition_max=args.max_new_tokens))
    bundle = model.speech_bundle(options)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    timer = StageTimer(device) if variant == "stages" else None
    sync(device)
    start = time.perf_counter()
    with RaggedEnds(args.max_new_tokens) if args.ragged else nullcontext(), timer or nullcontext():
        results = list(transcribe_many(bundle, paths, options, [None] * len(paths), cuda_graph=not eager))
    sync(device)
    wall = time.perf_counter() - start
    errors = [str(r.error) for r in results if r.error is not None]
    windows = sum(len(r.segments) for r in results)
    tokens = sum(len(s.tokens) for r in results for s in r.segments)
    stages = None if timer is None else dict(timer.seconds, **{"host, rest": wall - sum(timer.seconds.values())})
    return dict(arm=arm, wall_s=wall, windows=windows, tokens=tokens, errors=errors, sparsity=mode, stages_s=stages,
                step_calls=None if timer is None else step_spread(timer.calls["decode steps"]),
                replay_device=None if timer is None or not timer.replays else step_spread(
                    [ms / 1e3 for ms in timer.replay_ms()]),
                graphs=not eager and device.type == "cuda",
                peak_gib=torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None)


def run_transformers(folder: str, paths, args, device, prompt, n_audio: int) -> dict:
    """generate on the first --hf-windows 30 s windows of every recording, one window per row, batched."""
    import transformers as tf

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    start = time.perf_counter()
    hf = tf.VoxtralForConditionalGeneration.from_pretrained(folder, dtype=dtype, attn_implementation="sdpa")
    hf = hf.to(device).eval()
    sync(device)
    load_s = time.perf_counter() - start
    fe = tf.WhisperFeatureExtractor(feature_size=128)
    audio = [sf.read(p, dtype="float32")[0] for p in paths]
    ids = [*prompt.prompt_ids, *prompt.chunk(SPECIALS.index("[AUDIO]"), n_audio)]
    input_ids = torch.tensor([ids] * len(paths), device=device)

    def window(w: int, new: int) -> int:
        chunk = [a[w * 30 * SR:(w + 1) * 30 * SR] for a in audio]
        feats = fe(chunk, sampling_rate=SR, return_tensors="pt").input_features.to(device, dtype)
        out = hf.generate(input_ids=input_ids, input_features=feats, attention_mask=torch.ones_like(input_ids),
                          max_new_tokens=new, min_new_tokens=new, do_sample=False,
                          pad_token_id=prompt.eos_ids[0], eos_token_id=list(prompt.eos_ids))
        return (out.shape[1] - input_ids.shape[1]) * out.shape[0]

    with torch.no_grad():
        window(0, 2)  # warm-up
        sync(device)
        start = time.perf_counter()
        tokens = sum(window(w, args.max_new_tokens) for w in range(args.hf_windows))
        sync(device)
        wall = time.perf_counter() - start
        encoder = encoder_seconds(hf, fe, audio, device, dtype)
    audio_s = sum(min(len(a) / SR, args.hf_windows * 30.0) for a in audio)
    return dict(arm="transformers", wall_s=wall, windows=args.hf_windows * len(paths), tokens=tokens,
                audio_s=audio_s, load_s=load_s, graphs=False, encoder_s_per_window=encoder,
                peak_gib=torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None)


def encoder_seconds(hf, fe, audio, device, dtype, rounds: int = 3) -> float:
    """transformers' audio encoder + projector (`get_audio_features`) on one 30 s window of every recording,
    batched: seconds per window (median of `rounds`, after one untimed run). A part of the whole-recording
    transformers figure that BENCHMARKS.md composes from measured parts."""
    feats = fe([a[: 30 * SR] for a in audio], sampling_rate=SR, return_tensors="pt").input_features.to(device, dtype)
    hf.get_audio_features(feats)
    times = []
    for _ in range(rounds):
        sync(device)
        start = time.perf_counter()
        hf.get_audio_features(feats)
        sync(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[rounds // 2] / len(audio)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", help="JSON file of the records")
    p.add_argument("--device", default="cuda")
    p.add_argument("--recordings", type=int, default=16)
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--max-new-tokens", type=int, default=64, help="transcript tokens per 30 s window")
    p.add_argument("--ragged", action="store_true",
                   help="our arms end each window after a seeded length in [max/4, max] (rows drift apart)")
    p.add_argument("--arms", nargs="+", default=["unique", "unique-eager", "dense", "window", "transformers"])
    p.add_argument("--hf-windows", type=int, default=2, help="windows per recording in the transformers arm")
    p.add_argument("--folder", help="an existing checkpoint folder (default: write a random one)")
    p.add_argument("--tiny", action="store_true", help="tiny shapes (smoke test)")
    p.add_argument("--skinny-gemms", action="store_true",
                   help="decode-step projections on the skinny Triton GEMMs where they measure faster than cuBLAS")
    p.add_argument("--time-limit", type=float, default=1e9, help="skip arms that would start after this many s")
    p.add_argument("--prefill-key-bucket", type=int,
                   help="llm.PREFILL_KEY_BUCKET for our arms (prefill key lengths padded to a multiple; default: the "
                        "library's)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.ragged and "transformers" in args.arms:
        print("--ragged does not apply to the transformers arm (it would decode more tokens than ours): drop one",
              file=sys.stderr)
        return 2
    import unique_asr
    from unique_asr.models import llm as llm_module

    if args.prefill_key_bucket is not None:
        llm_module.PREFILL_KEY_BUCKET = args.prefill_key_bucket
    device = torch.device(args.device)
    began = time.perf_counter()
    records = [dict(bench="speech-pipeline", device=torch.cuda.get_device_name(device) if device.type == "cuda"
                    else "cpu", recordings=args.recordings, minutes=args.minutes,
                    max_new_tokens=args.max_new_tokens, shape="tiny" if args.tiny else "voxtral-mini-3b",
                    torch=torch.__version__, prefill_key_bucket=llm_module.PREFILL_KEY_BUCKET, ragged=args.ragged)]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = Path(args.folder) if args.folder else tmp / "voxtral"
        if not args.folder:
            folder.mkdir()
            start = time.perf_counter()
            records[0]["checkpoint_gib"] = write_checkpoint(folder, args.tiny, device)
            records[0]["checkpoint_write_s"] = time.perf_counter() - start
        paths, audio_s = write_audio(tmp, args.recordings, args.minutes)
        (tmp / "warm").mkdir()
        warm, _ = write_audio(tmp / "warm", args.recordings, 1.0)
        start = time.perf_counter()
        model = unique_asr.load_model(str(folder), device=args.device, dtype="bfloat16" if device.type == "cuda"
                                      else "float32")
        sync(device)
        records[0]["load_s"] = time.perf_counter() - start
        ours = model.bundle.model
        if args.skinny_gemms:
            ours.net.llm.step_gemms = None  # planned at the first CUDA decode step (LLM._step_gemms)
        for arm in args.arms:
            if time.perf_counter() - began > args.time_limit:
                records.append(dict(arm=arm, skipped="time limit"))
                continue
            if arm == "transformers":
                rec = run_transformers(str(folder), paths, args, device, ours.prompt(None),
                                       ours.net.config.tokens_per_window)
            else:
                run_ours(model, warm, arm, args, device)
                rec = run_ours(model, paths, arm, args, device) | dict(audio_s=audio_s)
                rec["step_gemms"] = {k: str(v) for k, v in (ours.net.llm.step_gemms or {}).items()} or "cuBLAS"
            gc.collect()  # the arm's KV pool (80 % of free memory) goes back before the next arm plans its own
            torch.cuda.empty_cache() if device.type == "cuda" else None
            rec["rtfx"] = rec["audio_s"] / rec["wall_s"]
            rec["tokens_per_s"] = rec["tokens"] / rec["wall_s"]
            records.append(rec)
            print(json.dumps(rec), flush=True)
            if args.out:
                Path(args.out).write_text(json.dumps(records, indent=1))
    base = {r["arm"]: r for r in records[1:] if "rtfx" in r}
    hf = base.get("transformers")
    print(f"\n{records[0]}")
    print(f"{'arm':>14} {'audio s':>8} {'wall s':>8} {'RTFx':>8} {'tok/s':>8} {'x transformers':>15} {'peak GiB':>9}")
    for r in records[1:]:
        if "rtfx" not in r:
            print(f"{r['arm']:>14} skipped: {r.get('skipped')}")
            continue
        ratio = r["rtfx"] / hf["rtfx"] if hf else float("nan")
        r["rtfx_vs_transformers"] = ratio
        print(f"{r['arm']:>14} {r['audio_s']:8.0f} {r['wall_s']:8.2f} {r['rtfx']:8.1f} {r['tokens_per_s']:8.0f} "
              f"{ratio:15.2f} {r['peak_gib'] or 0:9.1f}")
    for r in records[1:]:
        if r.get("stages_s"):
            print(f"{r['arm']}: " + ", ".join(f"{k} {v:.2f} s" for k, v in r["stages_s"].items()))
        if r.get("step_calls"):
            print(f"{r['arm']}: decode steps {r['step_calls']}")
        if r.get("replay_device"):
            print(f"{r['arm']}: graph replays, device time {r['replay_device']}")
    if args.out:
        Path(args.out).write_text(json.dumps(records, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
