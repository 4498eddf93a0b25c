"""Issue 19, fine-tuned models travel: ``zoo export`` of a token or sequence classifier gives the transformers task
class (checked against transformers' own implementation and pipelines), a transformers task folder converts back
into a zoo task model, and the TF export / import use upstream ``run_classifier.py``'s ``output_weights`` and
``output_bias`` (checked against TensorFlow's recorded pooled output and run_classifier's formula)."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from support.cli import run
from support.tuned import LABELS, write_fine_tuned, write_upstream_classifier

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import zoo
from zoo.converters import convert
from zoo.converters.modeldir import read_config, read_receipt
from zoo.errors import CheckpointError, UsageError
from zoo.tagging import decode_tags
from zoo.tf import list_variables, read_tf_checkpoint

FIXTURES = Path(__file__).parent / "fixtures" / "tf"
ATOL = 1e-5
ARCHS = {"bert": ("Bert", "classifier_dropout"), "albert_google": ("Albert", "classifier_dropout_prob"),
         "albert_brightmart": ("Albert", "classifier_dropout_prob")}  # fixture: family, dropout key
TASKS = {"token-classification": ("ForTokenClassification", transformers.AutoModelForTokenClassification),
         "sequence-classification": ("ForSequenceClassification", transformers.AutoModelForSequenceClassification)}
TEXTS = ["今天天气很好", "我们在中国说", "他说了一个大国的事"]  # every character is one token of the fixture vocab


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], tuple[Path, Path]]:
    """(fixture, task) → (the fine-tuned-like zoo directory, its ``zoo export``)."""
    root = tmp_path_factory.mktemp("tasks")
    made = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZOO_HOME", str(root / "home"))
        for fixture in ARCHS:
            base = convert(FIXTURES / fixture, root / fixture / "base")
            for task in TASKS:
                tuned = write_fine_tuned(base, root / fixture / task, task,
                                         receipt={"results": {"f1": 0.875, "dev": {"precision": 0.9}}})
                made[fixture, task] = tuned, zoo.export(tuned, root / fixture / f"{task}-hf").path
    return made


def zoo_logits(directory: Path, texts: list[str]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    loaded = zoo.load(directory, device="cpu")
    batch = loaded.encode(texts)
    with torch.no_grad():
        return batch, loaded.model(**batch).logits


def close(ours: torch.Tensor, theirs: torch.Tensor, mask: torch.Tensor | None = None) -> None:
    if mask is not None:  # outputs at padded positions carry no meaning
        ours, theirs = ours[mask.bool()], theirs[mask.bool()]
    assert ours.shape == theirs.shape
    assert float((ours - theirs).abs().max()) <= ATOL


# ---------------------------------------------------------------------------------------- hf export
@pytest.mark.parametrize("task", sorted(TASKS))
@pytest.mark.parametrize("fixture", sorted(ARCHS))
def test_the_export_is_the_transformers_task_class(models: dict, fixture: str, task: str) -> None:
    tuned, export = models[fixture, task]
    family, dropout_key = ARCHS[fixture]
    suffix, auto = TASKS[task]
    labels = LABELS[task]
    config = json.loads((export / "config.json").read_text())
    assert config["architectures"] == [family + suffix]
    assert config["id2label"] == {str(i): label for i, label in enumerate(labels)}
    assert config["label2id"] == {label: i for i, label in enumerate(labels)} and config["num_labels"] == len(labels)
    assert config[dropout_key] == 0.2
    model, info = auto.from_pretrained(export, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert model.config.id2label == dict(enumerate(labels)) and model.dropout.p == 0.2
    batch, ours = zoo_logits(tuned, TEXTS)
    with torch.no_grad():
        theirs = model.eval()(**batch).logits
    close(ours, theirs, batch["attention_mask"] if task == "token-classification" else None)
    tokenizer = transformers.AutoTokenizer.from_pretrained(export)
    assert tokenizer(TEXTS, padding=True)["input_ids"] == batch["input_ids"].tolist()
    receipt = read_receipt(export)
    assert (receipt["task"], receipt["labels"], receipt["transformers_class"]) == (task, list(labels), family + suffix)


def test_the_tagging_pipeline_finds_the_entities_zoo_decodes(models: dict) -> None:
    """pipeline("token-classification", aggregation_strategy="simple") groups B-/I- tags as seqeval's default mode
    (zoo.tagging.decode_tags) reads them: same entities, same spans, each scored by its tokens' mean probability."""
    tuned, export = models["bert", "token-classification"]
    tagger = transformers.pipeline("token-classification", model=str(export), aggregation_strategy="simple")
    batch, logits = zoo_logits(tuned, TEXTS)
    probs = logits.softmax(-1)
    found = 0
    for row, text in enumerate(TEXTS):
        assert int(batch["attention_mask"][row].sum()) == len(text) + 2  # [CLS], one token per character, [SEP]
        best = probs[row, 1:len(text) + 1].max(-1)
        tags = [LABELS["token-classification"][int(i)] for i in best.indices]
        spans = decode_tags(tags)
        theirs = tagger(text)
        assert [(e["entity_group"], e["start"], e["end"], e["word"]) for e in theirs] == \
            [(s.label, s.start, s.end, text[s.start:s.end]) for s in spans]
        for entity, span in zip(theirs, spans):
            assert abs(float(entity["score"]) - float(best.values[span.start:span.end].mean())) <= ATOL
        found += len(spans)
    assert found >= 3  # the random head predicts entities: the comparison is not vacuous
    # zoo's own tag() on the same model finds exactly the pipeline's entities, with the same scores
    tagged = zoo.load(tuned, device="cpu").tag(TEXTS)
    for text, entities in zip(TEXTS, tagged):
        theirs = tagger(text)
        assert [(e["label"], e["start"], e["end"], e["text"]) for e in entities] == \
            [(e["entity_group"], e["start"], e["end"], e["word"]) for e in theirs]
        assert all(abs(a["score"] - float(b["score"])) <= ATOL for a, b in zip(entities, theirs))


def test_the_text_classification_pipeline_gives_zoo_s_classes(models: dict) -> None:
    tuned, export = models["albert_google", "sequence-classification"]
    classify = transformers.pipeline("text-classification", model=str(export))
    _, logits = zoo_logits(tuned, TEXTS)
    for text, row in zip(TEXTS, logits.softmax(-1)):
        (best,) = classify(text)
        assert best["label"] == LABELS["sequence-classification"][int(row.argmax())]
        every = {r["label"]: r["score"] for r in classify(text, top_k=None)}  # each class's probability
        assert every.keys() == set(LABELS["sequence-classification"])
        for label, p in zip(LABELS["sequence-classification"], row.tolist()):
            assert abs(every[label] - p) <= ATOL, label
    ours = zoo.load(tuned, device="cpu").classify(TEXTS, all_scores=True)
    for text, result in zip(TEXTS, ours):
        (best,) = classify(text)
        assert result["label"] == best["label"] and abs(result["score"] - best["score"]) <= ATOL
        assert all(abs(result["scores"][r["label"]] - r["score"]) <= ATOL for r in classify(text, top_k=None))


def _card(folder: Path) -> tuple[dict, str]:
    card = (folder / "README.md").read_text(encoding="utf-8")
    return yaml.safe_load(card.split("---")[1]), card


def test_the_card_says_what_the_model_predicts_and_how_well(models: dict, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    _, export = models["albert_brightmart", "token-classification"]
    front, card = _card(export)
    assert front["pipeline_tag"] == "token-classification" and "token-classification" in front["tags"]
    task = card.split("## Task\n", 1)[1].split("\n## ", 1)[0]
    assert "token classifier" in task and "`O`, `B-DISH`, `I-DISH`, `B-PLACE`, `I-PLACE`" in task and "BIO" in task
    assert "| f1 | 0.875 |" in task and "| dev.precision | 0.9 |" in task
    assert "after fine-tuning `tiny` (5 steps)" in card and "BIOES" not in card
    transformers_usage = re.findall(r"```python\n(.*?)```", card, re.S)[0]
    shutil.copytree(export, tmp_path / export.name)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(transformers_usage, "README.md", "exec"), scope)
    assert scope["tagger"].model.config.id2label[1] == "B-DISH"
    assert "loaded.tag(" in card and 'heads="mlm"' not in card

    _, export = models["bert", "sequence-classification"]
    front, card = _card(export)
    assert front["pipeline_tag"] == "text-classification" and "text classifier" in card and "`neg`, `neu`, `pos`" in card
    assert 'pipeline("text-classification"' in card and "loaded.classify(" in card


def test_results_come_from_the_receipt_else_from_results_json(models: dict, tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    base = models["bert", "sequence-classification"][0].parent / "base"
    tuned = write_fine_tuned(base, tmp_path / "tuned", "sequence-classification")
    (tuned / "results.json").write_text(json.dumps({"test": {"accuracy": 0.8125, "confusion": [[1, 2], [3, 4]]},
                                                    "note": "dev set"}))
    _, card = _card(zoo.export(tuned, tmp_path / "hf").path)
    assert "| test.accuracy | 0.8125 |" in card and "confusion" not in card and "dev set" not in card
    assert "| test.accuracy | 0.8125 |" in _card(zoo.export(tmp_path / "hf", tmp_path / "again").path)[1]
    (tuned / "results.json").write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="zoo.hub"):
        _, card = _card(zoo.export(tuned, tmp_path / "broken").path)
    assert "results.json is not readable JSON" in caplog.text and "| metric | value |" not in card


def test_a_bioes_tagger_exports_and_says_how_to_read_it(models: dict, tmp_path: Path) -> None:
    base = models["albert_google", "token-classification"][0].parent / "base"
    labels = ("O", "B-DISH", "I-DISH", "E-DISH", "S-DISH")
    tuned = write_fine_tuned(base, tmp_path / "tuned", "token-classification", labels)
    export = zoo.export(tuned, tmp_path / "hf").path
    _, card = _card(export)
    assert "in BIOES" in card and "understands only `B-`/`I-`" in card and 'aggregation_strategy="none"' in card
    tagger = transformers.pipeline("token-classification", model=str(export), aggregation_strategy="none")
    _, logits = zoo_logits(tuned, TEXTS[:1])
    expected = [labels[int(i)] for i in logits[0, 1:len(TEXTS[0]) + 1].argmax(-1)]
    assert [e["entity"] for e in tagger(TEXTS[0], ignore_labels=[])] == expected


# ---------------------------------------------------------------------------------------- hf import
def save_with_transformers(export: Path, folder: Path, auto: type) -> Path:
    """The folder transformers itself writes for the export's model (no receipt; vocab.txt as Hub repos have it)."""
    auto.from_pretrained(export).save_pretrained(folder)
    transformers.AutoTokenizer.from_pretrained(export).save_pretrained(folder)
    if not (folder / "vocab.txt").exists():
        shutil.copy(export / "vocab.txt", folder / "vocab.txt")
    assert not (folder / "receipt.json").exists()
    return folder


@pytest.mark.parametrize("task", sorted(TASKS))
@pytest.mark.parametrize("fixture", ["bert", "albert_google"])
def test_a_transformers_task_folder_converts_into_the_same_zoo_model(models: dict, tmp_path: Path, fixture: str,
                                                                     task: str, caplog: pytest.LogCaptureFixture) -> None:
    tuned, export = models[fixture, task]
    folder = save_with_transformers(export, tmp_path / "hf", TASKS[task][1])
    out = convert(folder, tmp_path / "zoo")
    config, layout = read_config(out)
    assert layout == "zoo" and config == read_config(tuned)[0]  # task, labels, tag scheme, dropout
    assert read_receipt(out)["task"] == task
    original, back = zoo.load(tuned, device="cpu").model.state_dict(), zoo.load(out, device="cpu").model.state_dict()
    for name in ("classifier.weight", "classifier.bias", "layers.0.output.weight"):
        assert torch.equal(original[name], back[name]), name
    batch, ours = zoo_logits(tuned, TEXTS)
    with caplog.at_level(logging.WARNING):
        _, again = zoo_logits(folder, TEXTS)  # the folder itself, converted into the cache on first use
    close(ours, again, batch["attention_mask"] if task == "token-classification" else None)
    assert "has no pooler" not in caplog.text  # a tagger's head never reads it (transformers saves none)


def _edit(folder: Path, **changes: object) -> Path:
    data = json.loads((folder / "config.json").read_text())
    data.update(changes)
    (folder / "config.json").write_text(json.dumps(data))
    return folder


def test_labels_and_tag_schemes_of_transformers_configs(models: dict, tmp_path: Path) -> None:
    from zoo.converters.hf_names import config_from_transformers

    _, export = models["bert", "token-classification"]
    data = json.loads((export / "config.json").read_text())
    tags = {"0": "O", "1": "B-X", "2": "I-X", "3": "E-X", "4": "S-X"}
    assert config_from_transformers({**data, "id2label": tags}).tag_scheme == "bioes"
    assert config_from_transformers(data).tag_scheme == "bio"
    unnamed = {k: v for k, v in data.items() if k not in ("id2label", "label2id", "num_labels")}
    assert config_from_transformers({**unnamed, "num_labels": 3}).labels == ("LABEL_0", "LABEL_1", "LABEL_2")
    assert config_from_transformers(unnamed).labels == ("LABEL_0", "LABEL_1")  # transformers' default of two
    pretraining = {**unnamed, "architectures": ["BertForPreTraining"]}
    assert config_from_transformers(pretraining).task is None

    folder = save_with_transformers(export, tmp_path / "gaps", transformers.AutoModelForTokenClassification)
    _edit(folder, id2label={"0": "O", "1": "B-X", "2": "I-X", "3": "B-Y", "5": "I-Y"})
    with pytest.raises(CheckpointError, match=r"config\.json: id2label: expected the label ids 0\.\.4"):
        convert(folder, tmp_path / "out")
    _edit(folder, id2label={"0": "O", "1": "B-X", "2": "B-X", "3": "B-Y", "4": "I-Y"})
    with pytest.raises(CheckpointError, match="labels: names a label twice"):
        convert(folder, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_regression_head_is_no_classifier(models: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _, export = models["bert", "sequence-classification"]
    folder = save_with_transformers(export, tmp_path / "hf", transformers.AutoModelForSequenceClassification)
    _edit(folder, problem_type="regression")
    with caplog.at_level(logging.WARNING, logger="zoo.converters"):
        out = convert(folder, tmp_path / "out")
    assert "no single-label classifier" in caplog.text
    assert read_config(out)[0].task is None and zoo.load(out, device="cpu").model.heads is None


def test_a_task_folder_without_its_classifier_is_refused(models: dict, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    _, export = models["bert", "sequence-classification"]
    folder = save_with_transformers(export, tmp_path / "hf", transformers.AutoModelForSequenceClassification)
    state = load_file(folder / "model.safetensors")
    save_file({k: v for k, v in state.items() if not k.startswith("classifier.")}, folder / "model.safetensors",
              metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"missing classifier\.bias, classifier\.weight"):
        convert(folder, tmp_path / "out")


# ------------------------------------------------------------------------------------------ TF export
@pytest.mark.parametrize("fixture", sorted(ARCHS))
def test_tf_export_of_a_classifier_has_run_classifier_s_head(models: dict, tmp_path: Path, fixture: str) -> None:
    from safetensors.torch import load_file

    tuned, _ = models[fixture, "sequence-classification"]
    labels = LABELS["sequence-classification"]
    export = zoo.export(tuned, tmp_path / "tf", format="tf").path
    listed = {v.name: (v.dtype, list(v.shape)) for v in list_variables(export)}
    hidden = read_config(tuned)[0].hidden_size
    assert listed["output_weights"] == ("float32", [len(labels), hidden])
    assert listed["output_bias"] == ("float32", [len(labels)]) and listed["global_step"] == ("int64", [])
    assert not any(name.startswith("classifier") for name in listed)
    assert (export / "labels.txt").read_text() == "neg\nneu\npos\n"
    receipt = read_receipt(export)
    assert (receipt["task"], receipt["labels"], receipt["left_out"], receipt["warnings"]) == \
        ("sequence-classification", list(labels), [], [])
    assert {"path": "labels.txt", "role": "labels"}.items() <= \
        next(o for o in receipt["outputs"] if o["path"] == "labels.txt").items()

    # run_classifier.py: logits = pooled_output @ output_weightsᵀ + output_bias, on what TensorFlow reads
    source = load_file(tuned / "model.safetensors")
    ckpt = read_tf_checkpoint(export)
    assert torch.equal(ckpt["output_weights"], source["classifier.weight"])
    loaded = zoo.load(tuned, device="cpu")
    batch = loaded.encode(TEXTS)
    with torch.no_grad():
        out = loaded.model(**batch)
    close(out.logits, out.pooler_output @ ckpt["output_weights"].T + ckpt["output_bias"])

    # … and it converts back into the same classifier, labels included (labels.txt)
    back = zoo.load(export, device="cpu")
    assert back.config.task == "sequence-classification" and back.config.labels == labels
    assert back.config.classifier_dropout_prob == 0.1  # run_classifier.py's; an upstream config has no such key
    with torch.no_grad():
        close(back.model(**batch).logits, out.logits)


def test_tf_export_of_a_tagger_holds_the_encoder_and_says_so(models: dict, tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    tuned, _ = models["albert_google", "token-classification"]
    with caplog.at_level(logging.WARNING, logger="zoo.converters"):
        export = zoo.export(tuned, tmp_path / "tf", format="tf").path
    assert "token-classification head (classifier.bias, classifier.weight) is left out" in caplog.text
    assert "no convention for a token classifier" in caplog.text
    receipt = read_receipt(export)
    assert receipt["task"] is None and receipt["labels"] is None
    assert receipt["left_out"] == ["classifier.bias", "classifier.weight"]
    assert len(receipt["warnings"]) == 1 and "encoder only" in receipt["warnings"][0]
    names = {v.name for v in list_variables(export)}
    assert not names & {"output_weights", "output_bias"} and not (export / "labels.txt").exists()
    assert "bert/pooler/dense/kernel" in names  # the encoder is all there
    code, _, err = run(capsys, "export", str(tuned), str(tmp_path / "cli"), "--format", "tf")
    assert code == 0 and "is left out" in err
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="zoo.converters"):  # the tagger's own config names a head …
        back = convert(export, tmp_path / "back", config=tuned / "config.json")
    assert "converted as an encoder" in caplog.text  # … that a TF checkpoint cannot hold: no untrained "tagger"
    assert read_config(back)[0].task is None and zoo.load(back, device="cpu").model.heads is None


# ------------------------------------------------------------------------------------------ TF import
@pytest.mark.parametrize("fixture", sorted(ARCHS))
def test_an_upstream_fine_tuned_checkpoint_is_a_ready_classifier(tmp_path: Path, fixture: str) -> None:
    """A run_classifier.py checkpoint (Adam slots, global_step) loads as a sequence classifier whose logits are
    run_classifier's formula on the pooled output TensorFlow recorded for the same release."""
    head = write_upstream_classifier(fixture, tmp_path / "release")
    loaded = zoo.load(tmp_path / "release", device="cpu")
    config = loaded.config
    assert (config.task, config.labels, config.classifier_dropout_prob) == \
        ("sequence-classification", ("LABEL_0", "LABEL_1", "LABEL_2"), 0.1)
    receipt = read_receipt(loaded.path)
    assert receipt["task"] == "sequence-classification"
    assert {"output_weights/adam_m", "output_bias/adam_v", "global_step"} <= set(receipt["skipped"]["names"])
    ref = np.load(FIXTURES / fixture / "reference.npz")
    ids, mask, types = (torch.from_numpy(ref[k]).long() for k in ("input_ids", "input_mask", "token_type_ids"))
    with torch.no_grad():
        logits = loaded.model(ids, attention_mask=mask, token_type_ids=types).logits
    expected = ref["pooled_output"] @ head["output_weights"].T + head["output_bias"]
    close(logits, torch.from_numpy(expected))


def test_labels_name_the_outputs_of_a_converted_classifier(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    release = tmp_path / "release"
    write_upstream_classifier("bert", release)
    code, out, err = run(capsys, "convert", str(release), str(tmp_path / "named"), "--labels", "neg", "neu", "pos")
    assert code == 0, err
    assert "task: sequence-classification" in err and out.strip() == str(tmp_path / "named")
    assert read_config(tmp_path / "named")[0].labels == ("neg", "neu", "pos")

    code, _, err = run(capsys, "convert", str(release), str(tmp_path / "two"), "--labels", "neg", "pos")
    assert code == UsageError.exit_code and "3 outputs, the labels given name 2 labels" in err
    code, _, err = run(capsys, "convert", str(release), str(tmp_path / "twice"), "--labels", "a", "b", "a")
    assert code == UsageError.exit_code and "names a label twice" in err
    code, _, err = run(capsys, "convert", str(FIXTURES / "bert"), str(tmp_path / "none"), "--labels", "a", "b")
    assert code == UsageError.exit_code and "has no classifier (output_weights)" in err

    (release / "labels.txt").write_text("负面\n中性\n正面\n", encoding="utf-8")
    assert read_config(convert(release, tmp_path / "file"))[0].labels == ("负面", "中性", "正面")
    assert {"path": "labels.txt", "role": "labels"}.items() <= \
        next(i for i in read_receipt(tmp_path / "file")["inputs"] if i["path"] == "labels.txt").items()
    assert read_config(convert(release, tmp_path / "given", labels=["a", "b", "c"]))[0].labels == ("a", "b", "c")
    (release / "labels.txt").write_text("负面\n正面\n", encoding="utf-8")
    code, _, err = run(capsys, "convert", str(release), str(tmp_path / "short"))
    assert code == CheckpointError.exit_code and "labels.txt name 2 labels" in err
    for out in ("two", "twice", "none", "short"):
        assert not (tmp_path / out).exists()


def test_labels_do_not_apply_to_a_transformers_folder(models: dict, tmp_path: Path) -> None:
    _, export = models["bert", "sequence-classification"]
    with pytest.raises(UsageError, match="--labels apply to TensorFlow checkpoints"):
        convert(export, tmp_path / "out", labels=["a", "b", "c"])


def test_a_classifier_config_round_trips_through_every_format(models: dict, tmp_path: Path) -> None:
    """zoo → transformers → zoo → TF → zoo: the labels survive every step (id2label, config.json, labels.txt)."""
    tuned, export = models["albert_brightmart", "sequence-classification"]
    again = convert(export, tmp_path / "from-hf")
    tf = zoo.export(again, tmp_path / "tf", format="tf").path
    final = convert(tf, tmp_path / "from-tf")
    original, config = read_config(tuned)[0], read_config(final)[0]
    assert original.architecture == "albert-brightmart" and config.architecture == "albert"  # E = H, same function
    assert (config.task, config.labels, config.classifier_dropout_prob) == (original.task, original.labels, 0.1)
    _, ours = zoo_logits(tuned, TEXTS)
    _, theirs = zoo_logits(final, TEXTS)
    close(ours, theirs)
