"""zoo's encoder against transformers 5 (independent implementation) on the same random weights.

Weights are random (LayerNorm too, so a swapped norm would show); names go through zoo.converters.hf_names;
outputs must agree to 1e-5 in float32.
"""

from __future__ import annotations

import dataclasses

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from zoo.config import TASK_HEADS, ModelConfig
from zoo.converters import hf_names
from zoo.errors import CheckpointError, UnsupportedError
from zoo.models.encoder import Encoder

ATOL = 1e-5

GOOGLE_ALBERT = ModelConfig(architecture="albert", vocab_size=97, embedding_size=16, hidden_size=32,
                            num_hidden_layers=4, num_hidden_groups=2, inner_group_num=2, num_attention_heads=4,
                            intermediate_size=48, hidden_act="relu", max_position_embeddings=40)
BERT = ModelConfig(architecture="bert", vocab_size=97, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                   intermediate_size=48, hidden_act="gelu_new", max_position_embeddings=40)
BRIGHTMART = ModelConfig(architecture="albert-brightmart", vocab_size=97, embedding_size=16, hidden_size=32,
                         num_hidden_layers=3, num_attention_heads=4, intermediate_size=48, hidden_act="gelu",
                         max_position_embeddings=40)


def random_model(config: ModelConfig, heads: str | None = "pretraining", seed: int = 0) -> Encoder:
    torch.manual_seed(seed)
    model = Encoder(config, heads=heads)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.2 * torch.randn_like(p))
    return model


def inputs(config: ModelConfig, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, config.vocab_size, (3, 11), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0  # padded rows: masked keys must behave like TF's -10000
    mask[2, 4:] = 0
    types = torch.zeros_like(ids)
    types[:, 5:] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def hf_model(config: ModelConfig, state_dict: dict, head: str):
    data = hf_names.transformers_config(config, head)
    cls = getattr(transformers, data["architectures"][0])
    hf_config = transformers.AutoConfig.for_model(**data)
    model = cls(hf_config).eval()
    model.load_state_dict(hf_names.to_transformers(state_dict, config, head), strict=True)
    return model


def close(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> None:
    if mask is not None:  # padded query positions are garbage in every implementation; compare real tokens
        a, b = a[mask.bool()], b[mask.bool()]
    assert a.shape == b.shape
    assert torch.allclose(a, b, atol=ATOL, rtol=0), float((a - b).abs().max())


@pytest.mark.parametrize("config", [GOOGLE_ALBERT, BERT, BRIGHTMART], ids=["google-albert", "bert", "brightmart"])
def test_pretraining_outputs_match_transformers(config: ModelConfig) -> None:
    ours = random_model(config)
    theirs = hf_model(config, ours.state_dict(), "pretraining")
    x = inputs(config)
    with torch.no_grad():
        out = ours(**x, output_hidden_states=True)
        ref = theirs(**x, output_hidden_states=True)
    close(out.mlm_logits, ref.prediction_logits, x["attention_mask"])
    close(out.seq_relationship_logits, ref.seq_relationship_logits if config.architecture == "bert"
          else ref.sop_logits)
    assert len(out.hidden_states) == len(ref.hidden_states) == len(config.layer_schedule()) + 1
    for a, b in zip(out.hidden_states, ref.hidden_states):
        close(a, b, x["attention_mask"])


@pytest.mark.parametrize("config", [GOOGLE_ALBERT, BERT, BRIGHTMART], ids=["google-albert", "bert", "brightmart"])
def test_base_model_outputs_match_transformers(config: ModelConfig) -> None:
    ours = random_model(config, heads=None)
    theirs = hf_model(config, ours.state_dict(), None)
    x = inputs(config)
    with torch.no_grad():
        out, ref = ours(**x), theirs(**x)
    close(out.last_hidden_state, ref.last_hidden_state, x["attention_mask"])
    close(out.pooler_output, ref.pooler_output)


def test_masked_lm_export_has_no_pooler_and_matches() -> None:
    ours = random_model(GOOGLE_ALBERT, heads="mlm")
    theirs = hf_model(GOOGLE_ALBERT, ours.state_dict(), "mlm")
    x = inputs(GOOGLE_ALBERT)
    with torch.no_grad():
        close(ours(**x).mlm_logits, theirs(**x).logits, x["attention_mask"])


@pytest.mark.parametrize("config", [GOOGLE_ALBERT, BERT], ids=["google-albert", "bert"])
@pytest.mark.parametrize("head", ["pretraining", "mlm", None])
def test_names_round_trip(config: ModelConfig, head: str | None) -> None:
    ours = random_model(config, heads=head)
    sd = ours.state_dict()
    if head == "mlm":  # transformers' ForMaskedLM models have no pooler
        sd = {k: v for k, v in sd.items() if not k.startswith("pooler.")}
    back = hf_names.from_transformers(hf_names.to_transformers(sd, config, head), config)
    assert set(back) == set(sd)
    assert all(torch.equal(back[k], sd[k]) for k in sd)


def test_albert_with_e_equal_h_exports_identity_mapping_and_imports_back() -> None:
    config = ModelConfig(architecture="albert", vocab_size=50, embedding_size=32, hidden_size=32,
                         num_hidden_layers=2, num_attention_heads=4, intermediate_size=40)
    ours = random_model(config)
    theirs = hf_model(config, ours.state_dict(), "pretraining")
    x = inputs(config)
    with torch.no_grad():
        close(ours(**x).last_hidden_state, theirs.albert(**x).last_hidden_state, x["attention_mask"])
    sd = hf_names.to_transformers(ours.state_dict(), config)
    sd["albert.encoder.embedding_hidden_mapping_in.bias"] = torch.full((32,), 0.5)
    with pytest.raises(UnsupportedError, match="embedding_hidden_mapping_in"):
        hf_names.from_transformers(sd, config)


def test_brightmart_pre_ln_has_no_transformers_equivalent() -> None:
    config = ModelConfig(**{**BRIGHTMART.to_dict(), "ln_type": "preln"})
    with pytest.raises(UnsupportedError, match="pre-LN"):
        hf_names.to_transformers(random_model(config).state_dict(), config)
    with pytest.raises(UnsupportedError):
        hf_names.transformers_config(config)


def test_mismatched_state_dict_names_the_keys() -> None:
    sd = hf_names.to_transformers(random_model(BERT).state_dict(), BERT)
    del sd["bert.encoder.layer.2.output.dense.weight"]
    sd["bert.encoder.layer.3.output.dense.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"missing bert\.encoder\.layer\.2\.output\.dense\.weight.*"
                                             r"unexpected bert\.encoder\.layer\.3"):
        hf_names.from_transformers(sd, BERT)


def test_transformers_config_round_trip() -> None:
    for config in (GOOGLE_ALBERT, BERT):
        assert hf_names.config_from_transformers(hf_names.transformers_config(config)) == config
    data = hf_names.transformers_config(BRIGHTMART)
    assert data["model_type"] == "albert" and data["embedding_size"] == BRIGHTMART.hidden_size
    assert data["tokenizer_class"] == "BertTokenizer"


def with_task(config: ModelConfig, task: str) -> ModelConfig:
    """``config`` as a fine-tuned model's: its task, labels in id order, tag scheme and classifier dropout."""
    token = task == "token-classification"
    return dataclasses.replace(config, task=task, labels=("O", "B-X", "I-X", "B-Y", "I-Y") if token else ("a", "b", "c"),
                               tag_scheme="bio" if token else None, classifier_dropout_prob=0.2)


@pytest.mark.parametrize("task", TASK_HEADS)
@pytest.mark.parametrize("config", [GOOGLE_ALBERT, BERT, BRIGHTMART], ids=["google-albert", "bert", "brightmart"])
def test_task_heads_match_transformers_task_classes(config: ModelConfig, task: str) -> None:
    config = with_task(config, task)
    ours = random_model(config, heads=task)
    theirs = hf_model(config, ours.state_dict(), task)
    assert type(theirs).__name__.endswith({"token-classification": "ForTokenClassification",
                                           "sequence-classification": "ForSequenceClassification"}[task])
    assert theirs.config.id2label == dict(enumerate(config.labels)) and theirs.dropout.p == 0.2
    x = inputs(config)
    with torch.no_grad():
        close(ours(**x).logits, theirs(**x).logits, x["attention_mask"] if task == "token-classification" else None)


@pytest.mark.parametrize("task", TASK_HEADS)
@pytest.mark.parametrize("config", [GOOGLE_ALBERT, BERT], ids=["google-albert", "bert"])
def test_task_names_and_configs_round_trip(config: ModelConfig, task: str) -> None:
    config = with_task(config, task)
    sd = random_model(config, heads=task).state_dict()
    if task == "token-classification":  # transformers' token classifiers have no pooler
        sd = {k: v for k, v in sd.items() if not k.startswith("pooler.")}
    back = hf_names.from_transformers(hf_names.to_transformers(sd, config, task), config)
    assert set(back) == set(sd) and all(torch.equal(back[k], sd[k]) for k in sd)
    if task == "token-classification":  # a pooler saved with a tagger anyway is read, not refused
        full = random_model(config, heads=task).state_dict()
        pooler = hf_names.name_map(config, None, prefixed=True)
        theirs = {**hf_names.to_transformers(full, config, task),
                  **{pooler[f"pooler.{p}"]: full[f"pooler.{p}"] for p in ("weight", "bias")}}
        assert torch.equal(hf_names.from_transformers(theirs, config)["pooler.weight"], full["pooler.weight"])
    data = hf_names.transformers_config(config, task)
    assert data["id2label"] == {str(i): label for i, label in enumerate(config.labels)}
    assert hf_names.config_from_transformers(data) == config
    with pytest.raises(ValueError, match="needs a config with that task"):
        hf_names.transformers_config(GOOGLE_ALBERT, task)
