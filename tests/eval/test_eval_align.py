import random
import time

import jiwer
import pytest

from unique_asr.eval.align import ErrorCounts, align


def _perturb(rng, ref, vocab, p):
    """Substitute, delete and insert words, each with probability p."""
    out = []
    for w in ref:
        r = rng.random()
        if r < p:
            out.append(rng.choice(vocab))
        elif r < 2 * p:
            continue
        elif r < 3 * p:
            out += [w, rng.choice(vocab)]
        else:
            out.append(w)
    return out


def _jiwer_counts(ref, hyp):
    o = jiwer.process_words(" ".join(ref), " ".join(hyp))
    return o.substitutions, o.deletions, o.insertions


def test_hand_computed_case():
    c = align(["a", "b", "c", "d"], ["a", "x", "c", "d", "e"]).counts
    assert (c.hits, c.substitutions, c.deletions, c.insertions) == (3, 1, 0, 1)
    assert c.error_rate == 0.5


def test_deletions_and_empty_sides():
    c = align(["the", "cat", "sat", "on", "the", "mat"], ["the", "sat", "on", "mat"]).counts
    assert (c.substitutions, c.deletions, c.insertions) == (0, 2, 0)
    assert align([], ["x", "y"]).counts == ErrorCounts(0, 0, 0, 2)
    assert align(["x", "y"], []).counts == ErrorCounts(0, 0, 2, 0)
    assert align([], []).counts.error_rate == 0.0


def test_edits_point_at_the_errors():
    ref, hyp = ["a", "b", "c", "d"], ["a", "x", "c", "d", "e"]
    edits = align(ref, hyp).edits
    assert edits == [("replace", 1, 2, 1, 2), ("insert", 4, 4, 4, 5)]


@pytest.mark.parametrize("vocab_size", [20, 200, 2000])
def test_anchored_edit_distance_equals_exact_on_random_texts(vocab_size):
    rng = random.Random()  # fresh each run
    vocab = [f"w{i}" for i in range(vocab_size)]
    for _ in range(60):
        ref = [rng.choice(vocab) for _ in range(rng.randint(30, 500))]
        hyp = _perturb(rng, ref, vocab, rng.choice([0.02, 0.1, 0.25]))
        forced = align(ref, hyp, exact_cells=0).counts  # anchoring at every level
        assert forced.errors == sum(_jiwer_counts(ref, hyp))
        assert forced.reference_length == len(ref)
        assert forced.insertions - forced.deletions == len(hyp) - len(ref)


@pytest.mark.parametrize("vocab_size", [200, 2000])
def test_anchored_breakdown_equals_exact_at_realistic_error_rates(vocab_size):
    """S/D/I match too, up to equal-cost ties (2 S vs 1 D + 1 I), which may split either way: measured in
    about 0.1-0.2 % of texts, so more than 3 of 60 would mean a real difference, not a tie."""
    rng = random.Random()
    vocab = [f"w{i}" for i in range(vocab_size)]
    split_ties = 0
    for _ in range(60):
        ref = [rng.choice(vocab) for _ in range(rng.randint(30, 500))]
        hyp = _perturb(rng, ref, vocab, rng.choice([0.01, 0.03, 0.05]))
        forced = align(ref, hyp, exact_cells=0).counts
        ours, theirs = (forced.substitutions, forced.deletions, forced.insertions), _jiwer_counts(ref, hyp)
        assert sum(ours) == sum(theirs) and ours[2] - ours[1] == theirs[2] - theirs[1], (ours, theirs)
        split_ties += ours != theirs
    assert split_ties <= 3


def test_characters_align_like_jiwer_cer():
    ref, hyp = "the quick brown fox", "the quack brown fax jumps"
    c = align(ref, hyp).counts
    o = jiwer.process_characters(ref, hyp)
    assert (c.substitutions, c.deletions, c.insertions) == (o.substitutions, o.deletions, o.insertions)


def test_hundred_thousand_words_in_seconds():
    rng = random.Random(7)
    vocab = [f"w{i}" for i in range(5000)]
    ref = [rng.choice(vocab) for _ in range(100_000)]
    hyp = _perturb(rng, ref, vocab, 0.05)
    hyp[40_000:40_000] = ["loop", "again"] * 500  # a hallucinated stretch
    started = time.perf_counter()
    c = align(ref, hyp).counts
    assert time.perf_counter() - started < 10.0
    assert c.reference_length == len(ref)
    assert c.insertions >= 1000
    assert c.error_rate < 0.3
