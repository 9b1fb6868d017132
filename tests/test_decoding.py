"""Token loop: repetition guard on constructed looping logits, Whisper's logit filters, and greedy / beam /
sampling on real tiny.en weights (bundled with the package; converted once into the user cache)."""

from __future__ import annotations

import numpy as np
import pytest
import speech_data
import torch

from unique_asr.audio import log_mel
from unique_asr.config import DecodeOptions
from unique_asr.decoding import (
    LogitFilter,
    decode_batch,
    detect_language,
    ends_in_loop,
    initial_tokens,
    search_tokens,
    suppressed_tokens,
)
from unique_asr.models import load_whisper
from unique_asr.models.graph_step import CapturedDecodeStep

# Two recorded utterances (tests/data/speech): one short, one longer.
SHORT, LONG = "austen_0930", "austen_0870"


@pytest.fixture(scope="module")
def tiny():
    model, tokenizer, _ = load_whisper("tiny.en")
    return model, tokenizer


@pytest.fixture(scope="module")
def mel():
    """Log-mel [2, 80, 3000] of two recorded utterances."""
    clips = [torch.from_numpy(speech_data.clip(name)) for name in (SHORT, LONG)]
    return log_mel(torch.nn.utils.rnn.pad_sequence(clips, batch_first=True))


@pytest.fixture(scope="module")
def features(tiny, mel):
    """tiny.en encoder states [2, 1500, 384]."""
    with torch.inference_mode():
        return tiny[0].encode(mel)


def words(text_or_clip: str) -> list[str]:
    """Normalised words of a text, or of a clip's reference transcript when given a clip name."""
    if text_or_clip in speech_data.manifest():
        text_or_clip = speech_data.text(text_or_clip)
    return speech_data.normalised_words(text_or_clip)


def test_ends_in_loop():
    assert ends_in_loop([9, 8] + [1, 2, 3, 4] * 4, 4, 3)
    assert not ends_in_loop([1, 2, 3, 4] * 3, 4, 3)  # three repeats are allowed
    assert not ends_in_loop([1, 2, 3, 4] * 4 + [5], 4, 3)  # only the tail counts
    assert ends_in_loop([7] * 16, 4, 3)  # a period-1 loop is a 4-gram loop too
    assert not ends_in_loop([7] * 15, 4, 3)
    assert ends_in_loop([1, 2, 3, 4, 5, 6] * 4, 4, 3)
    assert not ends_in_loop([1, 2, 3] * 7, 4, 3)  # period 3 first repeats as a 6-gram: 24 tokens
    assert ends_in_loop([1, 2, 3] * 8, 4, 3)
    assert ends_in_loop([5, 6] * 3, 2, 2) and not ends_in_loop([5, 6] * 3, 2, 3)


def _cycle_step(cycle: list[int], vocab: int, eot: int):
    """Logits of a looping model: after a token of `cycle` the next one is likely, after any other token the
    cycle's first; eot is never likely unless the cycle holds it."""
    assert len(set(cycle)) == len(cycle)
    successor = {a: b for a, b in zip(cycle, cycle[1:] + cycle[:1])}

    def logits_after(last: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(last.shape[0], vocab)
        out[:, eot] = -50.0
        for row, token in enumerate(last.tolist()):
            out[row, successor.get(token, cycle[0])] = 10.0
        return out

    return logits_after, lambda tokens: logits_after(tokens[:, -1])[:, None]


@pytest.mark.parametrize("beam_size", [1, 3])
def test_repetition_guard_stops_a_constructed_loop(tiny, beam_size):
    model, tokenizer = tiny
    options = DecodeOptions(
        beam_size=beam_size, without_timestamps=True, repetition_ngram=4, repetition_max=3
    )
    cycle = tokenizer.encode(" one two three four five")
    assert len(cycle) == 5
    logits_after, step = _cycle_step(cycle, model.config.n_vocab, tokenizer.eot)
    initial = torch.tensor([tokenizer.sot_sequence(timestamps=False)] * 2)
    first = logits_after(torch.full((2,), cycle[-1]))  # the first sampled token starts the cycle
    reorders = []
    candidates = search_tokens(
        step, reorders.append, initial, first, tokenizer, options, temperature=0.0, max_new=100
    )
    assert len(candidates) == 2
    for window in candidates:
        looped = [c for c in window if c[2]]
        assert looped, "the guard did not fire"
        tokens = looped[0][0]
        # a 5-token cycle is stopped as soon as it has repeated 4 times: after exactly 20 tokens
        assert tokens == (cycle * 4)[: len(tokens)] and len(tokens) == 20
    assert bool(reorders) == (beam_size > 1)


def test_guard_leaves_non_repeating_text_alone(tiny):
    model, tokenizer = tiny
    sentence = tokenizer.encode(" the cat sat on a mat while my dog ran to an old red barn at noon")
    logits_after, step = _cycle_step(sentence + [tokenizer.eot], model.config.n_vocab, tokenizer.eot)
    initial = torch.tensor([tokenizer.sot_sequence(timestamps=False)])
    first = logits_after(torch.tensor([tokenizer.eot]))
    [[(tokens, _, looped)]] = search_tokens(
        step,
        lambda index: None,
        initial,
        first,
        tokenizer,
        DecodeOptions(without_timestamps=True),
        temperature=0.0,
        max_new=100,
    )
    assert tokens == sentence and not looped


def test_timestamp_rules(tiny):
    model, tokenizer = tiny
    tb, eot, vocab = tokenizer.timestamp_begin, tokenizer.eot, model.config.n_vocab
    filt = LogitFilter(tokenizer, DecodeOptions(), vocab, "cpu")
    word = tokenizer.encode(" hello")[0]

    def allowed(sampled: list[int]) -> torch.Tensor:
        logits = torch.zeros(1, vocab)
        logits[0, [word, eot]] = 20.0  # text/eot more likely than all timestamps together: none is forced
        filt(torch.tensor([sampled], dtype=torch.long).reshape(1, len(sampled)), logits)
        return torch.isfinite(logits[0])

    first = allowed([])  # a timestamp of at most 1.00 s opens the text
    assert first.nonzero().flatten().tolist() == list(range(tb, tb + 51))
    after_open = allowed([tb + 10])  # then text, not another timestamp
    assert after_open[word] and not after_open[tb:].any()
    after_text = allowed([tb + 10, word])  # a closing timestamp must come later than the opening one
    assert (
        after_text[word]
        and after_text[eot]
        and not after_text[tb : tb + 11].any()
        and after_text[tb + 11 :].all()
    )
    after_close = allowed([tb + 10, word, tb + 20])  # closed: the next pair may not go back in time
    assert not after_close[:eot].any() and after_close[eot]
    assert not after_close[tb : tb + 20].any() and after_close[tb + 20 :].all()
    after_pair = allowed([tb + 10, word, tb + 20, tb + 20])
    assert after_pair[word] and not after_pair[tb:].any()
    logits = torch.zeros(1, vocab)
    logits[0, tb + 30 : tb + 80] = 5.0  # timestamp mass above any text token: a timestamp is forced
    logits[0, word] = 6.0
    filt(torch.tensor([[tb + 10, word]]), logits)
    assert not torch.isfinite(logits[0, :tb]).any()


def test_suppression(tiny):
    model, tokenizer = tiny
    vocab = model.config.n_vocab
    options = DecodeOptions(without_timestamps=True)
    filt = LogitFilter(tokenizer, options, vocab, "cpu")
    blank = tokenizer.encode(" ")[0]
    at_start, later = torch.zeros(1, vocab), torch.zeros(1, vocab)
    filt(torch.zeros(1, 0, dtype=torch.long), at_start)
    filt(torch.tensor([[tokenizer.encode(" hi")[0]]]), later)
    assert at_start[0, blank] == -np.inf and at_start[0, tokenizer.eot] == -np.inf
    assert later[0, blank] == 0 and later[0, tokenizer.eot] == 0
    banned = suppressed_tokens(tokenizer, options)
    assert tokenizer.encode(" [")[0] in banned and tokenizer.sot in banned and tokenizer.no_speech in banned
    assert (later[0, banned] == -np.inf).all()


def test_greedy_and_beam_transcribe_speech(tiny, features):
    model, tokenizer = tiny
    greedy = decode_batch(model, tokenizer, features, DecodeOptions())
    beam = decode_batch(model, tokenizer, features, DecodeOptions(beam_size=2))
    for results in (greedy, beam):
        assert words(results[0].text) == words(SHORT) and words(results[1].text) == words(LONG)
        assert all(
            r.tokens[0] >= tokenizer.timestamp_begin and r.tokens[-1] >= tokenizer.timestamp_begin
            for r in results
        )
        assert all(-1.0 < r.avg_logprob < 0 and 0 < r.no_speech_prob < 0.5 and not r.looped for r in results)
    # rows are independent: a window decodes the same alone as in a batch (beam bookkeeping, reordering)
    alone = decode_batch(model, tokenizer, features[1:], DecodeOptions(beam_size=2))[0]
    assert alone.tokens == beam[1].tokens


def test_sampling_is_per_window_reproducible(tiny, features):
    model, tokenizer = tiny
    options = DecodeOptions(best_of=2, max_new_tokens=30)

    def gens(*seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    both = decode_batch(model, tokenizer, features, options, temperature=0.5, generators=gens(5, 6))
    alone = decode_batch(model, tokenizer, features[1:], options, temperature=0.5, generators=gens(6))
    assert both[1].tokens == alone[0].tokens and both[1].temperature == 0.5


def test_prompt_conditioning_changes_the_prefix_only(tiny, features):
    model, tokenizer = tiny
    prompt = tokenizer.encode(" He might have been amiable.")
    plain = decode_batch(model, tokenizer, features[:1], DecodeOptions())[0]
    prompted = decode_batch(model, tokenizer, features[:1], DecodeOptions(), prompt=prompt)[0]
    assert words(prompted.text) == words(plain.text)  # the decoded tokens are the window's own words
    assert not set(prompted.tokens) & {tokenizer.sot_prev, tokenizer.sot}


def test_multilingual_model_detects_the_language(mel):
    model, tokenizer, _ = load_whisper(
        "base"
    )  # the default model: multilingual prompt and language detection
    with torch.inference_mode():
        features = model.encode(mel[:1])
        codes, probs = detect_language(model, tokenizer, model.cross_memory(features))
    assert codes == ["en"] and probs[0] > 0.5
    [result] = decode_batch(model, tokenizer, features, DecodeOptions())
    assert result.language == "en" and result.language_probability == pytest.approx(probs[0], abs=1e-4)
    assert words(result.text) == words(SHORT)
    assert initial_tokens(tokenizer, "en", DecodeOptions(), [11, 12], 100) == [
        tokenizer.sot_prev,
        11,
        12,
        tokenizer.sot,
        tokenizer.language_token("en"),
        tokenizer.transcribe,
    ]


def _installed_tokenizer_model() -> str:
    """A bundled model whose tokenizer package is installed (the GPU machine may hold only one of them)."""
    from unique_asr.errors import ModelError
    from unique_asr.models.registry import BUNDLED

    for name, bundled in BUNDLED.items():
        try:
            bundled.tokenizer.locate()
            return name
        except ModelError:
            continue
    pytest.skip("no bundled model package is installed")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("mode", ["dense", "unique"])
def test_graph_replayed_token_loop_equals_eager(mode, monkeypatch):
    """decode_batch on CUDA replays a captured step; its tokens equal the eager loop's (greedy and beam)."""
    from dataclasses import asdict

    from unique_asr import decoding
    from unique_asr.config import SparsityConfig
    from unique_asr.models.whisper import WhisperConfig
    from unique_asr.train.run import random_whisper

    name = _installed_tokenizer_model()
    n_vocab = 51864 if name.endswith(".en") else 51865
    dims = {
        **asdict(WhisperConfig()),
        "n_vocab": n_vocab,
        "n_audio_state": 128,
        "n_text_state": 128,
        "n_audio_head": 2,
        "n_text_head": 2,
        "n_audio_layer": 1,
        "n_text_layer": 2,
    }
    model, tokenizer, _ = random_whisper(dims, name, 0)
    model = model.half().cuda()
    model.sparsity = SparsityConfig(mode=mode, page_size=8, budget=64)
    features = torch.randn(3, 1500, 128, generator=torch.Generator().manual_seed(1)).half().cuda()
    captures = []
    monkeypatch.setattr(
        decoding, "CapturedDecodeStep", lambda *a: captures.append(1) or CapturedDecodeStep(*a)
    )
    ragged = [[], list(range(100, 105)), list(range(200, 240))]  # per-row prompts: rows at unequal positions
    for beam, prompts in ((1, None), (2, None), (1, ragged), (2, ragged)):
        options = DecodeOptions(language="en", beam_size=beam, max_new_tokens=24)
        eager = decode_batch(model, tokenizer, features, options, prompts=prompts, cuda_graph=False)
        assert not captures
        graph = decode_batch(model, tokenizer, features, options, prompts=prompts)
        assert len(captures) == 1
        captures.clear()
        assert [r.tokens for r in graph] == [r.tokens for r in eager]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_prefetched_windows_transcribe_like_the_calling_thread():
    """On CUDA the windows are cut in a background thread (GPU VAD front); segments and coverage are the same."""
    import pathlib
    from dataclasses import asdict

    from unique_asr.config import TranscribeOptions
    from unique_asr.models.whisper import WhisperConfig
    from unique_asr.train.run import random_whisper
    from unique_asr.transcribe import ModelBundle, transcribe
    from unique_asr.vad import VadModel

    name = _installed_tokenizer_model()
    dims = {**asdict(WhisperConfig()), "n_vocab": 51864 if name.endswith(".en") else 51865, "n_text_layer": 2,
            "n_audio_layer": 1}
    model, tokenizer, _ = random_whisper(dims, name, 0)
    bundle = ModelBundle(model.half().cuda(), tokenizer, "random", vad_model=VadModel("cuda"))
    lecture = pathlib.Path(__file__).resolve().parents[1] / "samples" / "lecture.flac"
    runs = []
    for prefetch in (False, True):
        options = TranscribeOptions(batch_size=2, max_window_s=8.0, prefetch=prefetch,
                                    decode=DecodeOptions(language="en", max_new_tokens=6, temperatures=(0.0,)))
        segments, info = transcribe(bundle, str(lecture), options)
        runs.append(([(s.start, s.end, s.tokens) for s in segments], info.windows, info.speech_s, info.decoded_s))
    assert runs[0][1] >= 3 and runs[1] == runs[0]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_capture_survives_cuda_work_in_another_thread():
    """The window prefetcher runs the VAD's GPU front while the decoder captures its step (once per batch);
    a capture must not be invalidated by that thread (it was, with the default global capture mode)."""
    import threading
    from dataclasses import asdict

    from unique_asr.models.whisper import SelfAttentionCache, WhisperConfig
    from unique_asr.train.run import random_whisper
    from unique_asr.vad import VadModel

    name = _installed_tokenizer_model()
    dims = {**asdict(WhisperConfig()), "n_vocab": 51864 if name.endswith(".en") else 51865, "n_text_layer": 2,
            "n_audio_layer": 1}
    model = random_whisper(dims, name, 0)[0].half().cuda()
    vad, stop = VadModel("cuda"), threading.Event()
    frames = np.random.default_rng(0).standard_normal((2000, 512)).astype(np.float32) * 0.1

    def busy():
        state = vad.new_state()
        while not stop.is_set():
            vad.probs(frames, state)

    worker = threading.Thread(target=busy)
    worker.start()
    try:
        features = torch.randn(2, 1500, dims["n_audio_state"], device="cuda").half()
        tokens = torch.full((2, 1), 50257, device="cuda")
        for _ in range(20):
            cache = SelfAttentionCache.allocate(model.config, 2, 32, device="cuda", dtype=torch.float16)
            cross = model.cross_memory(model.encode(torch.zeros(2, 80, 3000, device="cuda").half()) + features)
            step = CapturedDecodeStep(model, cache, cross)
            graph = step(tokens).clone()
            cache.lengths.zero_()
            eager = model.decode(tokens, cache, cross)
            torch.testing.assert_close(graph, eager, atol=1e-3, rtol=1e-3)
    finally:
        stop.set()
        worker.join()


@pytest.mark.parametrize("beam_size", [1, 2])
def test_rows_with_prompts_of_different_lengths_decode_as_alone(tiny, features, beam_size):
    """Per-row prompts (batched mode's stripes): each row sits at its own positions, so a row decodes as it
    does alone with its prompt, whatever the other rows' prompt lengths (none, short, long)."""
    model, tokenizer = tiny
    options = DecodeOptions(beam_size=beam_size)
    long = tokenizer.encode(" It is a truth universally acknowledged, that a single man in possession of a good"
                            " fortune, must be in want of a wife. However little known the feelings or views")
    short = tokenizer.encode(" He might have been amiable.")
    for prompts in ([short, long], [[], long], [long, []]):
        both = decode_batch(model, tokenizer, features, options, prompts=prompts)
        alone = [decode_batch(model, tokenizer, features[i : i + 1], options, prompt=p)[0]
                 for i, p in enumerate(prompts)]
        assert [r.tokens for r in both] == [r.tokens for r in alone]
        assert [r.avg_logprob for r in both] == pytest.approx([r.avg_logprob for r in alone], abs=1e-4)
        assert [r.no_speech_prob for r in both] == pytest.approx([r.no_speech_prob for r in alone], abs=1e-4)
