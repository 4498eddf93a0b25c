"""google-research/albert names (also brightmart's ``*_google`` zips).

Layers live in ``bert/encoder/transformer/group_{g}/inner_group_{i}``; attention is ``attention_1`` (kernels
stored 2-D ``[H, N·D]``, so a plain transpose suffices), the FFN output is nested as
``ffn_1/intermediate/output/dense``, and the two LayerNorms sit directly under the inner group as
``LayerNorm`` and ``LayerNorm_1``. Canonical set ``k = g * inner_group_num + i``.
"""

from __future__ import annotations

from zoo.config import ModelConfig
from zoo.converters.names import NameMap, embeddings, linear, norm, pooler

SCHEME = "google-albert"


def inner_group(tf: str, k: int) -> NameMap:
    c = f"layers.{k}"
    return {
        **linear(f"{tf}/attention_1/self/query", f"{c}.attention.query"),
        **linear(f"{tf}/attention_1/self/key", f"{c}.attention.key"),
        **linear(f"{tf}/attention_1/self/value", f"{c}.attention.value"),
        **linear(f"{tf}/attention_1/output/dense", f"{c}.attention.output"),
        **norm(f"{tf}/LayerNorm", f"{c}.attention_norm"),
        **linear(f"{tf}/ffn_1/intermediate/dense", f"{c}.intermediate"),
        **linear(f"{tf}/ffn_1/intermediate/output/dense", f"{c}.output"),
        **norm(f"{tf}/LayerNorm_1", f"{c}.output_norm"),
    }


def encoder_names(config: ModelConfig) -> NameMap:
    names = embeddings()
    if config.has_mapping_in:
        names.update(linear("bert/encoder/embedding_hidden_mapping_in", "embeddings.mapping_in"))
    for g in range(config.num_hidden_groups):
        for i in range(config.inner_group_num):
            k = g * config.inner_group_num + i
            names.update(inner_group(f"bert/encoder/transformer/group_{g}/inner_group_{i}", k))
    names.update(pooler())
    return names
