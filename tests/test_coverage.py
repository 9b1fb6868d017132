"""Coverage accounting: speech overlapped by segments, uncovered stretches and their reasons."""

from unique_asr.coverage import (
    GUARD_STOP,
    NO_SPEECH,
    SKIPPED,
    Hole,
    intersect,
    merge,
    speech_after,
    subtract,
    window_coverage,
)

RATE = 16000


def test_interval_algebra():
    assert merge([(5, 9), (0, 3), (2, 4), (9, 9)]) == [(0, 4), (5, 9)]
    assert intersect([(0, 10), (20, 30)], [(5, 25)]) == [(5, 10), (20, 25)]
    assert subtract([(0, 10), (20, 30)], [(5, 25)]) == [(0, 5), (25, 30)]
    assert subtract([(0, 10)], []) == [(0, 10)]
    assert speech_after([(0, 10), (20, 30)], 5) == (15, 5)
    assert speech_after([(0, 10), (20, 30)], 12) == (10, 20)
    assert speech_after([(0, 10)], 12) == (0, -1)


def test_coverage_counts_speech_under_segments_and_names_the_gaps():
    s = RATE
    speech = [(0, 10 * s), (11 * s, 14 * s), (20 * s, 21 * s)]
    segments = [(0, 6 * s)]
    holes = [Hole(6 * s, 30 * s, NO_SPEECH)]
    covered, gaps = window_coverage(speech, segments, holes, 2 * s, RATE)
    assert covered == 6 * s
    # 6-10 s, 11-14 s and 20-21 s are one stretch: only pauses, no segment, lie between them
    assert [(g.start, g.end, g.why) for g in gaps] == [(6.0, 21.0, NO_SPEECH)]
    # a stretch counts its speech, not the pauses in it: 1.5 s of speech around a long pause is not reported
    assert window_coverage([(0, 5 * s), (9 * s, 12 * s)], [(0, 4 * s), (9 * s + s // 2, 12 * s)], [],
                           2 * s, RATE) == (6 * s + s // 2, [])
    covered, gaps = window_coverage(speech, segments + [(20 * s, 22 * s)], holes, 2 * s, RATE)
    assert covered == 7 * s and [(g.start, g.end) for g in gaps] == [(6.0, 14.0)]


def test_the_hole_overlapping_a_stretch_most_gives_its_reason():
    s = RATE
    covered, gaps = window_coverage(
        [(0, 20 * s)], [(0, 2 * s), (17 * s, 20 * s)],
        [Hole(2 * s, 4 * s, NO_SPEECH), Hole(4 * s, 17 * s, GUARD_STOP)], 2 * s, RATE
    )
    assert covered == 5 * s and [g.why for g in gaps] == [GUARD_STOP]
    _, gaps = window_coverage([(0, 20 * s)], [(0, 2 * s), (17 * s, 20 * s)], [], 2 * s, RATE)
    assert [(g.start, g.end, g.why) for g in gaps] == [(2.0, 17.0, SKIPPED)]
