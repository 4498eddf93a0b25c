"""brightmart/albert_zh names: factorized ``word_embeddings`` + bias-free ``word_embeddings_2`` (E→H) and one
shared BERT-style layer ``bert/encoder/layer_shared``. Post-LN and pre-LN (config ``ln_type``) use the same
names; only the model's forward pass differs."""

from __future__ import annotations

from zoo.config import ModelConfig
from zoo.converters.names import NameMap, bert_layer, embeddings, pooler

SCHEME = "brightmart-albert"


def encoder_names(config: ModelConfig) -> NameMap:
    names = embeddings()
    names["bert/embeddings/word_embeddings_2"] = "embeddings.word_proj.weight"
    names.update(bert_layer("bert/encoder/layer_shared", 0))
    names.update(pooler())
    return names
