"""Whisper end-to-end benchmarks of scripts/bench_e2e.py (subcommands whisper-step and whisper-longform).

whisper-step: one decode step (T = 1) of a batch of windows, random weights (whisper-small and base shapes),
random encoder states as the cross-attention memory (1500 frames), self-attention cache at a fixed prefix;
arms: dense (contiguous cross-attention, SDPA), UNIQUE / Quest over paged cross memory (page 16, budgets
384 and 192 frames), each eager and as a captured CUDA graph (`CapturedDecodeStep`); ms per step.

whisper-longform: RTFx (audio seconds / wall seconds) of batched long-form transcription of the long-form
manifests (default ../shared/data/*-longform) with our API (dense, UNIQUE) and with transformers'
`WhisperForConditionalGeneration.generate` on the same weights (converted by `to_hf_state_dict`), the same
VAD windows (`unique_asr.windows.iter_windows`), batch size, greedy decoding without timestamps, same card;
each arm's time includes audio decoding and VAD. WER of every arm against the manifest text is recorded.
"""

from __future__ import annotations

import argparse
import glob
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path

import torch
from bench_e2e_common import (
    guarded,
    kernel_counts,
    peak_gib,
    random_module,
    reset_peak,
    run_header,
    sync,
    time_arms,
    with_speedups,
    write_records,
)

from unique_asr.config import SparsityConfig
from unique_asr.models.whisper import SelfAttentionCache, WhisperConfig, WhisperModel

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {
    "small": WhisperConfig(n_audio_state=768, n_audio_head=12, n_audio_layer=12, n_text_state=768, n_text_head=12,
                           n_text_layer=12),
    "base": WhisperConfig(),
    "tiny-random": WhisperConfig(n_audio_ctx=64, n_audio_state=64, n_audio_head=4, n_audio_layer=2, n_vocab=120,
                                 n_text_ctx=40, n_text_state=64, n_text_head=4, n_text_layer=2),
}


def parse_arm(arm: str, page_size: int) -> SparsityConfig:
    """"dense" or "<mode>:<budget frames>" (e.g. unique:384) -> the cross-attention SparsityConfig."""
    mode, _, budget = arm.partition(":")
    return SparsityConfig(mode=mode, page_size=page_size, budget=int(budget or 512))


def step_arms(model: WhisperModel, args, sparsity: SparsityConfig, encoded: torch.Tensor, graphs: bool):
    """{"eager": call, "graph": call} running args.steps greedy decode steps from a fixed prefix (reset per call)."""
    from unique_asr.models.graph_step import CapturedDecodeStep

    c, B = model.config, encoded.shape[0]
    tokens = torch.randint(c.n_vocab, (B, 1), device=encoded.device)
    calls = {}
    for kind in ("eager", "graph") if graphs else ("eager",):
        cross = model.cross_memory(encoded, sparsity=sparsity)
        cache = SelfAttentionCache.allocate(c, B, device=encoded.device, dtype=encoded.dtype)
        cache.lengths.fill_(args.prefix)
        step = CapturedDecodeStep(model, cache, cross) if kind == "graph" else (
            lambda t, cache=cache, cross=cross: model.decode(t, cache, cross))

        def run(step=step, cache=cache):
            cache.lengths.fill_(args.prefix)
            t = tokens
            for _ in range(args.steps):
                t = step(t).argmax(-1)
        calls[kind] = run
    return calls


def step_shape(model: WhisperModel, args, shape: str, batch: int, graphs: bool) -> list[dict]:
    """Every arm of one (shape, batch): random encoder states, eager and graph steps timed alternately."""
    c, device = model.config, next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    encoded = torch.randn(batch, c.n_audio_ctx, c.n_audio_state, device=device, dtype=dtype)
    calls, counts = {}, {}
    for arm in args.arms:
        for kind, call in step_arms(model, args, parse_arm(arm, args.page_size), encoded, graphs).items():
            calls[f"{arm}/{kind}"] = call
        if args.profile:
            counts[arm] = kernel_counts(calls[f"{arm}/eager"], 1, device, per=args.steps)
    med, samples = time_arms(calls, args.rounds, device, per=args.steps)
    recs = []
    for name, ms in med.items():
        arm, kind = name.split("/")
        sp = parse_arm(arm, args.page_size)
        dense = med.get(f"dense/{kind}"), med.get("dense/eager")
        recs.append(dict(arm=name, mode=sp.mode, budget=None if arm == "dense" else sp.budget, S=args.page_size,
                         shape=shape, B=batch, frames=c.n_audio_ctx, layers=c.n_text_layer, prefix=args.prefix,
                         steps=args.steps, graphs=kind == "graph", median_ms=ms, round_ms=samples[name],
                         tokens_per_s=batch * 1e3 / ms, dtype=str(dtype), peak_gib=peak_gib(device),
                         speedup_vs_dense=dense[0] / ms if dense[0] else None,  # same execution mode
                         speedup_vs_dense_eager=dense[1] / ms if dense[1] else None,
                         kernels=counts.get(arm) if kind == "eager" else None))
    return recs


def run_whisper_step(args) -> list[dict]:
    """Subcommand whisper-step: ms per decode step, dense vs sparse cross-attention, eager and graph."""
    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    graphs = device.type == "cuda" and not args.no_graphs
    records = [run_header("whisper-step", device, args)]
    for shape in args.shapes:
        c = SHAPES[shape]
        if args.prefix + args.steps > c.n_text_ctx:
            raise SystemExit(f"--prefix + --steps must be <= {c.n_text_ctx} for {shape}")
        torch.manual_seed(args.seed)
        model = random_module(lambda c=c: WhisperModel(c), dtype, device)
        for batch in args.batch:
            reset_peak(device)
            recs = guarded(partial(step_shape, model, args, shape, batch, graphs), shape=shape, B=batch)
            for r in recs:
                print(f"{shape:>6} B={batch:<3} {r['arm']:>16} {r.get('median_ms', float('nan')):8.3f} ms/step "
                      f"x{r.get('speedup_vs_dense') or float('nan'):.2f} vs dense {r.get('error', '')}", flush=True)
            records += recs
            write_records(records, args.out)
    return records


def hf_whisper(model: WhisperModel, tokenizer, dtype: torch.dtype, suppress: list[int]):
    """transformers' WhisperForConditionalGeneration holding `model`'s weights (converted, not retrained),
    generating with our decoder's token filters (suppress: ids never sampled; blank suppressed at the start)."""
    from transformers import WhisperConfig as HFConfig
    from transformers import WhisperForConditionalGeneration

    from unique_asr.models.checkpoint import to_hf_state_dict

    c = model.config
    cfg = HFConfig(**c.to_hf_kwargs(), decoder_start_token_id=tokenizer.sot, eos_token_id=tokenizer.eot,
                   pad_token_id=tokenizer.eot, bos_token_id=tokenizer.eot)
    with torch.device("meta"):
        hf = WhisperForConditionalGeneration(cfg)
    state = to_hf_state_dict({k: v.detach() for k, v in model.state_dict().items()}, c)
    missing, unexpected = hf.load_state_dict(state, strict=False, assign=True)
    if unexpected or set(missing) - {"proj_out.weight"}:
        raise RuntimeError(f"weight conversion mismatch: missing {missing}, unexpected {unexpected}")
    hf.tie_weights()
    g = hf.generation_config
    g.decoder_start_token_id, g.eos_token_id, g.pad_token_id = tokenizer.sot, tokenizer.eot, tokenizer.eot
    g.no_timestamps_token_id, g.forced_decoder_ids = tokenizer.no_timestamps, None
    g.begin_suppress_tokens = [*tokenizer.encode(" "), tokenizer.eot]  # our suppress_blank
    g.suppress_tokens = list(suppress)
    return hf.to(dtype).eval()


class StageClock:
    """Wall seconds per stage of one instrumented transcription: windows (audio decoding + resampling + VAD,
    pulled lazily by the consumer), encode (log-mel + encoder), decode (token loops, or transformers'
    generate). The device is synchronised around every GPU stage. Without prefetching the stages run one
    after another and "other" (total minus the stages: segments, tokenizer, Python) is the rest; with it the
    windows are timed in their background thread, overlap the GPU stages, and "other" goes negative."""

    def __init__(self, device: torch.device):
        self.device, self.seconds, self.counts, self._patched = device, Counter(), Counter(), []

    def wrap(self, owner, name: str, stage: str, gpu: bool, steps: Callable | None = None) -> None:
        """Time owner.name (a class or instance attribute) as `stage`; steps(result) -> decode steps run."""
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            if gpu:
                sync(self.device)
            start = time.perf_counter()
            try:
                out = original(*args, **kwargs)
            finally:
                if gpu:
                    sync(self.device)
                self.seconds[stage] += time.perf_counter() - start
            self.counts[f"{stage}_calls"] += 1
            if steps is not None:
                self.counts[f"{stage}_steps"] += steps(out)
            return out

        self._patched.append((owner, name, vars(owner).get(name)))  # None: inherited (e.g. a bound method)
        setattr(owner, name, timed)

    def restore(self) -> None:
        for owner, name, own in reversed(self._patched):
            if own is None:
                delattr(owner, name)
            else:
                setattr(owner, name, own)
        self._patched.clear()

    def run(self, fn: Callable[[], None]) -> dict:
        """Run fn once under the clock; {"<stage>_s", "total_s", "other_s", counts, "decode_ms_per_step"}."""
        sync(self.device)
        start = time.perf_counter()
        try:
            fn()
            sync(self.device)
        finally:
            self.restore()
        total = time.perf_counter() - start
        out = {f"{k}_s": round(v, 4) for k, v in self.seconds.items()}
        out |= dict(self.counts, total_s=round(total, 4), other_s=round(total - sum(self.seconds.values()), 4))
        if self.counts.get("decode_steps"):
            out["decode_ms_per_step"] = round(1e3 * self.seconds["decode"] / self.counts["decode_steps"], 3)
        return out


def stage_profile(arm: str, transcribe: Callable[[], None], hf, prompt_len: int, device: torch.device) -> dict:
    """StageClock breakdown of one transcription by `arm` (ours: windows / encode / decode_batch; transformers:
    windows / generate, whose time includes its encoder)."""
    import unique_asr.transcribe as ours
    from unique_asr.windows import WindowIterator

    clock = StageClock(device)
    clock.wrap(WindowIterator, "__next__", "windows", gpu=False)
    if arm == "transformers":
        clock.wrap(hf, "generate", "decode", gpu=True, steps=lambda out: out.shape[1] - prompt_len)
    else:
        clock.wrap(ours._Encoder, "__call__", "encode", gpu=True)
        clock.wrap(ours, "decode_batch", "decode", gpu=True, steps=lambda out: 1 + max(len(r.tokens) for r in out))
    return clock.run(transcribe)


def hf_transcribe(hf, extractor, tokenizer, path: str, options, vad, prompt: list[int]) -> str:
    """Text of `path` by transformers' generate over our VAD windows, batched like ours, greedy, no timestamps."""
    from unique_asr.windows import iter_windows

    windows = list(iter_windows(path, options, vad))
    device = next(hf.parameters()).device
    texts = []
    for i in range(0, len(windows), options.batch_size):
        batch = [w.audio for w in windows[i:i + options.batch_size]]
        feats = extractor(batch, sampling_rate=16000, return_tensors="pt").input_features
        ids = torch.tensor([prompt] * len(batch), device=device)
        out = hf.generate(input_features=feats.to(device, next(hf.parameters()).dtype), decoder_input_ids=ids,
                          max_new_tokens=options.decode.max_new_tokens, do_sample=False, num_beams=1)
        texts += [tokenizer.decode(row.tolist()) for row in out]
    return " ".join(t.strip() for t in texts)


def default_manifests() -> list[str]:
    """The long-form manifests under the data root: $UNIQUE_ASR_DATA, else shared/data beside or inside the repo
    (the same convention as conf/paths); SystemExit when none is found."""
    roots = [os.environ.get("UNIQUE_ASR_DATA"), ROOT.parent / "shared" / "data", ROOT / "shared" / "data"]
    for root in filter(None, roots):
        found = sorted(glob.glob(str(Path(root) / "*-longform" / "manifest.jsonl")))
        if found:
            return found
    raise SystemExit(f"no *-longform/manifest.jsonl under {[str(r) for r in roots if r]}: pass --manifest")


def run_whisper_longform(args) -> list[dict]:
    """Subcommand whisper-longform: RTFx and WER per file and arm; speedups vs transformers and vs dense."""
    import jiwer
    from transformers import WhisperFeatureExtractor

    import unique_asr
    from unique_asr.api import Transcriber
    from unique_asr.config import DecodeOptions, TranscribeOptions
    from unique_asr.decoding import suppressed_tokens
    from unique_asr.eval.manifest import load_dataset
    from unique_asr.eval.normalise import DEFAULT_NORMALISER, get_normaliser
    from unique_asr.vad import VadModel

    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    ours = unique_asr.load_model(args.model, device=device, dtype=dtype)
    tok = ours.bundle.tokenizer
    decode = DecodeOptions(language="en", beam_size=1, temperatures=(0.0,), without_timestamps=True,
                           condition_on_previous_text=False, max_new_tokens=args.max_new_tokens)
    hf = hf_whisper(ours.bundle.model, tok, dtype, suppressed_tokens(tok, decode))
    extractor = WhisperFeatureExtractor(feature_size=ours.bundle.model.config.n_mels)
    vad = VadModel(device if args.vad_device == "model" else "cpu")
    ours = Transcriber(replace(ours.bundle, vad_model=vad), ours.info, device, dtype)  # one VAD for every arm
    base = TranscribeOptions(strategy="batched", batch_size=args.batch_size, decode=decode, prefetch=args.prefetch)
    opts = {arm: replace(base, sparsity=parse_arm(arm, args.page_size)) for arm in args.arms}
    prompt = tok.sot_sequence("en" if tok.is_multilingual else None, timestamps=False)
    norm = get_normaliser(DEFAULT_NORMALISER)
    records = [run_header("whisper-longform", device, args) | {"model": args.model, "dtype": str(dtype)}]
    def measure(item, warm: bool) -> list[dict]:
        """Every arm on one recording, alternated over rounds; one record per arm with RTFx and WER."""
        texts = {}

        def transcribe(arm, path=str(item.audio)):
            if arm == "transformers":
                texts[arm] = hf_transcribe(hf, extractor, tok, path, base, vad, prompt)
            else:
                segments, _ = ours.transcribe(path, opts[arm])
                texts[arm] = " ".join(s.text.strip() for s in segments)

        arms = {a: partial(transcribe, a) for a in [*args.arms, "transformers"]}
        # one full transcription per arm and round; the first file is transcribed once more untimed, so that
        # Triton compilation and lazy CUDA initialisation do not land in any timed round
        med, samples = time_arms(arms, args.rounds, device, warmup=warm)
        stages = {a: stage_profile(a, fn, hf, len(prompt), device) for a, fn in arms.items()} if args.profile else {}
        return [dict(arm=a, file=item.id, duration_s=item.duration, median_s=ms / 1e3, median_ms=ms,
                     round_s=[s / 1e3 for s in samples[a]], rtfx=item.duration / (ms / 1e3),
                     wer=jiwer.wer(norm(item.text), norm(texts[a])), batch_size=args.batch_size,
                     sparsity=None if a == "transformers" else asdict(opts[a].sparsity),
                     peak_gib=peak_gib(device), stages=stages.get(a)) for a, ms in med.items()]

    first = True
    for manifest in args.manifest or default_manifests():
        for item in load_dataset(manifest, limit=args.max_files):
            reset_peak(device)
            recs = guarded(partial(measure, item, first), file=item.id)
            first = False
            records += with_speedups(with_speedups(recs, "transformers", lambda r: r["file"]), "dense",
                                     lambda r: r["file"])
            for r in recs:
                print(f"{item.id[:30]:>30} {r['arm']:>14} {r.get('median_s', float('nan')):8.2f} s "
                      f"RTFx {r.get('rtfx', float('nan')):8.1f} WER {r.get('wer', float('nan')):.3f} "
                      f"{r.get('error', '')}", flush=True)
            write_records(records, args.out)
    sync(device)
    return records


def step_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shapes", nargs="+", default=["small", "base"], choices=sorted(SHAPES))
    p.add_argument("--batch", type=int, nargs="+", default=[64])
    p.add_argument("--arms", nargs="+", default=["dense", "unique:384", "unique:192", "quest:384"],
                   help="dense or <mode>:<budget frames>")
    p.add_argument("--page-size", type=int, default=16)
    p.add_argument("--prefix", type=int, default=32, help="text tokens already in the self-attention cache")
    p.add_argument("--steps", type=int, default=32, help="decode steps per timed call")


def longform_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="base", help="load_model name or local HF Whisper folder (real weights)")
    p.add_argument("--manifest", nargs="+", help="dataset manifests (default: ../shared/data/*-longform)")
    p.add_argument("--max-files", type=int, help="first N items of each manifest")
    p.add_argument("--arms", nargs="+", default=["dense", "unique:384"], help="our arms; transformers always runs")
    p.add_argument("--page-size", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=224)
    p.add_argument("--prefetch", action=argparse.BooleanOptionalAction, default=True,
                   help="our arms cut windows in a background thread while the GPU decodes (TranscribeOptions)")
    p.add_argument("--vad-device", choices=["model", "cpu"], default="model",
                   help="where the VAD's conv front runs (every arm, transformers included, uses it)")
