"""Prompt-to-prompt on the text side: which token positions hold which words, and the tensors that map a target
prompt's tokens to the source prompt's (replace / refine), weight them (reweight) and schedule them per step.

Token positions count from the start of the encoded prompt, so position 0 is the begin-of-text token and the first
word starts at 1, as in the text encoder's output that cross-attention keys are made from. Words are the
prompt's whitespace-separated parts, compared case-insensitively without surrounding punctuation; each word is
tokenised on its own, which matches the whole prompt's tokenisation for CLIP's BPE (checked, with a clear error
for tokenizers where it does not hold).
"""

from __future__ import annotations

import difflib
import string
from collections.abc import Iterable, Mapping

import torch

from .errors import PromptWordError

__all__ = [
    "changed_words",
    "cross_attention_schedule",
    "normalise_word",
    "refinement_mapper",
    "replacement_mapper",
    "token_weights",
    "word_indicator",
    "word_positions",
    "word_spans",
]

_STRIP = string.punctuation + string.whitespace


def normalise_word(word: str) -> str:
    """Lower-case `word` without surrounding punctuation (how words are compared)."""
    return word.strip(_STRIP).lower()


def _token_ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False).input_ids)


def word_spans(tokenizer, prompt: str) -> list[tuple[str, list[int]]]:
    """Each word of `prompt` with the positions of its tokens in the encoded prompt (after the begin token)."""
    encoded = list(tokenizer(prompt).input_ids)
    offset = 1 if tokenizer.bos_token_id is not None and encoded[:1] == [tokenizer.bos_token_id] else 0
    spans, position, ids = [], offset, []
    for word in prompt.split():
        pieces = _token_ids(tokenizer, word)
        spans.append((word, list(range(position, position + len(pieces)))))
        position += len(pieces)
        ids += pieces
    if encoded[offset : offset + len(ids)] != ids:
        raise PromptWordError(
            f"{type(tokenizer).__name__} tokenises words differently inside the prompt than alone, so word-level "
            f"editing cannot locate words in {prompt!r}; use a CLIP tokenizer (Stable Diffusion)"
        )
    return spans


def word_positions(tokenizer, prompt: str, words: Iterable[str], *, role: str = "word") -> list[int]:
    """Token positions of `words` (each may be several words separated by spaces) in `prompt`.

    Raises `PromptWordError` naming the missing word and the prompt's words when one is absent.
    """
    spans = word_spans(tokenizer, prompt)
    positions: list[int] = []
    for entry in words:
        for word in entry.split():
            key = normalise_word(word)
            found = [p for w, span in spans if normalise_word(w) == key for p in span]
            if not found:
                raise PromptWordError(
                    f"{role} {word!r} is not in the prompt {prompt!r}; its words are "
                    f"{[normalise_word(w) for w, _ in spans]}"
                )
            positions += found
    return sorted(set(positions))


def _prompt_end(spans: list[tuple[str, list[int]]], offset: int = 1) -> int:
    """First position after the last word's tokens."""
    return max((span[-1] + 1 for _, span in spans if span), default=offset)


def replacement_mapper(tokenizer, source: str, target: str, length: int) -> torch.Tensor:
    """`[length, length]` matrix `M` with `target_probs = source_probs @ M` (prompt-to-prompt "replace").

    Word `i` of the target takes word `i` of the source's attention: token by token when both have as many
    tokens, otherwise each target token gets the source word's total attention divided by the target word's token
    count (the mass is kept). Words and the text after the prompt keep their positions.
    """
    source_spans, target_spans = word_spans(tokenizer, source), word_spans(tokenizer, target)
    if len(source_spans) != len(target_spans):
        raise PromptWordError(
            f"replace mode needs prompts with the same number of words; the source has {len(source_spans)} "
            f"({source!r}) and the target {len(target_spans)} ({target!r}). Use refine mode "
            "(is_replace_controller: false), which aligns prompts of different lengths"
        )
    mapper = torch.zeros(length, length)
    mapper[0, 0] = 1.0
    for (_, source_pos), (_, target_pos) in zip(source_spans, target_spans):
        if len(source_pos) == len(target_pos):
            mapper[source_pos, target_pos] = 1.0
        else:
            mapper[torch.tensor(source_pos)[:, None], torch.tensor(target_pos)[None, :]] = 1.0 / len(target_pos)
    source_end, target_end = _prompt_end(source_spans), _prompt_end(target_spans)
    tail = length - max(source_end, target_end)
    for k in range(max(tail, 0)):
        mapper[source_end + k, target_end + k] = 1.0
    return mapper


def refinement_mapper(tokenizer, source: str, target: str, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt-to-prompt "refine": for each target token, the aligned source token, and whether one exists.

    Returns `(index, aligned)`, both `[length]`: `target_probs[..., j] = source_probs[..., index[j]]` where
    `aligned[j] == 1`; tokens new in the target (`aligned == 0`) keep their own attention. The alignment is the
    longest-matching-blocks alignment of the two token sequences (the original uses a global alignment; both keep
    shared words in order).
    """
    def padded(prompt: str) -> list[int]:
        ids = list(tokenizer(prompt, padding="max_length", max_length=length, truncation=True).input_ids)
        return ids + [-1] * (length - len(ids))

    source_ids, target_ids = padded(source), padded(target)
    index = torch.zeros(length, dtype=torch.long)
    aligned = torch.zeros(length)
    matcher = difflib.SequenceMatcher(None, source_ids, target_ids, autojunk=False)
    for block in matcher.get_matching_blocks():
        index[block.b : block.b + block.size] = torch.arange(block.a, block.a + block.size)
        aligned[block.b : block.b + block.size] = 1.0
    return index, aligned


def token_weights(tokenizer, prompt: str, word_values: Mapping[str, float], length: int, *, role: str = "word") -> torch.Tensor:
    """`[length]` ones, with `value` at the positions of each `word` of `prompt` (prompt-to-prompt "reweight")."""
    weights = torch.ones(length)
    for word, value in word_values.items():
        weights[word_positions(tokenizer, prompt, [word], role=role)] = float(value)
    return weights


def word_indicator(tokenizer, prompt: str, words: Iterable[str], length: int, *, role: str = "word") -> torch.Tensor:
    """`[length]` zeros with 1 at the token positions of `words` in `prompt` (which tokens a blend mask sums)."""
    indicator = torch.zeros(length)
    indicator[word_positions(tokenizer, prompt, words, role=role)] = 1.0
    return indicator


def cross_attention_schedule(
    tokenizer, target: str, num_steps: int, default: float, per_word: Mapping[str, float], length: int
) -> torch.Tensor:
    """`[num_steps, length]` mixing weights: 1 where the fused cross-attention replaces the target's own.

    Every token is fused during the first `int(default * num_steps)` steps; the tokens of each word in `per_word`
    (words of the target prompt) during the first `int(fraction * num_steps)` steps instead.
    """
    alpha = torch.zeros(num_steps, length)
    alpha[: int(default * num_steps)] = 1.0
    for word, fraction in per_word.items():
        positions = word_positions(tokenizer, target, [word], role="cross_replace_words entry")
        alpha[:, positions] = 0.0
        alpha[: int(fraction * num_steps), positions] = 1.0
    return alpha


def changed_words(source: str, target: str) -> list[str]:
    """Words of `source` that the target replaces or drops (the edited object), in order."""
    source_words = source.split()
    matcher = difflib.SequenceMatcher(
        None, [normalise_word(w) for w in source_words], [normalise_word(w) for w in target.split()], autojunk=False
    )
    changed = []
    for tag, i1, i2, _, _ in matcher.get_opcodes():
        if tag in ("replace", "delete"):
            changed += source_words[i1:i2]
    return changed
