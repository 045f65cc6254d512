"""The causal-LM scorer against ROUGE values computed by hand (T5-metric conventions: no stemming, rougeLsum on
sentences split at " . ")."""

import pytest

from fedbip_nvflare.client.causal_lm import score_responses


def test_one_word_swapped():
    # 6 tokens each; shared unigrams the x2, cat, on, mat = 5; shared bigrams the-cat, on-the, the-mat = 3 of 5;
    # longest common subsequence "the cat on the mat" = 5.
    scores = score_responses(["the cat lay on the mat"], ["the cat sat on the mat"])
    assert scores["rouge1"] == pytest.approx(5 / 6)
    assert scores["rouge2"] == pytest.approx(3 / 5)
    assert scores["rouge_l"] == pytest.approx(5 / 6)
    assert scores["rouge_lsum"] == pytest.approx(5 / 6)
    assert scores["exact_match"] == 0.0


def test_label_with_extra_words_is_partial_credit_not_exact():
    # Tokens are lower-cased without punctuation: response [yes, definitely], reference [yes]:
    # P = 1/2, R = 1 -> F1 = 2/3; the reference has no bigram -> rouge2 = 0.
    scores = score_responses(["Yes, definitely"], ["yes"])
    assert scores["rouge1"] == pytest.approx(2 / 3)
    assert scores["rouge2"] == 0.0
    assert scores["exact_match"] == 0.0
    assert score_responses(["Yes\nbecause ..."], ["yes"])["exact_match"] == 1.0, "first line, case-folded"


def test_rouge_lsum_matches_sentences_in_any_order():
    # As one sequence, [a b c d] vs [c d a b] share a subsequence of 2 -> rougeL F1 = 1/2; sentence by sentence
    # ("a b ." and "c d") every reference token is matched -> rougeLsum F1 = 1.
    scores = score_responses(["cc dd . aa bb"], ["aa bb . cc dd"])
    assert scores["rouge_l"] == pytest.approx(0.5)
    assert scores["rouge_lsum"] == pytest.approx(1.0)
    assert scores["rouge1"] == pytest.approx(1.0)


def test_scores_are_means_over_pairs():
    scores = score_responses(["the cat lay on the mat", "Yes, definitely"], ["the cat sat on the mat", "yes"])
    assert scores["rouge1"] == pytest.approx((5 / 6 + 2 / 3) / 2)
    assert scores["rouge2"] == pytest.approx((3 / 5 + 0) / 2)
    assert score_responses([], [])["rouge1"] == 0.0
    with pytest.raises(ValueError, match="2 responses for 1 references"):
        score_responses(["a", "b"], ["a"])
