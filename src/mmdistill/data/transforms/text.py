"""A small subword tokenizer trained offline on the dataset's own text (HF ``tokenizers``).

Students need a vocabulary sized for them (a few thousand ids, not BERT's 30k), so we train one
on the training split instead of downloading one. Id 0 is ``[PAD]`` (= ``data.batch.PAD_ID``)
and id 1 is ``[UNK]``; text ids never include 0, even for text that spells ``"[PAD]"``.

The model is byte-pair encoding with SentencePiece-style word-start markers (``▁``), not
WordPiece: the ``tokenizers`` WordPiece trainer assigns its ``##`` continuation ids in hash-map
order, so the same corpus gives a different vocabulary from run to run
(huggingface/tokenizers#1794). BPE without a continuation prefix builds its alphabet sorted and
breaks merge ties by id, so training is reproducible.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from mmdistill.data.batch import PAD_ID
from mmdistill.errors import DataError

PAD_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"
SPECIAL_TOKENS: tuple[str, ...] = (PAD_TOKEN, UNK_TOKEN)
TOKENIZER_FILE = "tokenizer.json"


def _resolve(path: str | Path) -> Path:
    """A ``*.json`` path is the file itself; anything else is a directory holding tokenizer.json."""
    p = Path(path)
    return p if p.suffix.lower() == ".json" else p / TOKENIZER_FILE


class TextTokenizer:
    """BPE tokenizer with BERT normalization (control characters removed, CJK characters split,
    optional lowercasing with accent stripping), words and punctuation split as in BERT, and a
    ``[PAD]`` = 0 / ``[UNK]`` = 1 vocabulary. Characters never seen in training become ``[UNK]``.

    Build one with :meth:`train` or :meth:`load`; the constructor wraps an existing
    ``tokenizers.Tokenizer`` whose ``[PAD]`` id is 0.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        if tokenizer.token_to_id(PAD_TOKEN) != PAD_ID or tokenizer.token_to_id(UNK_TOKEN) is None:
            raise ValueError(f"tokenizer must map {PAD_TOKEN} to id {PAD_ID} and define {UNK_TOKEN}")
        self._tok = tokenizer
        # Text that literally contains "[PAD]" must not produce id 0 (the padding id); this
        # setting is not stored in tokenizer.json, so it is set on every construction.
        self._tok.encode_special_tokens = True
        self.unk_id: int = int(tokenizer.token_to_id(UNK_TOKEN))

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 2000, lowercase: bool = True) -> TextTokenizer:
        """Train a BPE vocabulary on ``texts`` (deterministic: same texts, same vocabulary).

        Args:
            texts: training strings (None entries are ignored).
            vocab_size: upper bound on the vocabulary size, special tokens included; a small corpus
                yields fewer ids.
            lowercase: lowercase and strip accents before tokenizing.

        Returns:
            the trained tokenizer.
        """
        if vocab_size < len(SPECIAL_TOKENS) + 1:
            raise ValueError(f"vocab_size must be >= {len(SPECIAL_TOKENS) + 1}, got {vocab_size}")
        tok = Tokenizer(models.BPE(unk_token=UNK_TOKEN, fuse_unk=True))
        tok.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=lowercase, lowercase=lowercase
        )
        # BERT splits words and punctuation; Metaspace marks word starts with "▁" for BPE.
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.BertPreTokenizer(), pre_tokenizers.Metaspace()]
        )
        tok.decoder = decoders.Metaspace()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False
        )
        # Special tokens are added first, in order, so [PAD] gets id 0 = PAD_ID.
        tok.train_from_iterator((t for t in texts if t is not None), trainer)
        return cls(tok)

    @property
    def vocab_size(self) -> int:
        """Number of ids (special tokens included); embedding tables need this many rows."""
        return int(self._tok.get_vocab_size())

    def encode(self, text: str, max_length: int) -> torch.Tensor:
        """Token ids of ``text``, truncated to ``max_length``.

        Text that yields no token (empty, whitespace or control characters only) becomes the
        single id of ``[UNK]`` so every sample has T >= 1 and no real token is ever ``[PAD]``.

        Args:
            text: any unicode string.
            max_length: maximum number of ids kept (the first ones).

        Shapes:
            output: int64 ``[T]`` with ``1 <= T <= max_length``.
        """
        return self.encode_batch([text], max_length)[0]

    def encode_batch(self, texts: Sequence[str], max_length: int) -> list[torch.Tensor]:
        """:meth:`encode` for many texts at once (the Rust side runs them in parallel)."""
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        encs = self._tok.encode_batch(list(texts), add_special_tokens=False)
        out = []
        for enc in encs:
            ids = enc.ids[:max_length] or [self.unk_id]
            out.append(torch.tensor(ids, dtype=torch.long))
        return out

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Text of ``ids`` (lowercased if trained so), for inspection and reports."""
        seq = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        return self._tok.decode([i for i in seq if i != PAD_ID])

    def save(self, path: str | Path) -> Path:
        """Write ``tokenizer.json`` (plain JSON, no pickle) to ``path``: a ``*.json`` file, or
        a directory that gets ``tokenizer.json``.

        Returns:
            the file written.
        """
        p = _resolve(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        self._tok.save(str(p))
        return p

    @classmethod
    def load(cls, path: str | Path) -> TextTokenizer:
        """Read a tokenizer written by :meth:`save`.

        Raises:
            DataError: the file is missing, not a tokenizer JSON, or lacks ``[PAD]`` = 0.
        """
        p = _resolve(path)
        if not p.is_file():
            raise DataError("tokenizer file not found; train one or point to the run's tokenizer.json",
                            path=str(p))
        try:
            tok = Tokenizer.from_file(str(p))
        except Exception as e:  # tokenizers raises a plain Exception for every parse error
            raise DataError(f"not a valid tokenizer.json ({e}); delete it and retrain", path=str(p)) from e
        if tok.token_to_id(PAD_TOKEN) != PAD_ID or tok.token_to_id(UNK_TOKEN) is None:
            raise DataError(
                f"tokenizer does not map {PAD_TOKEN} to id {PAD_ID} or lacks {UNK_TOKEN}; "
                "it was not written by mmdistill, retrain it with TextTokenizer.train",
                path=str(p),
            )
        return cls(tok)
