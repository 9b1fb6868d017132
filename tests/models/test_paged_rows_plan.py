"""Planning a speech-LLM's pages per row from free memory: a page's bytes count every statistic the sparsity
setting keeps (coded means, scales, rmean, vmean), and a window that cannot fit is a clear error."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from unique_asr.config import SparsityConfig
from unique_asr.models import paged_rows
from unique_asr.models.llm import LLMConfig, allocate_cache

LLM = LLMConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_layers=3, num_heads=4, num_kv_heads=2,
                head_dim=16, max_positions=4096)


def _model(**sparsity):
    return SimpleNamespace(net=SimpleNamespace(config=SimpleNamespace(llm=LLM)),
                           sparsity=SparsityConfig(page_size=8, **sparsity),
                           prompt=lambda language: SimpleNamespace(prompt_ids=list(range(20))))


@pytest.mark.parametrize("sparsity", [dict(mode="dense"), dict(mode="unique"), dict(mode="quest"),
                                      dict(mode="unique", stats_dtype="int8", refine=4),
                                      dict(mode="perdim", unselected="estimate")])
def test_page_bytes_is_what_one_more_page_allocates(sparsity):
    model = _model(**sparsity)
    got = paged_rows.page_bytes(model, torch.bfloat16)
    caches = [allocate_cache(LLM, model.sparsity, batch=1, num_pages=n, dtype=torch.bfloat16) for n in (5, 6)]
    held = [sum(t.numel() * t.element_size() for t in vars(c).values() if isinstance(t, torch.Tensor))
            for c in caches]
    assert got == held[1] - held[0]
    kv = LLM.num_layers * 2 * 8 * LLM.num_kv_heads * LLM.head_dim * 2
    assert got >= kv + 4  # K/V and the page-table entry at least


def test_coded_means_and_refine_change_the_page_bytes_by_their_statistics():
    plain = paged_rows.page_bytes(_model(mode="unique"), torch.bfloat16)
    coded = paged_rows.page_bytes(_model(mode="unique", stats_dtype="int8"), torch.bfloat16)
    refined = paged_rows.page_bytes(_model(mode="unique", stats_dtype="int8", refine=4), torch.bfloat16)
    per = LLM.num_layers * LLM.num_kv_heads
    assert plain - coded == per * (16 * 2 - 16 - 4)   # one byte a dim instead of two, plus an fp32 scale
    assert refined - coded == per * 16 * 2             # rmean: the bf16 means beside the codes


def test_a_window_that_cannot_fit_is_a_clear_error(monkeypatch):
    model = _model(mode="unique")
    per_page = paged_rows.page_bytes(model, torch.bfloat16)
    monkeypatch.setattr(paged_rows, "free_bytes", lambda device: int(per_page * 40 / paged_rows.MEMORY_SHARE))
    # 4 rows share 40 pages: 10 a row; one window needs 3 sink + 63 + 2 pages
    with pytest.raises(paged_rows.DoesNotFitError, match="lower --batch_size"):
        paged_rows.plan_pages(model, 4, torch.bfloat16, torch.device("cpu"), needed_tokens=500)
    pages = paged_rows.plan_pages(model, 1, torch.bfloat16, torch.device("cpu"), needed_tokens=100)
    assert pages == 40  # by memory, below the trained context's 513 pages
