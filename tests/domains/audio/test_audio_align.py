"""Word timing from cross-attention: DTW and the median filter against plain loops (Whisper's
``dtw_cpu``), word starts recovered from a planted alignment, and head discovery finding the
planted head among distractors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnlab.core.registry import create
from attnlab.domains.audio import align as A


def _dtw_reference(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """openai/whisper timing.py dtw_cpu + backtrace, as plain loops."""
    N, M = x.shape
    cost = np.full((N + 1, M + 1), np.inf)
    trace = -np.ones((N + 1, M + 1))
    cost[0, 0] = 0
    for j in range(1, M + 1):
        for i in range(1, N + 1):
            c0, c1, c2 = cost[i - 1, j - 1], cost[i - 1, j], cost[i, j - 1]
            if c0 < c1 and c0 < c2:
                c, t = c0, 0
            elif c1 < c0 and c1 < c2:
                c, t = c1, 1
            else:
                c, t = c2, 2
            cost[i, j] = x[i - 1, j - 1] + c
            trace[i, j] = t
    i, j = N, M
    trace[0, :], trace[:, 0] = 2, 1
    out = []
    while i > 0 or j > 0:
        out.append((i - 1, j - 1))
        t = trace[i, j]
        i, j = (i - 1, j - 1) if t == 0 else (i - 1, j) if t == 1 else (i, j - 1)
    r = np.array(out)[::-1].T
    return r[0], r[1]


@pytest.mark.parametrize("shape", [(1, 1), (4, 17), (12, 90), (9, 5)])
def test_dtw_matches_whisper_loops(shape):  # no ties in random data
    x = np.random.default_rng(shape[0] * 100 + shape[1]).standard_normal(shape)
    rows, cols = A.dtw(x)
    ref = _dtw_reference(x)
    np.testing.assert_array_equal(rows, ref[0])
    np.testing.assert_array_equal(cols, ref[1])


def test_dtw_breaks_ties_towards_the_minimum():
    cost = np.array([[0, 0, 0, 0.0], [0.4, 0.4, -3, -3], [0.4, 0.4, 0.4, -3]])
    rows, cols = A.dtw(cost)
    total = cost[rows, cols].sum()
    assert total == pytest.approx(-9.0)  # Whisper's loops step right on the tie at (2, 2)
    assert cost[_dtw_reference(cost)].sum() > total


def test_median_filter_matches_a_loop():
    x = torch.randn(3, 2, 40, generator=torch.Generator().manual_seed(0))
    got = A.median_filter(x, 7)
    padded = torch.nn.functional.pad(x.reshape(-1, 1, 40), (3, 3), mode="reflect").reshape(3, 2, 46)
    ref = torch.stack([padded[..., t : t + 7].median(-1).values for t in range(40)], -1)
    torch.testing.assert_close(got, ref)


def _planted(word_tokens, starts_pos, S, sharp=8.0, noise=0.0, seed=0):
    """Maps (L, S) of [prefix, tokens..., end] whose rows peak on the frames of the token
    each query predicts."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    bounds = [*starts_pos, S]
    for k, toks in enumerate(word_tokens):
        lo, hi = bounds[k], bounds[k + 1]
        for n in range(len(toks)):
            centre = lo + (hi - lo) * (n + 0.5) / len(toks)
            rows.append(-((torch.arange(S) - centre) ** 2) / sharp)
    # query p (input: the prefix, then token p) predicts token p + 1: its row holds that
    # token's frames; the row predicting the end token looks past the last word; the end
    # token's own row is never read
    rows = [*rows, -((torch.arange(S) - (S - 1.0)) ** 2) / sharp, torch.zeros(S)]
    peaks = torch.stack(rows).exp() + 0.02  # a floor: frames far from every token tie
    w = peaks * (1 + noise * torch.rand(len(rows), S, generator=g))
    return w / w.sum(-1, keepdim=True)


def test_word_starts_recovered_from_a_planted_alignment():
    words = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]
    starts = [10, 40, 70]
    w = _planted(words, starts, 120)
    spans = A.AlignItem(torch.zeros(1, 1), words, []).spans()
    times, matrix, _ = A._word_times(w[None], 1, spans, 100, 0.02)
    got = [round(s / 0.02) for s, _ in times]
    assert all(abs(g - t) <= 3 for g, t in zip(got, starts, strict=True)), got
    assert matrix.shape == (len(w) - 1, 100)


def test_head_discovery_finds_the_planted_head(monkeypatch):
    torch.manual_seed(0)
    model = create("audio_asr_test", dec_depth=2, num_heads=2)
    words = [[5, 6, 7], [8, 9], [10, 11, 12]]
    items, planted = [], {}
    rng = np.random.default_rng(1)
    for n in range(6):
        pos = sorted(rng.choice(np.arange(5, 70), 3, replace=False).tolist())
        spec = torch.full((80, 160), float(n))
        items.append(A.AlignItem(spec, words, [p * 0.02 for p in pos]))
        good = _planted(words, pos, 80, seed=n)
        noise = torch.rand(3, *good.shape, generator=torch.Generator().manual_seed(n)).softmax(-1)
        att = torch.stack([noise[0], noise[1], noise[2], good]).reshape(2, 2, *good.shape)
        planted[n] = att

    monkeypatch.setattr(A, "cross_attention", lambda m, spec, toks: planted[int(spec[0, 0])])
    found = A.find_alignment_heads(model, items, max_heads=3)
    assert found.heads[0] == [1, 1]
    assert found.single_mae_ms[1, 1] < 70 < found.single_mae_ms[0].min()
    err = A.word_start_errors(model, items, [[1, 1]])
    assert err["mae_ms"] == pytest.approx(found.single_mae_ms[1, 1])
    assert found.medfilt in (1, 3, 5, 7)  # the width is chosen for the heads, on the same clips
    at7 = A._errors(
        model, items, [planted[n] for n in range(6)], found.heads, [model.config.sot_id], 7
    )
    assert found.mae_ms <= at7.mean() * 1000 + 1e-9


@pytest.mark.parametrize("lead_s, snr_db", [(0.2, 40.0), (0.5, 20.0)])
def test_speech_onset_finds_the_first_word_after_silence(lead_s, snr_db):
    from attnlab.domains.audio import synthesize
    from attnlab.domains.audio.data import SAMPLE_RATE, log_mel, prepare

    wave, sr, starts = synthesize("seven two", voice="m3", rate=170, pitch=50)
    x = prepare(wave, sr)
    x = torch.cat([torch.zeros(int(lead_s * SAMPLE_RATE)), x])
    g = torch.Generator().manual_seed(int(lead_s * 10))
    noise = torch.randn(x.shape, generator=g)
    x = x + noise * x.pow(2).mean().sqrt() * 10 ** (-snr_db / 20)
    onset_s = A.speech_onset(log_mel(x)) * 0.02
    true_s = lead_s + starts[0][1]
    assert true_s - 0.08 <= onset_s <= true_s + 0.04, (onset_s, true_s)
    assert A.speech_onset(torch.zeros(80, 100)) == 0  # no floor-to-peak rise: no onset


def test_no_word_starts_before_the_speech_onset():
    words = [[5, 6], [7, 8, 9]]
    w = _planted(words, [2, 50], 100, sharp=400.0)  # the first word's rows smeared over 0..
    spans = A.AlignItem(torch.zeros(1, 1), words, []).spans()
    free, _, _ = A._word_times(w[None], 1, spans, 100, 0.02)
    held, _, _ = A._word_times(w[None], 1, spans, 100, 0.02, onset=30)
    assert free[0][0] < 0.6 and held[0][0] >= 30 * 0.02
