"""Pieces of hf: sources that need no server: safe checkpoint reading, shape checks, hashes and pins."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from zoo.config import ModelConfig
from zoo.converters import transformers as transformers_weights
from zoo.errors import CheckpointError
from zoo.fetch import hf
from zoo.registry.schema import FilePin, Source

CONFIG = ModelConfig(architecture="bert", vocab_size=11, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=16, max_position_embeddings=16)
RAN = []


def _mark(message: str) -> None:
    RAN.append(message)


class Payload:
    """Unpickling this would run code; weights_only refuses it."""

    def __reduce__(self):
        return (_mark, ("code ran",))


def _source(files: dict[str, FilePin] | None = None) -> Source:
    return Source(index=0, url=None, hf="acme/tiny", revision="0" * 40, sha256=None, size=None, archive="none",
                  format="pytorch", scheme=None, checkpoint="pytorch_model.bin", vocab="vocab.txt", files=files or {})


def test_pickle_with_code_is_refused_without_running_it(tmp_path: Path) -> None:
    path = tmp_path / "pytorch_model.bin"
    torch.save({"bert.embeddings.word_embeddings.weight": torch.zeros(2), "evil": Payload()}, path)
    with pytest.raises(CheckpointError, match="not a readable pytorch checkpoint"):
        transformers_weights.read_state(path, "pytorch")
    assert RAN == []
    torch.load(path, weights_only=False)  # the payload is real: a full unpickle runs it (harmlessly here)
    assert RAN == ["code ran"]


def test_legacy_gamma_beta_names_are_modernised(tmp_path: Path) -> None:
    path = tmp_path / "pytorch_model.bin"
    torch.save({"bert.embeddings.LayerNorm.gamma": torch.ones(8), "bert.embeddings.LayerNorm.beta": torch.zeros(8),
                "cls.predictions.bias": torch.zeros(11)}, path)
    assert sorted(transformers_weights.read_state(path, "pytorch")) == ["bert.embeddings.LayerNorm.bias",
                                                      "bert.embeddings.LayerNorm.weight", "cls.predictions.bias"]


def test_shapes_are_checked_against_the_config() -> None:
    shapes = transformers_weights.expected_shapes(CONFIG)
    state = {name: torch.zeros(shape) for name, shape in shapes.items()}
    transformers_weights.check_shapes(state, CONFIG, "ok")
    state["embeddings.word.weight"] = torch.zeros(12, 8)
    with pytest.raises(CheckpointError, match=r"embeddings.word.weight \[12, 8\] \(config implies \[11, 8\]\)"):
        transformers_weights.check_shapes(state, CONFIG, "weights")
    del state["embeddings.word.weight"]
    with pytest.raises(CheckpointError, match="missing embeddings.word.weight"):
        transformers_weights.check_shapes(state, CONFIG, "weights")


def test_combined_sha256_is_the_hash_of_a_sha256sum_listing() -> None:
    files = {"vocab.txt": "b" * 64, "model.safetensors": "a" * 64}
    listing = f"{'a' * 64}  model.safetensors\n{'b' * 64}  vocab.txt\n"
    assert hf.combined_sha256(files) == hashlib.sha256(listing.encode()).hexdigest()


