"""Fine-tuned-like model directories for the export and import tests: a converted fixture release with a random
classifier and the task fields a fine-tuning run writes (zoo's layout, through ``staged_output``), and upstream
``run_classifier.py``-style TF checkpoints written with zoo's TensorBundle writer (byte-identical to TensorFlow's).
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zoo.converters.modeldir import read_config, staged_output

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tf"
#: The labels of each task in the tests: BIO tags of two entity types, three classes.
LABELS: dict[str, tuple[str, ...]] = {"token-classification": ("O", "B-DISH", "I-DISH", "B-PLACE", "I-PLACE"),
                                      "sequence-classification": ("neg", "neu", "pos")}


def classifier(rows: int, hidden: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A random classifier ``[rows, hidden]`` and its bias, large enough that predictions vary from token to token."""
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1, (rows, hidden)).astype(np.float32), rng.normal(0, 1, rows).astype(np.float32)


def write_fine_tuned(base: Path, out: Path, task: str, labels: Sequence[str] | None = None, *,
                     dropout: float | None = 0.2, seed: int = 0, receipt: Mapping[str, Any] | None = None) -> Path:
    """A fine-tuning output made from the converted directory ``base``: its weights plus ``classifier.*``, its
    config with ``task``, ``labels``, ``tag_scheme`` (BIOES when a tag starts with E- or S-) and
    ``classifier_dropout_prob``, its vocab, and a ``finetune`` receipt with ``receipt``'s fields."""
    import torch
    from safetensors.torch import load_file

    from zoo.converters.safetensors_out import write_state

    config, _ = read_config(base)
    labels = tuple(labels or LABELS[task])
    scheme = None
    if task == "token-classification":
        scheme = "bioes" if any(t[:2] in ("E-", "S-") for t in labels) else "bio"
    tuned = dataclasses.replace(config, task=task, labels=labels, tag_scheme=scheme, classifier_dropout_prob=dropout)
    state = load_file(str(base / "model.safetensors"))
    weight, bias = classifier(len(labels), config.hidden_size, seed)
    state.update({"classifier.weight": torch.from_numpy(weight), "classifier.bias": torch.from_numpy(bias)})
    with staged_output(out, kind="finetune") as staged:
        with staged.open("model.safetensors", "weights") as fh:
            write_state(fh, state, {"format": "pt"})
        staged.write_json("config.json", tuned.to_dict(), "config")
        staged.write_bytes("vocab.txt", (base / "vocab.txt").read_bytes(), "vocab")
        staged.receipt.update({"base": {"model": "tiny"}, "steps": 5, **(receipt or {})})
    return out


def write_upstream_classifier(fixture: str, out: Path, num_labels: int = 3, *, seed: int = 0) -> dict[str, np.ndarray]:
    """What google-research/bert's ``run_classifier.py`` saves after fine-tuning the TensorFlow ``fixture``: its
    variables plus ``output_weights`` ``[num_labels, hidden]`` and ``output_bias``, ``global_step`` and Adam slots
    (``*/adam_m``, ``*/adam_v``), next to the release's config and vocab. Returns the classifier's arrays."""
    from zoo.tf import read_tf_checkpoint
    from zoo.tf.writer import write_checkpoint

    source = FIXTURES / fixture
    variables: dict[str, Any] = {name: np.array(t.numpy()) for name, t in read_tf_checkpoint(source).items()}
    hidden = variables["bert/pooler/dense/bias"].shape[0]
    weight, bias = classifier(num_labels, hidden, seed)
    head = {"output_weights": weight, "output_bias": bias}
    for name, value in [*head.items(), ("bert/pooler/dense/kernel", variables["bert/pooler/dense/kernel"])]:
        variables[f"{name}/adam_m"] = np.zeros_like(value)
        variables[f"{name}/adam_v"] = np.ones_like(value)
    variables.update(head, global_step=np.array(300, dtype=np.int64))
    out.mkdir(parents=True)
    write_checkpoint(out / "model.ckpt-300", variables)
    for path in source.iterdir():
        if path.suffix in (".json", ".txt"):
            shutil.copy(path, out / path.name)
    return head
