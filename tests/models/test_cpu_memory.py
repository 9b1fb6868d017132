"""The CPU's cross memory (per-head layout, one copy per window shared by its beams) against the dense
CrossMemory it replaces there, and the token loop's retirement of finished windows (unique_asr.active_rows)."""

from __future__ import annotations

import pytest
import torch

from unique_asr.config import DecodeOptions
from unique_asr.decoding import decode_batch
from unique_asr.models import load_whisper
from unique_asr.models.cpu_memory import CpuCrossMemory
from unique_asr.models.cross_memory import CrossMemory

L, W, F, H, D = 2, 3, 37, 4, 8


@pytest.fixture
def memories():
    torch.manual_seed(0)
    k, v = torch.randn(L, W, F, H, D), torch.randn(L, W, F, H, D)
    kv = lambda layer: (k[layer], v[layer])
    return CrossMemory(k, v), CpuCrossMemory.build(L, kv, torch.empty(W, F, H * D), H)


def test_views_and_attention_equal_the_dense_memory(memories):
    dense, cpu = memories
    assert cpu.batch == W and torch.equal(cpu.k, dense.k) and torch.equal(cpu.v, dense.v)
    q = torch.randn(W, 5, H, D)  # prefill-like: 5 query tokens per row
    for layer in range(L):
        torch.testing.assert_close(cpu.attend(layer, q), dense.attend(layer, q), rtol=1e-5, atol=1e-6)


def test_beams_share_their_window_and_reorder_within_it(memories):
    dense, cpu = memories
    expand = torch.arange(W).repeat_interleave(4)  # 4 beams per window
    beams, copied = cpu.index_select(expand), dense.index_select(expand)
    assert beams.group == 4 and beams.batch == 12 and beams.kt.data_ptr() == cpu.kt.data_ptr()  # no copy
    q = torch.randn(12, 1, H, D)
    torch.testing.assert_close(beams.attend(1, q), copied.attend(1, q), rtol=1e-5, atol=1e-6)
    within = torch.tensor([1, 0, 3, 2, 4, 4, 5, 6, 11, 10, 9, 8])
    beams.reorder(within)  # beams take beams of their own window: nothing moves
    with pytest.raises(ValueError, match="within their window"):
        beams.reorder(torch.tensor([4, 0, 3, 2, 4, 4, 5, 6, 11, 10, 9, 8]))
    # dropping a finished window keeps the others' beams sharing one copy each
    rest = beams.index_select(torch.tensor([0, 1, 2, 3, 8, 9, 10, 11]))
    assert rest.group == 4 and rest.windows == 2
    torch.testing.assert_close(rest.attend(0, q[[0, 1, 2, 3, 8, 9, 10, 11]]),
                               copied.index_select(torch.tensor([0, 1, 2, 3, 8, 9, 10, 11])).attend(
                                   0, q[[0, 1, 2, 3, 8, 9, 10, 11]]), rtol=1e-5, atol=1e-6)
    # any other selection copies rows (one per row)
    odd = beams.index_select(torch.tensor([5, 0]))
    assert odd.group == 1 and torch.equal(odd.k, dense.k[:, [1, 0]])


def test_finished_windows_stop_stepping_and_results_stay(monkeypatch):
    """Two windows of different length: once the short one is done, steps run on the long one's rows only,
    and both decode as they do alone (greedy and beam)."""
    import speech_data

    from unique_asr.audio import log_mel

    model, tokenizer, _ = load_whisper("tiny.en")
    clips = [torch.from_numpy(speech_data.clip(name)) for name in ("austen_0930", "austen_0870")]
    with torch.inference_mode():
        features = model.encode(log_mel(torch.nn.utils.rnn.pad_sequence(clips, batch_first=True)))
    rows = []
    step = type(model).step

    def recording(self, tokens, state, memory):
        rows.append(tokens.shape[0])
        return step(self, tokens, state, memory)

    monkeypatch.setattr(type(model), "step", recording)
    for beam in (1, 2):
        rows.clear()
        both = decode_batch(model, tokenizer, features, DecodeOptions(beam_size=beam))
        assert rows[1] == 2 * beam and rows[-1] == beam  # prompt, then all rows ... then the long one's
        alone = [decode_batch(model, tokenizer, features[i : i + 1], DecodeOptions(beam_size=beam))[0]
                 for i in range(2)]
        assert [r.tokens for r in both] == [r.tokens for r in alone]
