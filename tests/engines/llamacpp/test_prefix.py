"""`_common_prefix`: how many cached tokens a new prompt can reuse."""

from __future__ import annotations

import random

import pytest

from galerne.engines.llamacpp.scheduler import _common_prefix


def _naive(cached: list[int], prompt: list[int]) -> int:
    count = 0
    for left, right in zip(cached, prompt, strict=False):
        if left != right:
            break
        count += 1
    return count


@pytest.mark.parametrize(
    ("cached", "prompt", "expected"),
    [
        ([], [], 0),
        ([], [1, 2, 3], 0),
        ([1, 2, 3], [], 0),
        ([1, 2, 3], [1, 2, 3], 3),
        ([7], [7], 1),
        ([1, 2, 3, 4, 5], [1, 2, 3], 3),  # prompt shorter than the cache
        ([1, 2, 3], [1, 2, 3, 4, 5], 3),  # prompt extends the cache
        ([9, 2, 3], [1, 2, 3], 0),  # mismatch at 0
        ([1, 9, 3], [1, 2, 3], 1),
        ([1, 2, 9], [1, 2, 3], 2),  # mismatch at the last shared position
        ([1, 2, 3, 4, 5], [1, 2, 3, 9], 3),
    ],
)
def test_common_prefix_edge_cases(cached: list[int], prompt: list[int], expected: int) -> None:
    assert _common_prefix(cached, prompt) == expected


@pytest.mark.parametrize("mismatch", [1, 2, 511, 1000, 1023, 2047, 3998])
def test_mismatch_in_a_long_list(mismatch: int) -> None:
    cached = list(range(4000))
    prompt = list(range(3999))
    prompt[mismatch] = -1
    assert _common_prefix(cached, prompt) == mismatch


def test_later_matches_after_a_mismatch_do_not_count() -> None:
    cached = list(range(1000))
    prompt = list(range(1000))
    prompt[500] = -1  # everything after the mismatch is equal again, which must not extend the prefix
    assert _common_prefix(cached, prompt) == 500


def test_agrees_with_a_naive_scan() -> None:
    rng = random.Random(20240601)
    for _ in range(500):
        shared = [rng.randrange(5) for _ in range(rng.randrange(0, 300))]
        cached = shared + [rng.randrange(5) for _ in range(rng.randrange(0, 50))]
        prompt = shared + [rng.randrange(5) for _ in range(rng.randrange(0, 50))]
        assert _common_prefix(cached, prompt) == _naive(cached, prompt), (cached, prompt)
