"""Quality metrics of the torch families that need more than a one-liner."""

from __future__ import annotations

import re
from collections.abc import Sequence

_PUNCTUATION = re.compile(r"[^\w\s']")


def normalise_words(text: str) -> list[str]:
    """Lower case, punctuation removed (apostrophes kept), split on whitespace."""
    return _PUNCTUATION.sub(" ", text.lower()).split()


def word_edits(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Levenshtein distance over words: substitutions + deletions + insertions."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref_word in enumerate(reference, start=1):
        current = [i]
        for j, hyp_word in enumerate(hypothesis, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref_word != hyp_word)))
        previous = current
    return previous[-1]


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus WER: total word edits / total reference words (not a mean of per-utterance rates)."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    edits = words = 0
    for reference, hypothesis in zip(references, hypotheses, strict=True):
        ref_words = normalise_words(reference)
        edits += word_edits(ref_words, normalise_words(hypothesis))
        words += len(ref_words)
    if words == 0:
        raise ValueError("the references hold no words: WER is undefined")
    return edits / words
