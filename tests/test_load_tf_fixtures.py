"""zoo.load of each upstream-style TF release in tests/fixtures/tf reproduces TensorFlow's own outputs.

The references (reference.npz) were computed by TensorFlow following the upstream modeling code
(tests/fixtures/make_tf_fixtures.py); zoo reads the TF checkpoint without TensorFlow, converts it on demand
into the (test-isolated) cache and runs its own encoder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
np = pytest.importorskip("numpy")

import zoo

FIXTURES = Path(__file__).parent / "fixtures" / "tf"
META = json.loads((FIXTURES / "fixtures.json").read_text(encoding="utf-8"))["fixtures"]
ATOL = 1e-5


@pytest.mark.parametrize("fixture", META, ids=[f["name"] for f in META])
def test_outputs_match_tensorflow(fixture: dict) -> None:
    ref = np.load(FIXTURES / fixture["name"] / "reference.npz")
    heads = "pretraining" if fixture["heads"] else None
    loaded = zoo.load(FIXTURES / fixture["name"], device="cpu", heads=heads)
    ids, mask, types = (torch.from_numpy(ref[k]).long() for k in ("input_ids", "input_mask", "token_type_ids"))
    with torch.no_grad():
        out = loaded.model(ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
    real = mask.bool()

    def check(ours: torch.Tensor, name: str, tokens: bool = True) -> None:
        theirs = torch.from_numpy(ref[name])
        if tokens:  # padded query positions carry no meaning (and differ between implementations)
            ours, theirs = ours[real], theirs[real]
        assert ours.shape == theirs.shape, name
        err = float((ours - theirs).abs().max())
        assert err <= ATOL, f"{fixture['name']} {name}: max |zoo - TF| = {err:.2e}"

    check(out.last_hidden_state, "sequence_output")
    check(out.pooler_output, "pooled_output", tokens=False)
    # TF records one output per layer; an ALBERT layer runs inner_group_num parameter sets
    inner = len(loaded.config.layer_schedule()) // loaded.config.num_hidden_layers
    for layer in range(loaded.config.num_hidden_layers):
        theirs = torch.from_numpy(ref["layer_outputs"][layer])[real]
        assert float((out.hidden_states[(layer + 1) * inner][real] - theirs).abs().max()) <= ATOL
    if not loaded.config.has_mapping_in:  # TF's embedding output is before mapping_in
        check(out.hidden_states[0], "embedding_output")
    if heads:
        check(out.mlm_logits, "mlm_logits")
        check(out.seq_relationship_logits, "seq_relationship_logits", tokens=False)


def test_google_vocab_with_scores_and_duplicate_loads() -> None:
    """vocab_chinese.txt has a score column and repeats id 10's token on its last line: as in
    google-research/albert's load_vocab, ids follow first appearance (96 tokens for 97 embedding rows), the
    repeated token maps to its first id, and the last row, which no text reaches, is a placeholder."""
    loaded = zoo.load(FIXTURES / "albert_google", device="cpu")
    vocab = [line.split("\t")[0] for line in
             (FIXTURES / "albert_google" / "vocab_chinese.txt").read_text(encoding="utf-8").splitlines()]
    assert loaded.tokenizer.vocab_size == len(vocab) == loaded.config.vocab_size
    assert loaded.tokenizer.unreachable_ids == {len(vocab) - 1}
    dup = vocab[-1]
    assert vocab.index(dup) == 10
    assert loaded.tokenizer(dup)["input_ids"] == [loaded.tokenizer.cls_token_id, 10, loaded.tokenizer.sep_token_id]
