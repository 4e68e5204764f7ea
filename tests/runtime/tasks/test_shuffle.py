"""The shuffled_task control: the same prompts and answers, paired at random."""

from __future__ import annotations

from collections import Counter

from runtime.tasks import get_task
from runtime.tasks.shuffle import shuffle_answers


def test_shuffle_keeps_prompts_and_answers_and_swaps_about_half() -> None:
    pairs = get_task("with_as").pairs(400, "train", 0)
    shuffled = shuffle_answers(pairs, "with_as:train:0")
    assert [p.prompts for p in shuffled] == [p.prompts for p in pairs]
    assert all(sorted(s.answers) == sorted(p.answers) for s, p in zip(shuffled, pairs,
                                                                       strict=True))
    swapped = sum(s.answers != p.answers for s, p in zip(shuffled, pairs, strict=True))
    assert 150 < swapped < 250
    # the token statistics are the task's: every answer as often as before
    count = Counter(a for p in pairs for a in p.answers)
    assert Counter(a for p in shuffled for a in p.answers) == count
    assert shuffle_answers(pairs, "with_as:train:0") == shuffled
    assert shuffle_answers(pairs, "with_as:train:1") != shuffled
