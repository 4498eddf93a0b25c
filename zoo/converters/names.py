"""Building blocks shared by the per-scheme name maps: TF variable name → canonical parameter name.

A TF ``kernel`` is stored ``[in, out]`` and is transposed to ``torch.nn.Linear``'s ``[out, in]``;
``gamma``/``beta`` become ``weight``/``bias``. The canonical names are listed in docs/architecture.md.
"""

from __future__ import annotations

NameMap = dict[str, str]


def linear(tf: str, canonical: str) -> NameMap:
    return {f"{tf}/kernel": f"{canonical}.weight", f"{tf}/bias": f"{canonical}.bias"}


def norm(tf: str, canonical: str) -> NameMap:
    return {f"{tf}/gamma": f"{canonical}.weight", f"{tf}/beta": f"{canonical}.bias"}


def embeddings() -> NameMap:
    """Word, position and token-type tables and the embedding LayerNorm (same names in every scheme)."""
    return {
        "bert/embeddings/word_embeddings": "embeddings.word.weight",
        "bert/embeddings/position_embeddings": "embeddings.position.weight",
        "bert/embeddings/token_type_embeddings": "embeddings.token_type.weight",
        **norm("bert/embeddings/LayerNorm", "embeddings.norm"),
    }


def pooler() -> NameMap:
    return linear("bert/pooler/dense", "pooler")


#: Pretraining heads. ``cls/seq_relationship/output_weights`` is already ``[out, in]``.
MLM_HEAD: NameMap = {
    **linear("cls/predictions/transform/dense", "mlm.transform"),
    **norm("cls/predictions/transform/LayerNorm", "mlm.norm"),
    "cls/predictions/output_bias": "mlm.bias",
}
SEQ_RELATIONSHIP_HEAD: NameMap = {
    "cls/seq_relationship/output_weights": "seq_relationship.weight",
    "cls/seq_relationship/output_bias": "seq_relationship.bias",
}
#: The TF names of each checkpoint head (zoo.config.CHECKPOINT_HEADS).
HEAD_NAME_MAPS: dict[str, NameMap] = {"mlm": MLM_HEAD, "seq_relationship": SEQ_RELATIONSHIP_HEAD}
#: upstream ``run_classifier.py``'s head on the pooled output (google-research/bert and /albert, brightmart): two
#: variables outside the ``bert`` scope, ``output_weights`` already ``[num_labels, hidden]``.
CLASSIFIER_WEIGHTS = "output_weights"
CLASSIFIER_HEAD: NameMap = {CLASSIFIER_WEIGHTS: "classifier.weight", "output_bias": "classifier.bias"}
#: The fine-tuned task heads that have an upstream TF convention, by task (token classification has none).
TASK_NAME_MAPS: dict[str, NameMap] = {"sequence-classification": CLASSIFIER_HEAD}


def bert_layer(tf: str, k: int) -> NameMap:
    """One BERT-style layer (``layer_{n}`` in BERT, ``layer_shared`` in brightmart's albert_zh)."""
    c = f"layers.{k}"
    return {
        **linear(f"{tf}/attention/self/query", f"{c}.attention.query"),
        **linear(f"{tf}/attention/self/key", f"{c}.attention.key"),
        **linear(f"{tf}/attention/self/value", f"{c}.attention.value"),
        **linear(f"{tf}/attention/output/dense", f"{c}.attention.output"),
        **norm(f"{tf}/attention/output/LayerNorm", f"{c}.attention_norm"),
        **linear(f"{tf}/intermediate/dense", f"{c}.intermediate"),
        **linear(f"{tf}/output/dense", f"{c}.output"),
        **norm(f"{tf}/output/LayerNorm", f"{c}.output_norm"),
    }


def transposed(tf_name: str) -> bool:
    """Whether the stored array is ``[in, out]`` and must be transposed."""
    return tf_name.endswith("/kernel") or tf_name == "bert/embeddings/word_embeddings_2"
