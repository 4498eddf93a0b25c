"""A fine-tuning step of zoo equals one of transformers: the same exported init, the same batch, torch AdamW on both
sides, dropout 0 — for BERT and Google ALBERT, token and sequence classification.

The reference side is transformers' own ``*ForTokenClassification``/``*ForSequenceClassification`` (its forward and
its loss), loaded from zoo's export of the starting model; the optimizer step is written here with torch's AdamW
and the same parameter groups (no weight decay on LayerNorm and bias parameters) and gradient clipping.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from support.tuned import LABELS, write_fine_tuned

import zoo
from zoo.converters.hf_names import from_transformers
from zoo.converters.modeldir import read_config
from zoo.training.optim import clip_by_global_norm

transformers = pytest.importorskip("transformers")

TF = Path(__file__).parent / "fixtures" / "tf"
TEXTS = ["今天天气很好", "我们是中国人", "他说了一个大国的事", "今天我们很好"]
LR = 1e-3


def _data(folder: Path, task: str) -> tuple[Path, list[str]]:
    """Training data whose labels are the tuned head's, in its order; returns the file and the label option."""
    if task == "token-classification":
        path = folder / "train.conll"
        with open(path, "w", encoding="utf-8") as fh:
            for n, text in enumerate(TEXTS):
                tags = ["O"] * len(text)
                tags[n:n + 2] = ["B-DISH", "I-DISH"] if n % 2 == 0 else ["B-PLACE", "I-PLACE"]
                fh.writelines(f"{c} {t}\n" for c, t in zip(text, tags))
                fh.write("\n")
        return path, ["DISH", "PLACE"]
    path = folder / "train.tsv"
    path.write_text("label\ttext_a\n" + "".join(f"{LABELS[task][n % 3]}\t{t}\n" for n, t in enumerate(TEXTS)),
                    encoding="utf-8")
    return path, list(LABELS[task])


def _batch(tuned: Path, task: str, train: Path) -> dict[str, torch.Tensor]:
    """The training batch as transformers gets it: the same tokens, labels and padding zoo trains on."""
    from zoo.training import labelled
    from zoo.training.tasks.finetuning import pad

    loaded = zoo.load(tuned, device="cpu")
    if task == "token-classification":
        from zoo.tagging import TagSet, align_batch, encode_tagged

        data = labelled.read_tagged(train)
        tagset = TagSet(["DISH", "PLACE"])
        examples = []
        for example, alignment in zip(data.examples, align_batch(loaded.tokenizer, [e.text for e in data.examples])):
            [window] = encode_tagged(loaded.tokenizer, alignment, tagset.unit_ids(example.spans, alignment.units),
                                     max_seq_length=32, stride=8)
            examples.append({"input_ids": window.input_ids, "token_type_ids": window.token_type_ids,
                             "attention_mask": window.attention_mask, "labels": window.labels})
    else:
        from zoo.training.tasks.sequence_classification import encode

        examples, _ = encode(labelled.read_classification(train).examples, loaded.tokenizer, LABELS[task], 32)
    return pad(examples, loaded.tokenizer.pad_token_id)


@pytest.mark.parametrize("task", ["token-classification", "sequence-classification"])
@pytest.mark.parametrize("fixture", ["bert", "albert_google"])
def test_a_training_step_equals_transformers(fixture: str, task: str, tmp_path: Path) -> None:
    base = zoo.convert(TF / fixture, tmp_path / "base")
    config, _ = read_config(base)
    quiet = zoo.convert(TF / fixture, tmp_path / "quiet", config=dataclasses.replace(
        config, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    tuned = write_fine_tuned(quiet, tmp_path / "tuned", task, dropout=0.0)
    train, labels = _data(tmp_path, task)
    out = zoo.finetune(tuned, task=task, train=train, out=tmp_path / "zoo", steps=1, batch_size=4, lr=LR, warmup=0,
                       labels=labels, max_seq_length=32, classifier_dropout=0.0, workers=0, progress=False)

    exported = zoo.export(tuned, tmp_path / "hf").path
    auto = (transformers.AutoModelForTokenClassification if task == "token-classification"
            else transformers.AutoModelForSequenceClassification)
    model = auto.from_pretrained(exported).train()
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    no_decay = [p for n, p in named if "LayerNorm" in n or "layer_norm" in n or n.endswith("bias")]
    decay = [p for n, p in named if all(p is not q for q in no_decay)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=LR, betas=(0.9, 0.999), eps=1e-6)
    batch = _batch(tuned, task, train)
    loss = model(**batch).loss
    loss.backward()
    reference_loss = float(loss.detach())
    clip_by_global_norm([p for _, p in named], 1.0)
    optimizer.step()

    receipt = json.loads((out / "receipt.json").read_text())
    assert receipt["final"]["loss"] == pytest.approx(reference_loss, rel=1e-5)  # the same batch, the same loss
    trained = load_file(str(out / "model.safetensors"))
    expected = from_transformers({k: v.detach() for k, v in model.state_dict().items()}, read_config(tuned)[0])
    start = load_file(str(tuned / "model.safetensors"))
    # The attention key bias adds the same amount to every score of a query, which softmax ignores: its gradient
    # is zero in exact arithmetic, so both sides take an Adam step on rounding noise (up to lr·|g|/(|g|+ε)).
    noise = {k for k in trained if k.endswith("attention.key.bias")}
    compared = [k for k in trained if k in expected and k not in noise]
    assert "classifier.weight" in compared and len(compared) > 10
    moved = max(float((trained[k] - start[k]).abs().max()) for k in compared)
    diff = {k: float((trained[k] - expected[k].float()).abs().max()) for k in compared}
    worst = max(diff, key=diff.__getitem__)
    assert moved > 0.5 * LR and diff[worst] < 2e-6, (moved, worst, diff[worst])
    assert all(float((trained[k] - start[k]).abs().max()) < 0.1 * LR for k in noise)  # noise, not learning
