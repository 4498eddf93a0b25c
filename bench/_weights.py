"""Shared by the loading/inference benchmarks: random weights with real model shapes, written both as a
``zoo convert`` directory and as the equivalent transformers directory."""

from __future__ import annotations

import json
from pathlib import Path

SIZES = {
    # google-research/bert chinese_L-12_H-768_A-12
    "bert_base": dict(architecture="bert", vocab_size=21128, hidden_size=768, num_hidden_layers=12,
                      num_attention_heads=12, intermediate_size=3072, hidden_act="gelu_new"),
    # google-research/albert albert_xxlarge (one shared layer set, E=128)
    "albert_xxlarge": dict(architecture="albert", vocab_size=21128, embedding_size=128, hidden_size=4096,
                           num_hidden_layers=12, num_attention_heads=64, intermediate_size=16384,
                           hidden_act="relu"),
}


def vocab(size: int) -> list[str]:
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    return special + [chr(0x4E00 + i) for i in range(size - len(special))]


def make(size: str, root: Path) -> tuple[Path, Path, int]:
    """Write ``root/zoo`` and ``root/hf`` (if missing); returns both paths and the weights' bytes."""
    import torch
    from safetensors.torch import save_file

    from zoo.config import ModelConfig
    from zoo.converters import hf_names
    from zoo.models.encoder import Encoder

    config = ModelConfig(**SIZES[size])
    zoo_dir, hf_dir = root / "zoo", root / "hf"
    if not (zoo_dir / "config.json").is_file() or not (hf_dir / "config.json").is_file():
        with torch.device("meta"):
            shapes = {k: (v.shape, v.dtype) for k, v in Encoder(config, heads="pretraining").state_dict().items()}
        gen = torch.Generator().manual_seed(0)
        state = {k: torch.randn(shape, generator=gen) * 0.02 for k, (shape, _) in shapes.items()}
        for d in (zoo_dir, hf_dir):
            d.mkdir(parents=True, exist_ok=True)
            (d / "vocab.txt").write_text("\n".join(vocab(config.vocab_size)) + "\n", encoding="utf-8")
        save_file(state, str(zoo_dir / "model.safetensors"))
        (zoo_dir / "config.json").write_text(json.dumps(config.to_dict()), encoding="utf-8")
        hf_state = {k: v.clone() for k, v in hf_names.to_transformers(state, config).items()}  # untie for saving
        save_file(hf_state, str(hf_dir / "model.safetensors"))
        (hf_dir / "config.json").write_text(json.dumps(hf_names.transformers_config(config)), encoding="utf-8")
    weight_bytes = (zoo_dir / "model.safetensors").stat().st_size
    return zoo_dir, hf_dir, weight_bytes
