"""TokenSampler: greedy, temperature, nucleus, penalties and a per-request seeded generator."""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np
import numpy.typing as npt
import pytest

from galerne.engines.llamacpp.sampler import TokenSampler
from galerne.inference.types import SamplingParams


def _logits_from_probs(probs: list[float]) -> npt.NDArray[np.float32]:
    return np.log(np.asarray(probs, dtype=np.float64)).astype(np.float32)


def _draws(sampler: TokenSampler, logits: npt.NDArray[np.float32], count: int) -> list[int]:
    # the sampler may modify its logits row in place (it is the engine's scratch row): copy each time
    return [sampler.sample(logits.copy()) for _ in range(count)]


def _entropy(tokens: list[int]) -> float:
    counts = np.array(list(Counter(tokens).values()), dtype=np.float64)
    freqs = counts / counts.sum()
    return float(-(freqs * np.log(freqs)).sum())


def test_greedy_is_argmax() -> None:
    sampler = TokenSampler(SamplingParams(temperature=0.0))
    logits = np.array([0.1, 2.5, -1.0, 2.4, 0.0], dtype=np.float32)
    assert _draws(sampler, logits, 5) == [1] * 5


def test_greedy_ignores_top_p_and_seed() -> None:
    logits = np.array([3.0, 1.0, 5.0, 4.9], dtype=np.float32)
    for seed in (None, 0, 7):
        sampler = TokenSampler(SamplingParams(temperature=0.0, top_p=0.5, seed=seed))
        assert sampler.sample(logits.copy()) == 2


def test_same_seed_same_sequence() -> None:
    logits = np.zeros(50, dtype=np.float32)
    params = SamplingParams(temperature=1.0, seed=1234)
    first = _draws(TokenSampler(params), logits, 40)
    second = _draws(TokenSampler(params), logits, 40)
    assert first == second
    assert len(set(first)) > 5  # it really sampled, it did not just repeat one token


def test_different_seeds_give_different_sequences() -> None:
    logits = np.zeros(50, dtype=np.float32)
    first = _draws(TokenSampler(SamplingParams(temperature=1.0, seed=1)), logits, 40)
    second = _draws(TokenSampler(SamplingParams(temperature=1.0, seed=2)), logits, 40)
    assert first != second


def test_seeded_sampler_is_independent_of_other_samplers() -> None:
    """A request's tokens depend only on its own seed, not on what else ran in the batch."""
    logits = np.zeros(50, dtype=np.float32)
    alone = _draws(TokenSampler(SamplingParams(temperature=1.0, seed=99)), logits, 20)
    mine = TokenSampler(SamplingParams(temperature=1.0, seed=99))
    other = TokenSampler(SamplingParams(temperature=1.0, seed=5))
    interleaved = []
    for _ in range(20):
        other.sample(logits.copy())
        interleaved.append(mine.sample(logits.copy()))
    assert interleaved == alone


def test_small_top_p_keeps_only_the_top_token() -> None:
    logits = _logits_from_probs([0.2, 0.35, 0.25, 0.2])
    sampler = TokenSampler(SamplingParams(temperature=1.0, top_p=0.01, seed=3))
    assert set(_draws(sampler, logits, 300)) == {1}


def test_top_p_zero_keeps_only_the_top_token() -> None:
    logits = _logits_from_probs([0.2, 0.1, 0.4, 0.3])
    sampler = TokenSampler(SamplingParams(temperature=1.0, top_p=0.0, seed=3))
    assert set(_draws(sampler, logits, 100)) == {2}


def test_top_p_samples_stay_within_the_nucleus() -> None:
    # sorted: token 2 (0.5), token 0 (0.3), token 3 (0.15), token 1 (0.05); 0.75 is reached at token 0
    logits = _logits_from_probs([0.3, 0.05, 0.5, 0.15])
    sampler = TokenSampler(SamplingParams(temperature=1.0, top_p=0.75, seed=11))
    counts = Counter(_draws(sampler, logits, 4000))
    assert set(counts) == {0, 2}
    # renormalised inside the nucleus: 0.5 / 0.8 = 0.625 for token 2
    assert counts[2] / 4000 == pytest.approx(0.625, abs=0.03)


def test_top_p_includes_the_token_that_crosses_the_threshold() -> None:
    logits = _logits_from_probs([0.3, 0.05, 0.5, 0.15])
    sampler = TokenSampler(SamplingParams(temperature=1.0, top_p=0.85, seed=11))
    assert set(_draws(sampler, logits, 4000)) == {0, 2, 3}


def test_top_p_one_can_sample_every_token() -> None:
    logits = _logits_from_probs([0.3, 0.05, 0.5, 0.15])
    sampler = TokenSampler(SamplingParams(temperature=1.0, top_p=1.0, seed=11))
    counts = Counter(_draws(sampler, logits, 4000))
    assert set(counts) == {0, 1, 2, 3}
    assert counts[1] / 4000 == pytest.approx(0.05, abs=0.02)


def test_nucleus_reaches_into_the_long_tail_when_top_tokens_do_not_suffice() -> None:
    """Tokens under the nucleus floor (1e-6) still count when they are needed to reach top_p."""
    vocab = 600_000
    probs = np.full(vocab, 0.5 / (vocab - 1))  # each tail token ~8e-7, under the floor
    probs[0] = 0.5
    logits = np.log(probs).astype(np.float32)
    sampler = TokenSampler(SamplingParams(temperature=1.0, top_p=0.9, seed=5))
    draws = _draws(sampler, logits, 40)
    assert any(token != 0 for token in draws)
    assert 0 in draws


def test_zero_probability_tokens_are_never_sampled() -> None:
    logits = np.array([0.0, -np.inf, 0.0, -np.inf], dtype=np.float32)
    sampler = TokenSampler(SamplingParams(temperature=1.0, seed=0))
    assert set(_draws(sampler, logits, 500)) == {0, 2}


def test_low_temperature_concentrates_and_high_temperature_spreads() -> None:
    logits = np.array([2.0, 1.5, 1.0, 0.5, 0.0, -0.5], dtype=np.float32)
    cold = _draws(TokenSampler(SamplingParams(temperature=0.05, seed=8)), logits, 2000)
    hot = _draws(TokenSampler(SamplingParams(temperature=2.0, seed=8)), logits, 2000)
    assert Counter(cold)[0] / 2000 > 0.99
    assert len(set(hot)) == 6
    assert _entropy(hot) > 1.5 > 0.1 > _entropy(cold)


@pytest.mark.parametrize("temperature", [1e-6, 1e-38, 1e-50])
def test_tiny_temperature_picks_the_argmax(temperature: float) -> None:
    """Any temperature the API accepts (>= 0) must work: a tiny one behaves like greedy, not like NaN."""
    logits = np.array([1.0, 5.0, 2.0, 0.5], dtype=np.float32)
    for top_p in (1.0, 0.9):
        sampler = TokenSampler(SamplingParams(temperature=temperature, top_p=top_p, seed=0))
        assert _draws(sampler, logits, 5) == [1] * 5, f"top_p={top_p}"


def test_temperature_one_matches_softmax() -> None:
    logits = np.array([1.0, 0.0], dtype=np.float32)
    counts = Counter(_draws(TokenSampler(SamplingParams(temperature=1.0, seed=21)), logits, 5000))
    expected = float(np.exp(1.0) / (np.exp(1.0) + 1.0))  # ~0.731
    assert counts[0] / 5000 == pytest.approx(expected, abs=0.025)


def test_greedy_without_penalty_repeats() -> None:
    sampler = TokenSampler(SamplingParams(temperature=0.0))
    assert _draws(sampler, np.array([3.0, 2.0, 0.0], dtype=np.float32), 6) == [0] * 6


def test_greedy_with_presence_penalty_stops_repeating() -> None:
    # 3 - 2 = 1 < 2: token 1 comes next; once both were used both lose 2 and token 0 leads again
    sampler = TokenSampler(SamplingParams(temperature=0.0, presence_penalty=2.0))
    assert _draws(sampler, np.array([3.0, 2.0, 0.0], dtype=np.float32), 4) == [0, 1, 0, 0]


def test_presence_penalty_does_not_grow_with_count() -> None:
    # 3 - 2 = 1 still beats 0.5 however often token 0 was chosen
    sampler = TokenSampler(SamplingParams(temperature=0.0, presence_penalty=2.0))
    assert _draws(sampler, np.array([3.0, 0.5], dtype=np.float32), 5) == [0] * 5


def test_frequency_penalty_grows_with_count() -> None:
    # token 0: 3, then 3 - 2 = 1 (> 0.5), then 3 - 4 = -1 (< 0.5)
    sampler = TokenSampler(SamplingParams(temperature=0.0, frequency_penalty=2.0))
    assert _draws(sampler, np.array([3.0, 0.5], dtype=np.float32), 3) == [0, 0, 1]


def test_penalties_lower_a_sampled_tokens_chance_of_repeating() -> None:
    logits = np.zeros(2, dtype=np.float32)

    def repeat_rate(params: SamplingParams) -> float:
        repeats = 0
        for seed in range(1500):
            sampler = TokenSampler(dataclasses.replace(params, seed=seed))
            first, second = _draws(sampler, logits, 2)
            repeats += first == second
        return repeats / 1500

    plain = repeat_rate(SamplingParams(temperature=1.0))
    penalised = repeat_rate(SamplingParams(temperature=1.0, presence_penalty=2.0))
    assert plain == pytest.approx(0.5, abs=0.05)
    assert penalised == pytest.approx(1 / (1 + np.exp(2.0)), abs=0.04)  # ~0.12
