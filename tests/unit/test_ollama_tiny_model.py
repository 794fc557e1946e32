"""The tiny model of the ollama-tiny image (stacks/images/ollama-tiny/make_model.py): reproducible
bytes, a llama network of the stated size, a real SentencePiece-style vocabulary."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from stackcheck import resources

gguf = pytest.importorskip("gguf", reason="the ollama extra: pip install 'stackcheck[ollama]'")


@pytest.fixture(scope="module")
def make_model() -> Iterator[ModuleType]:
    path = resources.stacks_dir() / "images" / "ollama-tiny" / "make_model.py"
    spec = importlib.util.spec_from_file_location("make_model", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setitem(sys.modules, "make_model", module)  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    yield module
    monkeypatch.undo()


@pytest.fixture(scope="module")
def model(make_model: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny.gguf"
    make_model.write(path)
    return path


def field(reader: gguf.GGUFReader, key: str) -> object:
    return reader.fields[key].contents()


def test_the_same_script_writes_the_same_bytes(make_model: ModuleType, model: Path, tmp_path: Path) -> None:
    again = tmp_path / "again.gguf"
    make_model.write(again)
    assert hashlib.sha256(again.read_bytes()).digest() == hashlib.sha256(model.read_bytes()).digest()


def test_a_llama_network_small_enough_for_two_cores(model: Path) -> None:
    reader = gguf.GGUFReader(model)
    assert field(reader, "general.architecture") == "llama"
    assert (field(reader, "llama.block_count"), field(reader, "llama.embedding_length")) == (4, 128)
    assert (field(reader, "llama.attention.head_count"), field(reader, "llama.attention.head_count_kv")) == (4, 2)
    assert len(reader.tensors) == 3 + 9 * 4
    params = sum(int(t.n_elements) for t in reader.tensors)
    assert 500_000 < params < 2_000_000, params
    assert model.stat().st_size < 5_000_000


def test_the_vocabulary_is_a_real_sentencepiece_one(make_model: ModuleType, model: Path) -> None:
    reader = gguf.GGUFReader(model)
    assert field(reader, "tokenizer.ggml.model") == "llama"
    tokens = field(reader, "tokenizer.ggml.tokens")
    assert isinstance(tokens, list)
    assert len(tokens) == len(set(tokens)) == 512
    assert tokens[:3] == ["<unk>", "<s>", "</s>"]
    assert tokens[3:259] == [f"<0x{b:02X}>" for b in range(256)], "byte fallback for any text"
    # Pieces learned by byte-pair merges over the corpus: whole frequent words, with the word mark.
    assert {"\u2581the", "\u2581and", "\u2581stack"} <= set(tokens)
    scores = field(reader, "tokenizer.ggml.scores")
    assert isinstance(scores, list)
    learned = scores[259:]
    assert learned == sorted(learned, reverse=True), "an earlier merge has the higher priority"


def test_merges_are_deterministic_and_follow_frequency(make_model: ModuleType) -> None:
    pieces = make_model.learn_pieces("ab ab ab abc", 200)
    assert pieces == make_model.learn_pieces("ab ab ab abc", 200)
    # Most frequent pair first, a tie to the smaller pair: ("a", "b") and ("▁", "a") both count 4.
    learned = pieces[pieces.index("\u2581") + 1 :]
    assert learned == ["ab", "\u2581ab", "\u2581abc"], "then no pair is left: fewer pieces than asked"


def test_end_of_text_is_never_the_likely_token(make_model: ModuleType, model: Path) -> None:
    """The constant dimension no layer writes, which </s>'s output row alone reads, negatively."""
    reader = gguf.GGUFReader(model)
    tensors = {t.name: t.data.reshape(tuple(reversed([int(n) for n in t.shape]))) for t in reader.tensors}
    always, eos = make_model.ALWAYS, make_model.EOS
    assert (tensors["token_embd.weight"][:, always] == make_model.ALWAYS_VALUE).all()
    for i in range(4):
        for name in (f"blk.{i}.attn_output.weight", f"blk.{i}.ffn_down.weight"):
            assert not tensors[name][always].any(), name
    output = tensors["output.weight"]
    assert output[eos, always] == -make_model.EOS_SUPPRESSION
    assert not output[eos, :always].any()
    assert not output[eos, always + 1 :].any()
    assert not output[:eos, always].any()
    assert not output[eos + 1 :, always].any()
