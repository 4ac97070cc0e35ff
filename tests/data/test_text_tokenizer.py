"""TextTokenizer: training, PAD = 0, empty/odd text, truncation, save/load round trip, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mmdistill.data.batch import PAD_ID
from mmdistill.data.transforms.text import TextTokenizer
from mmdistill.errors import DataError

CORPUS = [
    "the digit seven", "a handwritten three", "The number SEVEN is odd",
    "zwei plus drei", "Ünïcödé café naïve", "数字七 ist sieben", "три плюс четыре",
] * 3


@pytest.fixture(scope="module")
def tok() -> TextTokenizer:
    return TextTokenizer.train(CORPUS, vocab_size=120)


def test_pad_is_zero_and_never_emitted(tok: TextTokenizer) -> None:
    assert tok._tok.token_to_id("[PAD]") == PAD_ID == 0
    assert 10 < tok.vocab_size <= 120
    for text in CORPUS + ["unseen words zzz", "🙂 emoji"]:
        ids = tok.encode(text, max_length=64)
        assert ids.dtype == torch.long and ids.ndim == 1 and len(ids) >= 1
        assert (ids != PAD_ID).all() and (ids < tok.vocab_size).all()


def test_empty_and_control_text_give_one_unk(tok: TextTokenizer) -> None:
    for text in ["", "   ", "\x00\x07\u200b\t"]:
        ids = tok.encode(text, max_length=8)
        assert ids.tolist() == [tok.unk_id]


def test_lowercase_truncation_and_mixed_scripts(tok: TextTokenizer) -> None:
    assert tok.encode("THE DIGIT SEVEN", 16).tolist() == tok.encode("the digit seven", 16).tolist()
    assert len(tok.encode("the digit seven " * 20, max_length=5)) == 5
    # CJK characters are split into words of one character; known Cyrillic words are not UNK.
    cjk = tok.encode("数字七", 16).tolist()
    assert 3 <= len(cjk) <= 6 and tok.unk_id not in cjk
    assert tok.unk_id not in tok.encode("три", 16).tolist()
    assert tok.decode(tok.encode("the digit seven", 16)) == "the digit seven"
    # Unseen characters map to [UNK]; text spelling a special token is tokenized as plain text.
    assert tok.unk_id in tok.encode("🙂", 16).tolist()
    assert PAD_ID not in tok.encode("[PAD] [pad]", 16).tolist()
    with pytest.raises(ValueError, match="max_length"):
        tok.encode("x", 0)


def test_encode_batch_matches_encode(tok: TextTokenizer) -> None:
    texts = ["the digit", "", "sieben drei"]
    for a, b in zip(tok.encode_batch(texts, 4), [tok.encode(t, 4) for t in texts], strict=True):
        assert a.tolist() == b.tolist()


def test_save_load_round_trip(tok: TextTokenizer, tmp_path: Path) -> None:
    path = tok.save(tmp_path / "run")  # a directory → run/tokenizer.json
    assert path == tmp_path / "run" / "tokenizer.json" and path.is_file()
    json.loads(path.read_text())  # plain JSON, no pickle
    loaded = TextTokenizer.load(tmp_path / "run")
    assert loaded.vocab_size == tok.vocab_size
    for text in CORPUS + ["", "new words"]:
        assert loaded.encode(text, 32).tolist() == tok.encode(text, 32).tolist()


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found") as e:
        TextTokenizer.load(tmp_path / "tokenizer.json")
    assert "tokenizer.json" in str(e.value)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="not a valid tokenizer.json"):
        TextTokenizer.load(bad)
    # A valid tokenizer whose [PAD] is not id 0 is refused.
    from tokenizers import Tokenizer, models

    other = Tokenizer(models.WordLevel({"[UNK]": 0, "[PAD]": 1}, unk_token="[UNK]"))
    other.save(str(tmp_path / "other.json"))
    with pytest.raises(DataError, match="retrain"):
        TextTokenizer.load(tmp_path / "other.json")


def test_train_is_deterministic() -> None:
    # WordPiece training in `tokenizers` is not (huggingface/tokenizers#1794); our BPE setup is.
    vocabs = [TextTokenizer.train(iter(CORPUS), vocab_size=80)._tok.get_vocab() for _ in range(5)]
    assert all(v == vocabs[0] for v in vocabs)
