"""zoo.load from converted and transformers-layout directories: outputs against transformers on the same
weights, meta-device loading, dtypes, position extension, task heads, errors, fill_mask and embed."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from safetensors.torch import save_file

import zoo
from zoo.config import ModelConfig
from zoo.converters import hf_names
from zoo.errors import CheckpointError, NotFoundError, UsageError
from zoo.loader import torch_dtype
from zoo.models.encoder import Encoder

CHARS = list("今天天气很好不错坏冷热我你他们的是在了有和人这中大为上个国以要")
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *dict.fromkeys(CHARS), "。", "，", "the", "##s"]
CONFIG = ModelConfig(architecture="albert", vocab_size=len(VOCAB), embedding_size=16, hidden_size=32,
                     num_hidden_layers=2, num_attention_heads=4, intermediate_size=48, hidden_act="gelu_new",
                     max_position_embeddings=24)
TEXTS = ["今天天气很好。", "我们的国家", "你好"]


def random_state(config: ModelConfig, heads: str | None = "pretraining", seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = Encoder(config, heads=heads)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_((1 if name.endswith("norm.weight") else 0) + 0.2 * torch.randn_like(p))
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def write_converted(directory: Path, config: ModelConfig = CONFIG, heads: str | None = "pretraining",
                    state: dict | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    save_file(state if state is not None else random_state(config, heads), str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps(config.to_dict()), encoding="utf-8")
    (directory / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    return directory


def reference(state: dict, config: ModelConfig = CONFIG):
    data = hf_names.transformers_config(config)
    model = getattr(transformers, data["architectures"][0])(transformers.AutoConfig.for_model(**data)).eval()
    model.load_state_dict(hf_names.to_transformers(state, config), strict=True)
    return model


@pytest.fixture
def converted(tmp_path: Path) -> tuple[Path, dict]:
    state = random_state(CONFIG)
    return write_converted(tmp_path / "converted", state=state), state


def test_load_converted_dir_matches_transformers(converted: tuple[Path, dict]) -> None:
    path, state = converted
    loaded = zoo.load(path, device="cpu", heads="pretraining")
    assert isinstance(loaded, zoo.Loaded) and loaded.manifest is None and loaded.config == CONFIG
    batch = loaded.tokenizer(TEXTS, padding=True, return_tensors="pt")
    assert batch["attention_mask"].min() == 0  # padding is exercised
    out = loaded(TEXTS, output_hidden_states=True)
    with torch.no_grad():
        ref = reference(state)(**batch, output_hidden_states=True)
    real = batch["attention_mask"].bool()
    assert torch.allclose(out.mlm_logits[real], ref.prediction_logits[real], atol=1e-5, rtol=0)
    assert torch.allclose(out.seq_relationship_logits, ref.sop_logits, atol=1e-5, rtol=0)
    assert torch.allclose(out.hidden_states[-1][real], ref.hidden_states[-1][real], atol=1e-5, rtol=0)


def test_meta_loading_leaves_no_meta_tensors_and_no_grad(converted: tuple[Path, dict]) -> None:
    path, state = converted
    model = zoo.load(path, device="cpu", heads="sequence-classification", num_labels=3).model
    tensors = dict(model.state_dict())
    assert tensors and not any(t.is_meta for t in tensors.values())
    assert all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors.values())
    assert not any(p.requires_grad for p in model.parameters()) and not model.training
    assert torch.equal(tensors["embeddings.word.weight"], state["embeddings.word.weight"])
    assert "mlm.bias" not in tensors  # heads not asked for are not loaded


@pytest.mark.parametrize(("dtype", "tol"), [("float16", 5e-3), ("bfloat16", 3e-2), (torch.bfloat16, 3e-2)])
def test_half_precision_is_close_to_float32(converted: tuple[Path, dict], dtype, tol: float) -> None:
    path, _ = converted
    full = zoo.load(path, device="cpu", heads="mlm")
    half = zoo.load(path, device="cpu", dtype=dtype, heads="mlm")
    assert all(p.dtype == torch_dtype(dtype) for p in half.model.parameters())
    a, b = full(TEXTS), half(TEXTS)
    real = full.encode(TEXTS)["attention_mask"].bool()
    assert b.last_hidden_state.dtype == half.model.embeddings.word.weight.dtype
    for x, y in ((a.last_hidden_state, b.last_hidden_state), (a.mlm_logits, b.mlm_logits)):
        err = (x[real] - y[real].float()).abs().max() / x[real].abs().max()
        assert err < tol, float(err)  # relative to the output's scale (docs/python-api.md)


def test_position_extension_keeps_learned_rows(converted: tuple[Path, dict], caplog: pytest.LogCaptureFixture) -> None:
    path, state = converted
    learned = state["embeddings.position.weight"]
    with caplog.at_level(logging.WARNING, logger="zoo"):
        copy = zoo.load(path, device="cpu", max_position_embeddings=60)
    assert "not trained" in caplog.text and "24 to 60" in caplog.text
    table = copy.model.embeddings.position.weight
    assert table.shape == (60, CONFIG.embedding_width)
    assert torch.equal(table[:24], learned) and torch.equal(table[24:48], learned) and torch.equal(table[48:], learned[:12])
    assert copy.tokenizer.model_max_length == 60 and copy.config.max_position_embeddings == 60
    long_ids = torch.randint(5, len(VOCAB), (1, 50))
    assert copy.model(long_ids).last_hidden_state.shape == (1, 50, 32)
    torch.manual_seed(0)
    random = zoo.load(path, device="cpu", max_position_embeddings=2000, position_init="random").model
    new = random.embeddings.position.weight[24:]
    assert torch.equal(random.embeddings.position.weight[:24], learned)
    assert abs(float(new.std()) - CONFIG.initializer_range) < 0.002
    with pytest.raises(UsageError, match="positions"):
        zoo.load(path, device="cpu").model(long_ids)
    with pytest.raises(UsageError, match="smaller"):
        zoo.load(path, device="cpu", max_position_embeddings=8)


@pytest.mark.parametrize(("heads", "field", "shape"), [
    ("sequence-classification", "logits", (3, 5)),
    ("token-classification", "logits", (3, None, 5)),
    ("question-answering", "start_logits", (3, None)),
])
def test_task_heads_are_fresh_with_initializer_range(tmp_path: Path, heads: str, field: str, shape) -> None:
    config = ModelConfig(**{**CONFIG.to_dict(), "hidden_size": 256, "num_attention_heads": 4, "initializer_range": 0.05})
    path = write_converted(tmp_path / "big", config, heads=None)
    loaded = zoo.load(path, device="cpu", heads=heads, num_labels=5)
    head = loaded.model.classifier if heads != "question-answering" else loaded.model.qa_outputs
    assert abs(float(head.weight.std()) - 0.05) < 0.01 and not head.bias.any()
    out = loaded(TEXTS)
    t = loaded.encode(TEXTS)["input_ids"].shape[1]
    assert getattr(out, field).shape == tuple(t if s is None else s for s in shape)
    assert out.mlm_logits is None
    if heads == "question-answering":
        assert out.end_logits.shape == out.start_logits.shape


def test_transformers_layout_dir_matches_transformers(tmp_path: Path) -> None:
    state = random_state(CONFIG)
    ref = reference(state)
    ref.save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    loaded = zoo.load(tmp_path / "hf", device="cpu", heads="pretraining")
    batch = loaded.encode(TEXTS)
    with torch.no_grad():
        want = ref(**batch)
    real = batch["attention_mask"].bool()
    assert torch.allclose(loaded(TEXTS).mlm_logits[real], want.prediction_logits[real], atol=1e-5, rtol=0)


def test_fill_mask_ranks_like_transformers(converted: tuple[Path, dict]) -> None:
    path, state = converted
    loaded = zoo.load(path, device="cpu", heads="mlm")
    text = "今天天气很[MASK]，我[MASK]。"
    result = loaded.fill_mask(text, top_k=4)
    assert len(result) == 2 and all(len(r) == 4 for r in result)
    batch = loaded.encode(text)
    with torch.no_grad():
        probs = reference(state)(**batch).prediction_logits[0].softmax(-1)
    positions = (batch["input_ids"][0] == loaded.tokenizer.mask_token_id).nonzero().flatten().tolist()
    for ranked, pos in zip(result, positions):
        want = probs[pos].topk(4)
        assert [r["id"] for r in ranked] == want.indices.tolist()
        assert [r["token"] for r in ranked] == [VOCAB[i] for i in want.indices.tolist()]
        assert all(abs(r["score"] - float(s)) < 1e-5 for r, s in zip(ranked, want.values))
    with pytest.raises(UsageError, match="no \\[MASK\\]"):
        loaded.fill_mask("今天天气很好")
    plain = zoo.load(path, device="cpu")  # no head asked for: fill_mask loads it from the same file, lazily
    assert not hasattr(plain.model, "mlm")
    assert plain.fill_mask(text, top_k=4) == result and hasattr(plain.model, "mlm")
    assert plain.fill_mask(text, top_k=10_000)[0][-1]["id"] < len(VOCAB)  # top_k beyond the vocab: all of it


def test_fill_mask_without_an_mlm_head_and_beyond_the_positions(tmp_path: Path) -> None:
    headless = zoo.load(write_converted(tmp_path / "headless", heads=None), device="cpu")
    with pytest.raises(UsageError, match="has no MLM head: fill-mask needs one"):
        headless.fill_mask("今天天气很[MASK]")
    loaded = zoo.load(write_converted(tmp_path / "heads"), device="cpu")  # 24 positions
    with pytest.raises(UsageError, match=r"1 of the 2 \[MASK\] tokens lie beyond the model's 24 positions"):
        loaded.fill_mask("[MASK]" + "好" * 40 + "[MASK]")
    with pytest.raises(UsageError, match="top_k"):
        loaded.fill_mask("[MASK]", top_k=0)


def test_embed_cls_and_mean(converted: tuple[Path, dict]) -> None:
    path, state = converted
    loaded = zoo.load(path, device="cpu")
    batch = loaded.encode(TEXTS)
    with torch.no_grad():
        hidden = reference(state).albert(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    assert torch.allclose(loaded.embed(TEXTS), hidden[:, 0], atol=1e-5)
    assert torch.allclose(loaded.embed(TEXTS, pooling="mean", batch_size=2), (hidden * mask).sum(1) / mask.sum(1),
                          atol=1e-5)
    pairs = loaded([("今天天气", "很好"), ("你好", "我们")])
    assert pairs.last_hidden_state.shape[0] == 2
    with pytest.raises(UsageError, match="pooling"):
        loaded.embed(TEXTS, pooling="max")
    assert loaded.embed([]).shape == (0, 32)


def test_embed_warns_when_it_truncates(converted: tuple[Path, dict], caplog: pytest.LogCaptureFixture) -> None:
    loaded = zoo.load(converted[0], device="cpu")
    with caplog.at_level(logging.WARNING, logger="zoo"):
        vectors = loaded.embed(["好" * 40, "你好"])
    assert vectors.shape == (2, 32) and "truncated a text of 42 tokens to the model's 24 positions" in caplog.text


def test_a_device_this_machine_lacks_is_a_usage_error(converted: tuple[Path, dict]) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")  # pragma: no cover - CI machines have none
    with pytest.raises(UsageError, match="device 'cuda' is not available: this machine has no usable CUDA GPU"):
        zoo.load(converted[0], device="cuda")
    with pytest.raises(UsageError, match="unknown device"):
        zoo.load(converted[0], device="tpu9")


def test_weights_that_do_not_match_config_are_rejected(tmp_path: Path) -> None:
    state = random_state(CONFIG)
    del state["layers.0.output.weight"]
    state["layers.7.output.weight"] = torch.zeros(2)
    path = write_converted(tmp_path / "bad", state=state)
    with pytest.raises(CheckpointError, match=r"missing 1 weight\(s\): layers\.0\.output\.weight; "
                                              r"unexpected 1 weight\(s\): layers\.7\.output\.weight"):
        zoo.load(path, device="cpu")
    state = random_state(CONFIG)
    state["pooler.weight"] = torch.zeros(32, 31)
    with pytest.raises(CheckpointError, match=r"pooler\.weight has shape \[32, 31\], config.json implies \[32, 32\]"):
        zoo.load(write_converted(tmp_path / "shape", state=state), device="cpu")
    headless = write_converted(tmp_path / "headless", heads=None)
    with pytest.raises(CheckpointError, match="has no mlm head"):
        zoo.load(headless, device="cpu", heads="mlm")
    (tmp_path / "garbage").mkdir()
    write_converted(tmp_path / "garbage")
    (tmp_path / "garbage" / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        zoo.load(tmp_path / "garbage", device="cpu")


@pytest.mark.parametrize(("key", "value", "message"), [
    ("layer_norm_eps", float("nan"), "expected a finite number, got nan"),
    ("num_attention_heads", True, "expected an integer, got a boolean"),
    ("hidden_size", "32", "expected an integer, got a string '32'"),
    ("intermediate_size", 48.0, "expected an integer, got a number 48.0"),
    ("hidden_dropout_prob", -0.5, r"must be in \[0, 1\)"),
    ("num_attention_heads", 5, "hidden_size 32 is not divisible by num_attention_heads 5"),
    ("ln_type", None, "expected one of postln, preln, got None"),
])
@pytest.mark.parametrize("layout", ["zoo", "transformers"])
def test_config_values_are_checked_where_a_directory_is_read(tmp_path: Path, layout: str, key: str, value,
                                                             message: str) -> None:
    """No receipt, no manifest: config.json alone is checked, key by key, before anything is built or exported."""
    path = write_converted(tmp_path / "m")
    data = json.loads((path / "config.json").read_text()) if layout == "zoo" else hf_names.transformers_config(CONFIG)
    if layout == "transformers" and key == "ln_type":
        key, value, message = "hidden_act", None, "expected one of relu, gelu, gelu_new, got None"
    data[key] = value
    (path / "config.json").write_text(json.dumps(data), encoding="utf-8")
    expected = re.escape(str(path / "config.json")) + f": {key}: {message}"
    with pytest.raises(CheckpointError, match=expected):
        zoo.load(path, device="cpu")
    with pytest.raises(CheckpointError, match=expected):
        zoo.export(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_vocab_must_have_one_line_per_embedding_row(tmp_path: Path) -> None:
    """A directory's vocab.txt gives line i the id i: fewer lines than embedding rows means the vocab belongs to
    another model (zoo's own ALBERT-ordered vocabs fill the rows past their last token with placeholders)."""
    path = write_converted(tmp_path / "m")
    (path / "vocab.txt").write_text("\n".join(VOCAB[:10]) + "\n", encoding="utf-8")
    with pytest.raises(CheckpointError, match=rf"vocab\.txt: 10 tokens for the {len(VOCAB)} embedding rows"):
        zoo.load(path, device="cpu")
    with pytest.raises(CheckpointError, match="10 tokens for"):
        zoo.export(path, tmp_path / "out")
    (path / "vocab.txt").write_text("\n".join(VOCAB[:-1]) + "\n", encoding="utf-8")
    with pytest.raises(CheckpointError, match=f"{len(VOCAB) - 1} tokens for the {len(VOCAB)} embedding rows"):
        zoo.load(path, device="cpu")
    (path / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    assert zoo.load(path, device="cpu").tokenizer.vocab_size == CONFIG.vocab_size


def test_bad_arguments(converted: tuple[Path, dict], tmp_path: Path) -> None:
    path, _ = converted
    with pytest.raises(UsageError, match="unknown dtype"):
        zoo.load(path, device="cpu", dtype="int8")
    with pytest.raises(UsageError, match="unknown heads"):
        zoo.load(path, device="cpu", heads="mlm-and-more")
    with pytest.raises(UsageError, match="position_init"):
        zoo.load(path, device="cpu", max_position_embeddings=48, position_init="zeros")
    with pytest.raises(UsageError, match="max_position_embeddings=48.5: expected an integer"):
        zoo.load(path, device="cpu", max_position_embeddings=48.5)
    with pytest.raises(NotFoundError, match="no such directory"):
        zoo.load(tmp_path / "nowhere")
    with pytest.raises(NotFoundError, match="not a directory"):
        zoo.load(path / "config.json")
    assert zoo.load(path).device.type == ("cuda" if torch.cuda.is_available() else "cpu")
