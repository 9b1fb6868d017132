"""Our Whisper equals transformers' WhisperForConditionalGeneration on a tiny random config (float32)."""

from __future__ import annotations

import pytest
import torch
from whisper_helpers import TINY, hf_whisper

from unique_asr.models.checkpoint import from_hf_state_dict, to_hf_state_dict
from unique_asr.models.whisper import SelfAttentionCache, WhisperConfig, WhisperModel

TOL = dict(atol=2e-4, rtol=2e-4)


@pytest.fixture
def tiny_hf():
    return hf_whisper(TINY, seed=int(torch.randint(0, 2**31 - 1, ()).item()))


def ours_from(hf) -> WhisperModel:
    config = WhisperConfig.from_hf(hf.config)
    model = WhisperModel(config).eval()
    model.load_state_dict(from_hf_state_dict(hf.state_dict(), config), strict=True)
    return model


def test_config_round_trip(tiny_hf):
    assert WhisperConfig.from_hf(tiny_hf.config) == TINY


@torch.no_grad()
def test_encoder_and_incremental_decoder_match_transformers(tiny_hf):
    ours = ours_from(tiny_hf)
    mel = torch.randn(2, TINY.n_mels, 2 * TINY.n_audio_ctx)
    tokens = torch.randint(0, TINY.n_vocab, (2, 9))
    ref = tiny_hf(input_features=mel, decoder_input_ids=tokens)
    enc = ours.encode(mel)
    torch.testing.assert_close(enc, ref.encoder_last_hidden_state, **TOL)

    cross = ours.cross_memory(enc)
    cache = SelfAttentionCache.allocate(TINY, batch=2, max_len=16)
    steps = [ours.decode(tokens[:, :3], cache, cross)]  # prompt prefill, then one token at a time
    steps += [ours.decode(tokens[:, t : t + 1], cache, cross) for t in range(3, tokens.shape[1])]
    torch.testing.assert_close(torch.cat(steps, 1), ref.logits, **TOL)
    assert cache.lengths.tolist() == [9, 9]


@torch.no_grad()
def test_ragged_rows_and_beam_reorder(tiny_hf):
    """Rows at different lengths step together; reorder() makes row i continue row index[i]."""
    ours = ours_from(tiny_hf)
    mel = torch.randn(2, TINY.n_mels, 2 * TINY.n_audio_ctx)
    cross = ours.cross_memory(ours.encode(mel))
    a, b = torch.randint(0, TINY.n_vocab, (1, 5)), torch.randint(0, TINY.n_vocab, (1, 3))
    cache = SelfAttentionCache.allocate(TINY, batch=2, max_len=8)
    # fill row 0 with 4 tokens and row 1 with 2 tokens, one token per step; row 1 repeats its token when idle
    for t in range(4):
        step = torch.tensor([[a[0, t]], [b[0, min(t, 1)]]])
        if t >= 2:
            cache.lengths[1] = 2  # row 1 idles: overwrite its slot 2 each step
        ours.decode(step, cache, cross)
    cache.lengths[1] = 2
    logits = ours.decode(torch.tensor([[a[0, 4]], [b[0, 2]]]), cache, cross)
    ref0 = tiny_hf(input_features=mel[:1], decoder_input_ids=a).logits[:, -1]
    ref1 = tiny_hf(input_features=mel[1:], decoder_input_ids=b).logits[:, -1]
    torch.testing.assert_close(logits[:, 0], torch.cat([ref0, ref1]), **TOL)

    # beam-style reorder: both rows continue row 0's hypothesis over row 0's audio
    index = torch.tensor([0, 0])
    cache.reorder(index)
    nxt = torch.randint(0, TINY.n_vocab, (2, 1))
    logits = ours.decode(nxt, cache, cross.index_select(index))
    for row in range(2):
        ref = tiny_hf(input_features=mel[:1], decoder_input_ids=torch.cat([a, nxt[row : row + 1]], 1)).logits[
            :, -1
        ]
        torch.testing.assert_close(logits[row : row + 1, 0], ref, **TOL)


def test_bad_inputs_raise(tiny_hf):
    ours = ours_from(tiny_hf)
    with pytest.raises(ValueError, match="mel"):
        ours.encode(torch.randn(1, TINY.n_mels, 100))
    cross = ours.cross_memory(ours.encode(torch.randn(2, TINY.n_mels, 2 * TINY.n_audio_ctx)))
    cache = SelfAttentionCache.allocate(TINY, batch=2, max_len=4)
    cache.lengths[0] = 1
    with pytest.raises(ValueError, match="same length"):
        ours.decode(torch.zeros(2, 2, dtype=torch.long), cache, cross)
    cache.reset()
    with pytest.raises(ValueError, match="max_len"):
        ours.decode(torch.zeros(2, 5, dtype=torch.long), cache, cross)
    with pytest.raises(ValueError, match="max_len"):
        SelfAttentionCache.allocate(TINY, batch=1, max_len=TINY.n_text_ctx + 1)


def test_state_dict_round_trips_through_transformers_names(tiny_hf):
    ours = ours_from(tiny_hf)
    back = to_hf_state_dict(ours.state_dict(), TINY)
    result = tiny_hf.load_state_dict(back, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
