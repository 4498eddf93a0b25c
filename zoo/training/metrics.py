"""Evaluation of fine-tuned models, computed the way published results are.

Token classification: entity-level precision, recall and F1 over exact spans (boundaries and label must match),
micro-averaged and per label, by ``seqeval`` in its default (conlleval) mode on BIO tags per unit — every unit
of every example, every gold entity counted. Text classification: accuracy, macro-F1, per-label
precision/recall/F1 and the confusion matrix, by scikit-learn (which seqeval depends on). Where a ratio has a
zero denominator it is 0. Both libraries load on the first call (seqeval takes about a second to import).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

from zoo.tagging import Span, Units, unit_tags


@dataclasses.dataclass(frozen=True)
class Score:
    """Precision, recall and F1 of one label (or all), and its support: the number of gold entities/examples."""

    precision: float
    recall: float
    f1: float
    support: int

    def as_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class EntityMetrics:
    """Micro-averaged entity scores and per-label scores (labels seen in the gold or predicted entities)."""

    micro: Score
    per_label: dict[str, Score]

    @property
    def f1(self) -> float:
        return self.micro.f1

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"micro": {...}, "per_label": {label: {...}}}``."""
        return {"micro": self.micro.as_dict(), "per_label": {k: v.as_dict() for k, v in self.per_label.items()}}


@dataclasses.dataclass(frozen=True)
class ClassificationMetrics:
    """Accuracy (``correct`` of ``total``), macro-F1 (over the labels present in the gold or predicted labels,
    as scikit-learn averages), per-label scores for every label, and the confusion matrix: row = gold label,
    column = predicted label, both in ``labels`` order."""

    accuracy: float
    correct: int
    total: int
    macro_f1: float
    labels: tuple[str, ...]
    per_label: dict[str, Score]
    confusion: tuple[tuple[int, ...], ...]

    def as_dict(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "correct": self.correct, "total": self.total, "macro_f1": self.macro_f1,
                "labels": list(self.labels), "per_label": {k: v.as_dict() for k, v in self.per_label.items()},
                "confusion": [list(row) for row in self.confusion]}


def entity_metrics(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> EntityMetrics:
    """Entity scores of BIO tag sequences (one per example, gold and predicted of equal lengths), by seqeval's
    default mode."""
    from seqeval.metrics import classification_report

    if len(gold) != len(predicted) or any(len(g) != len(p) for g, p in zip(gold, predicted)):
        raise ValueError("gold and predicted tags differ in number or length")
    gold_lists, predicted_lists = [list(g) for g in gold], [list(p) for p in predicted]
    if not any(tag != "O" for tags in (*gold_lists, *predicted_lists) for tag in tags):
        return EntityMetrics(Score(0.0, 0.0, 0.0, 0), {})
    report = classification_report(gold_lists, predicted_lists, output_dict=True, zero_division=0)
    scores = {name: _score(row) for name, row in report.items()}
    micro = scores.pop("micro avg")
    per_label = {name: score for name, score in scores.items() if not name.endswith(" avg")}
    return EntityMetrics(micro, per_label)


def span_metrics(examples: Iterable[tuple[Units, Sequence[Span], Sequence[Span]]]) -> EntityMetrics:
    """Entity scores of ``(units, gold spans, predicted spans)`` per example (character spans on unit
    boundaries): each side becomes BIO tags per unit, then :func:`entity_metrics`."""
    gold, predicted = [], []
    for units, gold_spans, predicted_spans in examples:
        gold.append(unit_tags(gold_spans, units))
        predicted.append(unit_tags(predicted_spans, units))
    return entity_metrics(gold, predicted)


def classification_metrics(gold: Sequence[str], predicted: Sequence[str],
                           labels: Sequence[str]) -> ClassificationMetrics:
    """Scores of predicted labels against gold labels; ``labels`` fixes the order of the per-label scores and
    of the confusion matrix's rows and columns. ValueError for a label outside ``labels``."""
    from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

    gold, predicted, labels = list(gold), list(predicted), list(labels)
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold labels but {len(predicted)} predictions")
    unknown = sorted((set(gold) | set(predicted)) - set(labels))
    if unknown:
        raise ValueError(f"labels {unknown} are not in {labels}")
    correct = sum(g == p for g, p in zip(gold, predicted))
    if not gold:
        empty = {label: Score(0.0, 0.0, 0.0, 0) for label in labels}
        return ClassificationMetrics(0.0, 0, 0, 0.0, tuple(labels), empty, tuple((0,) * len(labels) for _ in labels))
    p, r, f, s = precision_recall_fscore_support(gold, predicted, labels=labels, zero_division=0)
    per_label = {label: Score(float(p[i]), float(r[i]), float(f[i]), int(s[i])) for i, label in enumerate(labels)}
    matrix = confusion_matrix(gold, predicted, labels=labels)
    return ClassificationMetrics(correct / len(gold), correct, len(gold),
                                 float(f1_score(gold, predicted, average="macro", zero_division=0)), tuple(labels),
                                 per_label, tuple(tuple(int(v) for v in row) for row in matrix))


def _score(row: dict[str, Any]) -> Score:
    return Score(float(row["precision"]), float(row["recall"]), float(row["f1-score"]), int(row["support"]))


__all__ = ["ClassificationMetrics", "EntityMetrics", "Score", "classification_metrics", "entity_metrics",
           "span_metrics"]
