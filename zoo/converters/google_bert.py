"""google-research/bert names: ``bert/encoder/layer_{n}/...``, one parameter set per layer."""

from __future__ import annotations

from zoo.config import ModelConfig
from zoo.converters.names import NameMap, bert_layer, embeddings, pooler

SCHEME = "google-bert"


def encoder_names(config: ModelConfig) -> NameMap:
    names = embeddings()
    for n in range(config.num_hidden_layers):
        names.update(bert_layer(f"bert/encoder/layer_{n}", n))
    names.update(pooler())
    return names
