"""Write a tiny llama-architecture GGUF model into DIR: `python make_model.py DIR` -> DIR/tiny.gguf.

No model hub: the weights are seeded random numbers (the answers are gibberish) and the tokenizer
is a real SentencePiece-style vocabulary (byte fallback, scored pieces) learned here by byte-pair
merges over the short text below. Same inputs, same bytes: the image build is reproducible.
Needs numpy and the `gguf` package (`pip install 'stackcheck[ollama]'`), pinned because the
file's bytes depend on the writer's version.
"""

from __future__ import annotations

import collections
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import gguf
import numpy as np

GGUF_VERSION = "0.19.0"
SEED = 13
EOS = 2  # </s>
SPACE = "\u2581"  # SentencePiece's word-boundary mark
CORPUS = """
A stack is a set of services that answer together: an edge proxy, an API, a database, a cache
and a language model. The suite boots the stack, sends requests, breaks links on purpose and
checks that every service recovers, that no stored record is lost, and that the answers stay
within their objectives. The model here is small and random; it answers with noise, yet every
token passes through the real tokenizer, the real weights and the real sampler, and the
stream arrives one piece at a time. Tests read fresh state, name the problem and the fix, and
clean up what they started. Latency, errors, throughput and recovery time are measured, not
guessed. When a check fails, the report says which service, which link and which number.
"""


# The model never ends an answer by itself (its answers end at max_tokens or the Modelfile's
# num_predict): with random weights, an end-of-text token sampled first was an empty answer, about 1
# in 800, and a stream with no token is an error to a load run. Dimension ALWAYS of the residual
# stream holds the constant ALWAYS_VALUE (every embedding has it, no layer writes to it), so after
# the final RMSNorm it is positive whatever the text; </s>'s output row reads only that dimension,
# with weight -EOS_SUPPRESSION: its logit is far below every other token's (those are ~N(0, 1)).
ALWAYS = 0
ALWAYS_VALUE = 4.0
EOS_SUPPRESSION = 20.0


@dataclass(frozen=True)
class Dims:
    vocab: int = 512
    embd: int = 128
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    ff: int = 384
    context: int = 2048


def learn_pieces(text: str, size: int) -> list[str]:
    """Byte-pair merges over the words of ``text`` until ``size`` pieces; ties broken by the pair itself."""
    words = collections.Counter(SPACE + w for w in text.split())
    pieces = sorted({ch for w in words for ch in w} | {chr(c) for c in range(33, 127)} | {SPACE})
    splits = {w: list(w) for w in words}
    while len(pieces) < size:
        pairs: collections.Counter[tuple[str, str]] = collections.Counter()
        for w, n in words.items():
            for a, b in zip(splits[w], splits[w][1:], strict=False):
                pairs[a, b] += n
        if not pairs:
            break
        (a, b), _ = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        if a + b not in pieces:  # ("ab", "c") and ("a", "bc") make the same piece
            pieces.append(a + b)
        for w, parts in splits.items():
            merged, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and parts[i] == a and parts[i + 1] == b:
                    merged.append(a + b)
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            splits[w] = merged
    return pieces


def vocabulary(size: int) -> tuple[list[str], list[float], list[int]]:
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL] + [gguf.TokenType.BYTE] * 256
    pieces = learn_pieces(CORPUS, size - len(tokens))
    scores = [0.0] * len(tokens) + [-float(i) for i in range(len(pieces))]  # earlier merge, higher priority
    return tokens + pieces, scores, [int(t) for t in types] + [int(gguf.TokenType.NORMAL)] * len(pieces)


def write(path: Path, dims: Dims = Dims()) -> None:
    if metadata.version("gguf") != GGUF_VERSION:
        raise SystemExit(f"gguf {GGUF_VERSION} is needed for reproducible bytes: pip install 'gguf=={GGUF_VERSION}'")
    tokens, scores, types = vocabulary(dims.vocab)
    head_dim = dims.embd // dims.heads
    rng = np.random.default_rng(SEED)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.08).astype(np.float32)

    w = gguf.GGUFWriter(path, "llama")
    w.add_name("stackcheck-tiny")
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_context_length(dims.context)
    w.add_embedding_length(dims.embd)
    w.add_block_count(dims.layers)
    w.add_feed_forward_length(dims.ff)
    w.add_head_count(dims.heads)
    w.add_head_count_kv(dims.kv_heads)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(EOS)
    w.add_add_bos_token(True)
    w.add_add_space_prefix(True)

    def writes_residual(out: np.ndarray) -> np.ndarray:
        out[ALWAYS, :] = 0.0  # a layer's output leaves the constant dimension as it is
        return out

    # numpy shapes are GGUF's dimensions reversed: (out, in) for a matrix.
    embeddings = weight(len(tokens), dims.embd)
    embeddings[:, ALWAYS] = ALWAYS_VALUE
    w.add_tensor("token_embd.weight", embeddings)
    for i in range(dims.layers):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(dims.embd, np.float32))
        w.add_tensor(f"blk.{i}.attn_q.weight", weight(dims.heads * head_dim, dims.embd))
        w.add_tensor(f"blk.{i}.attn_k.weight", weight(dims.kv_heads * head_dim, dims.embd))
        w.add_tensor(f"blk.{i}.attn_v.weight", weight(dims.kv_heads * head_dim, dims.embd))
        w.add_tensor(f"blk.{i}.attn_output.weight", writes_residual(weight(dims.embd, dims.heads * head_dim)))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(dims.embd, np.float32))
        w.add_tensor(f"blk.{i}.ffn_gate.weight", weight(dims.ff, dims.embd))
        w.add_tensor(f"blk.{i}.ffn_up.weight", weight(dims.ff, dims.embd))
        w.add_tensor(f"blk.{i}.ffn_down.weight", writes_residual(weight(dims.embd, dims.ff)))
    w.add_tensor("output_norm.weight", np.ones(dims.embd, np.float32))
    output = weight(len(tokens), dims.embd)
    output[:, ALWAYS] = 0.0  # the constant shifts no token's logit ...
    output[EOS] = 0.0
    output[EOS, ALWAYS] = -EOS_SUPPRESSION  # ... but </s>'s, far down
    w.add_tensor("output.weight", output)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: make_model.py DIR  (writes DIR/tiny.gguf)")
    write(Path(sys.argv[1]) / "tiny.gguf")
