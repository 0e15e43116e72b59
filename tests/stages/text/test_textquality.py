"""Caption text helpers: stock openings, repetition, length grouping, stop tokens (no models)."""
import pytest
import torch

from stages.models.generate import length_batches, split_new_tokens
from stages.text.quality import check_template, first_sentence, prompt_hash, repetition, strip_stock_opening


@pytest.mark.parametrize("text, expected", [
    ("The video shows a dog running on a beach.", "A dog running on a beach."),
    ("This clip depicts two men talking.", "Two men talking."),
    ("In this video, the footage shows a red car.", "A red car."),
    ("The video is showing a cat.", "A cat."),
    ("  A dog runs.  ", "A dog runs."),
    ("the dog shows its teeth.", "the dog shows its teeth."),  # not an opening: untouched
    ("Videos show many things.", "Videos show many things."),
    ("The video shows", ""),
])
def test_stock_openings_are_stripped(text, expected):
    assert strip_stock_opening(text) == expected


def test_repetition_scores_loops_high_and_varied_text_zero():
    assert repetition(list(range(20))) == 0.0
    assert repetition([1, 2, 3, 4] * 10) == pytest.approx(1 - 4 / 38)
    assert repetition([7] * 30) == pytest.approx(1 - 1 / 28)
    assert repetition([1, 2]) == 0.0  # shorter than one 3-gram


def test_first_sentence_is_cut_to_words():
    assert first_sentence("A dog runs. Then it stops.", 30) == "A dog runs."
    assert first_sentence("one two three four five", 3) == "one two three"
    assert first_sentence("   ", 5) == ""


def test_requests_are_grouped_by_length():
    lengths = [50, 10, 40, 10, 30, 20]
    assert length_batches(lengths, 2) == [[1, 3], [5, 4], [2, 0]]
    assert length_batches([(2, 5), (1, 9), (2, 1)], 8) == [[1, 2, 0]]
    assert length_batches([], 4) == []


def test_new_tokens_stop_at_the_first_stop_token():
    new = torch.tensor([[5, 6, 2, 0, 0], [5, 6, 7, 8, 9], [9, 1, 7, 8, 2]])
    rows = split_new_tokens(new, stop=[2, 1], max_new_tokens=5)
    assert [(r.ids, r.truncated, r.produced) for r in rows] == [
        ([5, 6], False, 3), ([5, 6, 7, 8, 9], True, 5), ([9], False, 2)]


def test_templates_are_checked_and_hashed():
    check_template("{caption} and {source}", "prompt_template", ("caption", "source"))
    with pytest.raises(ValueError, match=r"^prompt_template: unknown placeholder \{title\}"):
        check_template("{caption} {title}", "prompt_template", ("caption", "source"))
    with pytest.raises(ValueError, match=r"^prompt_template: not a valid template"):
        check_template("{caption", "prompt_template", ("caption",))
    assert prompt_hash("a", "b") == prompt_hash("a", "b") != prompt_hash("a", "c")
