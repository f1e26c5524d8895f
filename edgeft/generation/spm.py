"""A SentencePiece tokenizer rebuilt from a GGUF's own vocabulary.

transformers 4.57 turns a GGUF's SentencePiece vocabulary (`tokenizer.ggml.model` llama: Gemma's,
Llama 2's, Mistral's) into a tokenizer.json that cuts text into other pieces than the model was trained
on: Gemma 3's "Where is the Eiffel Tower ?" becomes 12 tokens where Gemma's own tokenizer makes 6. The
GGUF holds everything SentencePiece needs (every piece, its score and type), so the import writes the
SentencePiece model back from it and builds the fast tokenizer from that, as transformers does for a
model published with its tokenizer.model; the import then checks it against llama.cpp's tokenizer.
"""
from __future__ import annotations

from pathlib import Path

ID_KEYS = {"unk_id": "tokenizer.ggml.unknown_token_id", "bos_id": "tokenizer.ggml.bos_token_id",
           "eos_id": "tokenizer.ggml.eos_token_id", "pad_id": "tokenizer.ggml.padding_token_id"}


def sentencepiece_model(path: Path) -> bytes | None:
    """The serialized SentencePiece model of a GGUF whose tokenizer is one; None for other tokenizers."""
    import gguf

    fields = gguf.GGUFReader(str(path)).fields

    def values(key):
        return [fields[key].parts[i] for i in fields[key].data]

    if bytes(values("tokenizer.ggml.model")[0]).decode() != "llama":
        return None
    from sentencepiece import sentencepiece_model_pb2 as pb

    model = pb.ModelProto()
    spec = model.trainer_spec
    spec.model_type, spec.byte_fallback = pb.TrainerSpec.BPE, True
    for attr, key in ID_KEYS.items():
        if key in fields:
            setattr(spec, attr, int(values(key)[0][0]))
    prefix = "tokenizer.ggml.add_space_prefix"
    model.normalizer_spec.name = "identity"
    model.normalizer_spec.add_dummy_prefix = bool(values(prefix)[0][0]) if prefix in fields else True
    model.normalizer_spec.remove_extra_whitespaces = False
    pieces = zip(values("tokenizer.ggml.tokens"), values("tokenizer.ggml.scores"), values("tokenizer.ggml.token_type"))
    for i, (text, score, kind) in enumerate(pieces):
        piece = model.pieces.add()
        piece.piece, piece.score = bytes(text).decode("utf-8", errors="replace"), float(score[0])
        piece.type = pb.ModelProto.SentencePiece.UNKNOWN if i == spec.unk_id else int(kind[0])
    spec.vocab_size = len(model.pieces)
    return model.SerializeToString()


def sentencepiece_tokenizer(path: Path, arch: str, gguf_tokenizer, folder: Path):
    """The fast tokenizer built from the GGUF's SentencePiece model (written to `folder`), with the
    special tokens and chat template transformers read from the GGUF; None when it is not SentencePiece."""
    from transformers import GemmaTokenizerFast, LlamaTokenizerFast

    data = sentencepiece_model(path)
    if data is None:
        return None
    (Path(folder) / "tokenizer.model").write_bytes(data)
    cls = GemmaTokenizerFast if arch.startswith("gemma") else LlamaTokenizerFast
    kind = {"legacy": False} if cls is LlamaTokenizerFast else {}
    tokenizer = cls(vocab_file=str(Path(folder) / "tokenizer.model"), bos_token=gguf_tokenizer.bos_token,
                    eos_token=gguf_tokenizer.eos_token, unk_token=gguf_tokenizer.unk_token,
                    pad_token=gguf_tokenizer.pad_token, add_bos_token=False, add_eos_token=False, **kind)
    tokenizer.chat_template = gguf_tokenizer.chat_template
    return tokenizer
