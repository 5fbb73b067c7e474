"""Tokenizers and text encoders built in code, so tiny pipelines accept text prompts offline.

Three tokenizers share one English word list (:data:`WORDS`; the CLIP and T5 ones take another ``words`` list,
such as the shapes world's vocabulary):

* a real :class:`~transformers.CLIPTokenizer` whose ``vocab.json``/``merges.txt`` are written at run time;
  the merges are built so every listed word is a single token and any other text still tokenizes
  (byte-level fallback);
* a T5-style and a Llama-3-style fast tokenizer (``tokenizers`` WordLevel model wrapped in
  :class:`~transformers.PreTrainedTokenizerFast`): one token per lower-cased word, punctuation mark or
  digit; unknown words become ``<unk>``. One token per word keeps word-to-token alignment trivial for
  editing methods (which swap or weight the tokens of named words).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    LlamaConfig,
    LlamaModel,
    PreTrainedTokenizerFast,
    T5Config,
    T5EncoderModel,
    UMT5Config,
    UMT5EncoderModel,
)

__all__ = [
    "WORDS",
    "TEXT_DIM",
    "write_clip_tokenizer",
    "clip_text_encoder",
    "t5_tokenizer",
    "t5_encoder",
    "umt5_encoder",
    "llama_tokenizer",
    "llama_encoder",
]

WORDS: tuple[str, ...] = tuple(
    dict.fromkeys(
        """
    a an the and or but of in on at to from with without by for over under into onto through across
    near beside behind above below between around along up down out off inside outside
    is are was were be being been has have had do does did can will would should may might not no yes
    this that these those it its they them their he she his her we our you your i my me who what where
    when why how which very more most less many much few some any all each every other another same
    one two three four five six seven eight nine ten first second third last next new old young
    big small large tiny huge little tall short long wide narrow thin thick high low deep
    red orange yellow green blue purple pink brown black white gray grey golden silver dark bright colorful
    light shadow sun moon star stars sky cloud clouds rain snow wind storm fog mist fire smoke water ice
    sea ocean river lake beach sand wave waves island mountain mountains hill hills valley forest tree trees
    flower flowers grass leaf leaves garden field desert rock rocks stone cave road street city town village
    house home building tower bridge castle room window door wall floor table chair bed kitchen park
    man woman men women person people boy girl child children baby girls boys friend family crowd
    face head hair eye eyes hand hands arm arms leg legs body smile
    cat cats dog dogs horse horses bird birds fish cow sheep pig rabbit mouse bear lion tiger elephant
    monkey squirrel fox wolf deer duck chicken owl eagle butterfly bee snake frog turtle dragon robot
    car cars bus train boat ship plane airplane bike bicycle motorcycle truck rocket
    astronaut knight king queen warrior chef dancer painter soldier pilot
    food burger pizza apple cake bread coffee tea fruit banana cup
    walk walks walking run runs running jump jumps jumping fly flies flying swim swims swimming dance
    dances dancing sing singing play plays playing eat eats eating drink drinking ride rides riding
    sit sits sitting stand stands standing sleep sleeping look looking watch watching turn turning
    move moving moves spin spinning fall falling rise rising grow growing blow blowing wave waving
    hold holding carry carrying throw catch open close read write cook cooking drive driving
    slowly quickly fast slow gently smoothly together alone
    painting photo photograph picture image video film movie scene shot view portrait landscape
    style art drawing sketch cartoon anime realistic cinematic detailed beautiful ugly cute happy sad
    quality best worst bad good blurry sharp noisy clean clear soft hard warm cold hot
    camera zoom pan closeup background foreground center left right top bottom front back side
    day night morning evening sunset sunrise summer winter spring autumn
    describe detailing following aspects main content theme color shape size texture quantity text
    spatial relationships objects object actions events behaviors temporal physical movement changes
    environment atmosphere angles movements transitions used system user
    negative prompt
    """.split()
    )
)
"""Common English words that every test tokenizer maps to single tokens (includes the words of
diffusers' test prompts and of HunyuanVideo's default prompt template)."""

TEXT_DIM = 32
"""Hidden size of every tiny text encoder (2 heads x 16)."""

_PUNCTUATION = tuple(".,:;!?'\"()[]{}-_/&+*=#%@<>|~$`^\\")
_DIGITS = tuple("0123456789")
_LLAMA_SPECIALS = ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte-to-printable-character table (the alphabet of byte-level BPE)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + extra)
            extra += 1
    return table


def _bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """Split ``word`` with CLIP's BPE rule: repeatedly merge the adjacent pair of lowest rank."""
    parts = list(word[:-1]) + [word[-1] + "</w>"]
    while len(parts) > 1:
        pairs = [(ranks.get((a, b), len(ranks)), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
        rank, i = min(pairs)
        if rank == len(ranks):
            break
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
    return parts


@lru_cache(maxsize=4)
def _clip_vocab_and_merges(words: tuple[str, ...]) -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    """Byte-level base alphabet plus merges that turn every one of ``words`` into one token.

    Merges are appended word by word with the lowest priority so far; a word already reduced to one
    token never sees a later merge, so each word stays a single token.
    """
    alphabet = list(_bytes_to_unicode().values())
    tokens = alphabet + [c + "</w>" for c in alphabet]
    ranks: dict[tuple[str, str], int] = {}
    for word in words:
        while len(parts := _bpe(word, ranks)) > 1:
            ranks[(parts[0], parts[1])] = len(ranks)
            tokens.append(parts[0] + parts[1])
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    return vocab, tuple(ranks)


def write_clip_tokenizer(directory: str | Path, words: tuple[str, ...] = WORDS) -> CLIPTokenizer:
    """Write ``vocab.json`` and ``merges.txt`` of a small CLIP BPE vocabulary and load it offline.

    Every one of ``words`` (default :data:`WORDS`) is a single token; other text falls back to byte-level pieces.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab, merges = _clip_vocab_and_merges(tuple(words))
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (directory / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return CLIPTokenizer.from_pretrained(directory, model_max_length=77)


def clip_text_encoder(tokenizer: CLIPTokenizer) -> CLIPTextModel:
    """Random 2-layer CLIP text encoder (2 heads x 16) matching ``tokenizer``'s vocabulary and special ids."""
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_DIM,
        intermediate_size=2 * TEXT_DIM,
        num_attention_heads=2,
        num_hidden_layers=2,
        max_position_embeddings=tokenizer.model_max_length,
        projection_dim=TEXT_DIM,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config).eval()


def _word_level(specials: tuple[str, ...], unk: str, words: tuple[str, ...] = WORDS) -> Tokenizer:
    """WordLevel tokenizer: lower-cased ``words``, single punctuation marks and digits; ``specials`` first."""
    vocab = {token: i for i, token in enumerate(dict.fromkeys(specials + tuple(words) + _PUNCTUATION + _DIGITS))}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(), pre_tokenizers.Digits(individual_digits=True)]
    )
    tokenizer.add_special_tokens(list(specials))
    return tokenizer


def t5_tokenizer(model_max_length: int = 512, words: tuple[str, ...] = WORDS) -> PreTrainedTokenizerFast:
    """T5-style fast tokenizer over ``words`` (default :data:`WORDS`): ids ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2;
    appends ``</s>`` like T5."""
    tokenizer = _word_level(("<pad>", "</s>", "<unk>"), unk="<unk>", words=words)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=model_max_length,
    )


def _t5_config(cls: type[T5Config], tokenizer: PreTrainedTokenizerFast) -> T5Config:
    """Tiny T5/UMT5 encoder config (2 layers, 2 heads x 16, gated GELU like T5 v1.1)."""
    return cls(
        vocab_size=len(tokenizer),
        d_model=TEXT_DIM,
        d_kv=16,
        d_ff=2 * TEXT_DIM,
        num_layers=2,
        num_heads=2,
        relative_attention_num_buckets=8,
        feed_forward_proj="gated-gelu",
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )


def t5_encoder(tokenizer: PreTrainedTokenizerFast) -> T5EncoderModel:
    """Random tiny T5 encoder (CogVideoX, LTX-Video, Mochi)."""
    return T5EncoderModel(_t5_config(T5Config, tokenizer)).eval()


def umt5_encoder(tokenizer: PreTrainedTokenizerFast) -> UMT5EncoderModel:
    """Random tiny UMT5 encoder (Wan)."""
    return UMT5EncoderModel(_t5_config(UMT5Config, tokenizer)).eval()


def llama_tokenizer(model_max_length: int = 512) -> PreTrainedTokenizerFast:
    """Llama-3-style fast tokenizer with the header/eot specials of HunyuanVideo's prompt template.

    Prepends ``<|begin_of_text|>``; pads with ``<|end_of_text|>`` on the right.
    """
    tokenizer = _word_level(_LLAMA_SPECIALS + ("<unk>",), unk="<unk>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A",
        pair="<|begin_of_text|> $A <|begin_of_text|> $B",
        special_tokens=[("<|begin_of_text|>", 0)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|begin_of_text|>",
        eos_token="<|end_of_text|>",
        pad_token="<|end_of_text|>",
        unk_token="<unk>",
        model_max_length=model_max_length,
    )


def llama_encoder(tokenizer: PreTrainedTokenizerFast) -> LlamaModel:
    """Random 3-layer Llama (2 heads x 16): HunyuanVideo reads the third-to-last hidden state, a layer output."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_DIM,
        intermediate_size=2 * TEXT_DIM,
        num_hidden_layers=3,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaModel(config).eval()
