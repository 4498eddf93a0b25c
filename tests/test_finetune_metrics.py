"""zoo.training.metrics: entity scores equal seqeval's (default mode) on hand-written tags and hand-counted
numbers; text-classification scores equal hand-counted numbers."""

from __future__ import annotations

import random

import pytest

from zoo.tagging import Span, char_units
from zoo.training.metrics import Score, classification_metrics, entity_metrics, span_metrics

WORDS = [(0, 2), (3, 10), (11, 17)]  # "EU rejects German", a CoNLL sentence of word units
FIXTURE = [  # (units, gold, predicted)
    (char_units("张三在北京大学吃宫保鸡丁"), [Span(0, 2, "PER"), Span(3, 7, "ORG"), Span(8, 12, "DISH")],
     [Span(0, 2, "PER"), Span(3, 5, "ORG"), Span(8, 12, "DISH")]),
    (char_units("李四王五去了京"), [Span(0, 2, "PER"), Span(2, 4, "PER"), Span(6, 7, "LOC")],
     [Span(0, 4, "PER"), Span(6, 7, "LOC")]),
    (char_units("今天很好"), [], [Span(0, 2, "LOC")]),
    (WORDS, [Span(0, 2, "ORG"), Span(11, 17, "MISC")], [Span(0, 2, "ORG"), Span(3, 17, "MISC")]),
]
GOLD_TAGS = ["B-PER I-PER O B-ORG I-ORG I-ORG I-ORG O B-DISH I-DISH I-DISH I-DISH", "B-PER I-PER B-PER I-PER O O B-LOC",
             "O O O O", "B-ORG O B-MISC"]
PREDICTED_TAGS = ["B-PER I-PER O B-ORG I-ORG O O O B-DISH I-DISH I-DISH I-DISH", "B-PER I-PER I-PER I-PER O O B-LOC",
                  "B-LOC I-LOC O O", "B-ORG B-MISC I-MISC"]


def test_span_metrics_are_hand_counted_and_seqeval_on_the_same_tags() -> None:
    from seqeval.metrics import classification_report

    metrics = span_metrics(FIXTURE)
    # 8 gold, 8 predicted, 4 exact matches (PER 1/2 of 3, ORG 1/2 of 2, DISH 1/1, LOC 1/2 of 1, MISC 0/1 of 1)
    assert metrics.micro == Score(0.5, 0.5, 0.5, 8)
    want = {"PER": (1 / 2, 1 / 3, 0.4, 3), "ORG": (0.5, 0.5, 0.5, 2), "DISH": (1.0, 1.0, 1.0, 1),
            "LOC": (0.5, 1.0, 2 / 3, 1), "MISC": (0.0, 0.0, 0.0, 1)}
    assert set(metrics.per_label) == set(want)
    for label, (p, r, f, s) in want.items():
        got = metrics.per_label[label]
        assert (got.precision, got.recall, got.f1) == pytest.approx((p, r, f), rel=1e-12), label
        assert got.support == s
    report = classification_report([t.split() for t in GOLD_TAGS], [t.split() for t in PREDICTED_TAGS],
                                   output_dict=True, zero_division=0)
    for label, score in metrics.per_label.items():
        row = report[label]
        assert (score.precision, score.recall, score.f1, score.support) == pytest.approx(
            (row["precision"], row["recall"], row["f1-score"], row["support"]), rel=1e-12)
    assert metrics.f1 == pytest.approx(report["micro avg"]["f1-score"], rel=1e-12)
    assert metrics.as_dict()["per_label"]["DISH"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}


def test_entity_metrics_on_ill_formed_predictions_follow_seqeval() -> None:
    from seqeval.metrics import f1_score, precision_score, recall_score

    rng = random.Random(5)
    tags = ["O", "B-A", "I-A", "B-B", "I-B"]
    for _ in range(50):
        lengths = [rng.randrange(1, 12) for _ in range(4)]
        gold = [[rng.choice(tags) for _ in range(n)] for n in lengths]
        predicted = [[rng.choice(tags) for _ in range(n)] for n in lengths]
        metrics = entity_metrics(gold, predicted)
        assert metrics.micro.precision == pytest.approx(precision_score(gold, predicted, zero_division=0), abs=1e-12)
        assert metrics.micro.recall == pytest.approx(recall_score(gold, predicted, zero_division=0), abs=1e-12)
        assert metrics.f1 == pytest.approx(f1_score(gold, predicted, zero_division=0), abs=1e-12)


def test_entity_metrics_without_any_entity_are_zero() -> None:
    metrics = entity_metrics([["O", "O"]], [["O", "O"]])
    assert metrics.micro == Score(0.0, 0.0, 0.0, 0) and metrics.per_label == {}
    missed = span_metrics([(char_units("北京"), [Span(0, 2, "LOC")], [])])
    assert missed.micro == Score(0.0, 0.0, 0.0, 1)
    with pytest.raises(ValueError, match="length"):
        entity_metrics([["O"]], [["O", "O"]])


def test_classification_metrics_are_hand_counted() -> None:
    gold = ["pos", "pos", "pos", "neg", "neg", "neu"]
    predicted = ["pos", "neg", "pos", "neg", "pos", "neg"]
    m = classification_metrics(gold, predicted, ["pos", "neg", "neu", "other"])
    assert (m.accuracy, m.correct, m.total) == (0.5, 3, 6)
    assert m.confusion == ((2, 1, 0, 0), (1, 1, 0, 0), (0, 1, 0, 0), (0, 0, 0, 0))
    assert m.per_label["pos"] == Score(pytest.approx(2 / 3), pytest.approx(2 / 3), pytest.approx(2 / 3), 3)
    assert m.per_label["neg"] == Score(pytest.approx(1 / 3), 0.5, pytest.approx(0.4), 2)
    assert m.per_label["neu"] == Score(0.0, 0.0, 0.0, 1)
    assert m.per_label["other"] == Score(0.0, 0.0, 0.0, 0)
    # macro-F1 over the labels present in gold or predictions (pos, neg, neu), as scikit-learn averages
    assert m.macro_f1 == pytest.approx((2 / 3 + 0.4 + 0.0) / 3, rel=1e-12)
    assert m.labels == ("pos", "neg", "neu", "other")
    assert m.as_dict()["confusion"][0] == [2, 1, 0, 0]
    with pytest.raises(ValueError, match="maybe"):
        classification_metrics(["pos"], ["maybe"], ["pos", "neg"])
    empty = classification_metrics([], [], ["a"])
    assert (empty.total, empty.confusion) == (0, ((0,),))
