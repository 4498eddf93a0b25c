"""Fine-tuning throughput (examples/s) and peak memory: ``zoo finetune`` against transformers' ``Trainer`` on the
same token-classification data, batch, sequence length, initial weights and optimizer (AdamW, lr 5e-5, linear
schedule), for an albert_base_zh-sized model (random weights, real shapes: V 21128, E 128, H 768, 12 layers sharing
one group) or ``--model bert_base`` (BERT-base Chinese). Each side runs alone in a subprocess (peak RSS =
``ru_maxrss``); throughput is measured over the second half of the steps (after warm-up), from zoo's own averaged
``examples_per_s`` record and from a ``TrainerCallback`` on the transformers side. Then ``tag`` against
``pipeline("token-classification", aggregation_strategy="simple")`` on the export (texts/s, one process, after a
warm-up call each; reviews of 6 to 250 characters, log-uniform, batch 32 on both sides).

    .venv/bin/python bench/finetune_throughput.py [--model albert_base|bert_base] [--batch 16] [--seq 128]
        [--steps 12] [--texts 256] [--threads N]

transformers' Trainer needs ``accelerate`` (``pip install accelerate``), which zoo itself does not use.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODELS = {
    "albert_base": {"architecture": "albert", "vocab_size": 21128, "embedding_size": 128, "hidden_size": 768,
                    "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
                    "max_position_embeddings": 512, "hidden_act": "relu"},
    "bert_base": {"architecture": "bert", "vocab_size": 21128, "hidden_size": 768, "num_hidden_layers": 12,
                  "num_attention_heads": 12, "intermediate_size": 3072, "max_position_embeddings": 512,
                  "hidden_act": "gelu_new"},
}
DISHES = ["麻辣香锅", "酸菜鱼", "宫保鸡丁", "红烧肉", "小笼包", "回锅肉", "水煮牛肉", "东坡肉"]


def make_inputs(folder: Path, model: str, seq: int, n: int) -> tuple[Path, Path]:
    """A zoo model with a fresh tagging head (via ``zoo init``) and ``n`` CoNLL reviews of about ``seq`` characters."""
    import zoo

    chars = [chr(c) for c in range(0x4E00, 0x4E00 + 21128 - 105)]
    vocab = ["[PAD]", *[f"[unused{i}]" for i in range(99)], "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<S>", *chars]
    (folder / "vocab.txt").write_text("\n".join(vocab[:21128]) + "\n", encoding="utf-8")
    (folder / "config.json").write_text(json.dumps(MODELS[model]))
    base = zoo.init_model(folder / "config.json", out=folder / "base", vocab=folder / "vocab.txt", progress=False)
    rng = random.Random(0)
    with open(folder / "train.conll", "w", encoding="utf-8") as fh:
        for _ in range(n):
            text, tags = "", []
            while len(text) < seq - 2 - 6:
                filler = "".join(rng.choice(chars[:3000]) for _ in range(rng.randint(3, 12)))
                dish = rng.choice(DISHES)
                text += filler + dish
                tags += ["O"] * len(filler) + ["B-DISH"] + ["I-DISH"] * (len(dish) - 1)
            fh.writelines(f"{c} {t}\n" for c, t in zip(text, tags))
            fh.write("\n")
    return base, folder / "train.conll"


def run_zoo(base: str, train: str, out: str, batch: int, seq: int, steps: int) -> dict:
    import zoo

    zoo.finetune(base, task="token-classification", train=train, out=out, steps=steps, batch_size=batch,
                 max_seq_length=seq, lr=5e-5, log_every=steps // 2, workers=1, device="cpu", progress=False)
    last = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()][-1]
    return {"examples_per_s": last["examples_per_s"]}


def run_transformers(base: str, train: str, out: str, batch: int, seq: int, steps: int) -> dict:
    """transformers' Trainer on the export of the same starting model (its tagging head included)."""
    import torch
    import transformers

    import zoo
    from zoo.tagging import TagSet, align_batch, encode_tagged
    from zoo.training import labelled

    loaded = zoo.load(base, heads="token-classification", num_labels=3, device="cpu")
    tuned = Path(out).with_name("start")
    _save_task_model(loaded, tuned)
    hf = zoo.export(tuned, Path(out).with_name("start-hf")).path
    model = transformers.AutoModelForTokenClassification.from_pretrained(hf)
    data = labelled.read_tagged(train)
    tagset = TagSet(["DISH"])
    features = []
    for example, alignment in zip(data.examples, align_batch(loaded.tokenizer, [e.text for e in data.examples])):
        window = encode_tagged(loaded.tokenizer, alignment, tagset.unit_ids(example.spans, alignment.units),
                               max_seq_length=seq, stride=seq // 4)[0]
        features.append({"input_ids": window.input_ids.tolist(), "labels": window.labels.tolist()})
    collator = transformers.DataCollatorForTokenClassification(transformers.AutoTokenizer.from_pretrained(hf))
    times: list[float] = []

    class Clock(transformers.TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, args, state, control, **kwargs):
            times.append(time.perf_counter())

    args = transformers.TrainingArguments(output_dir=out, per_device_train_batch_size=batch, max_steps=steps,
                                          learning_rate=5e-5, warmup_steps=max(steps // 10, 0), weight_decay=0.01,
                                          adam_epsilon=1e-6, max_grad_norm=1.0, logging_steps=steps,
                                          save_strategy="no", report_to=[], use_cpu=True, dataloader_num_workers=1,
                                          disable_tqdm=True)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=features, data_collator=collator,
                                   callbacks=[Clock()])
    torch.manual_seed(0)
    trainer.train()
    half = steps // 2
    return {"examples_per_s": half * batch / (times[-1] - times[half - 1])}


def _save_task_model(loaded, folder: Path) -> None:
    """A zoo directory of the starting model with its fresh tagging head, for the transformers side."""
    import dataclasses

    from zoo.converters.modeldir import staged_output
    from zoo.converters.safetensors_out import write_state

    config = dataclasses.replace(loaded.config, task="token-classification", labels=("O", "B-DISH", "I-DISH"),
                                 tag_scheme="bio", classifier_dropout_prob=0.1)
    with staged_output(folder, kind="finetune") as staged:
        with staged.open("model.safetensors", "weights") as fh:
            write_state(fh, {k: v.contiguous() for k, v in loaded.model.state_dict().items()}, {"format": "pt"})
        staged.write_json("config.json", config.to_dict(), "config")
        staged.write_bytes("vocab.txt", (loaded.path / "vocab.txt").read_bytes(), "vocab")


def tag_speed(tagger: str, texts: list[str]) -> dict:
    import transformers

    import zoo

    loaded = zoo.load(tagger, device="cpu")
    hf = zoo.export(tagger, Path(tagger).with_name("tagger-hf")).path
    pipe = transformers.pipeline("token-classification", model=str(hf), aggregation_strategy="simple", device="cpu")
    loaded.tag(texts[:4])
    pipe(texts[:4])
    began = time.perf_counter()
    loaded.tag(texts, batch_size=32)
    ours = len(texts) / (time.perf_counter() - began)
    began = time.perf_counter()
    pipe(texts, batch_size=32)
    theirs = len(texts) / (time.perf_counter() - began)
    return {"zoo_texts_per_s": ours, "transformers_texts_per_s": theirs}


def child(kind: str, *args: str) -> dict:
    """One side in its own process: its result and its peak RSS."""
    done = subprocess.run([sys.executable, __file__, "--child", kind, *args], capture_output=True, text=True,
                          check=False)
    if done.returncode:
        raise SystemExit(f"{kind} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=sorted(MODELS), default="albert_base")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--child", nargs="+")
    args = parser.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    if args.child:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        kind, *rest = args.child
        result = {"zoo": run_zoo, "transformers": run_transformers}[kind](*rest[:3], *map(int, rest[3:]))
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return
    folder = Path(tempfile.mkdtemp(prefix="zoo-finetune-bench-"))
    base, train = make_inputs(folder, args.model, args.seq, max(args.batch * args.steps, 64))
    sizes = [str(args.batch), str(args.seq), str(args.steps)]
    ours = child("zoo", str(base), str(train), str(folder / "zoo"), *sizes)
    theirs = child("transformers", str(base), str(train), str(folder / "hf-run"), *sizes)
    rng = random.Random(1)
    # reviews as people write them: from a few characters to a paragraph (log-uniform 6 to 250 characters)
    texts = ["".join(rng.choice("我很喜欢这家的今天吃了推荐朋友点了味道不错服务") for _ in range(int(6 * 40 ** rng.random())))
             + rng.choice(DISHES) + "。" for _ in range(args.texts)]
    tags = tag_speed(str(folder / "zoo"), texts)
    print(json.dumps({"model": args.model, "batch": args.batch, "seq": args.seq, "steps": args.steps,
                      "zoo": ours, "transformers": theirs,
                      "throughput_ratio": ours["examples_per_s"] / theirs["examples_per_s"],
                      "memory_ratio": ours["peak_rss_mb"] / theirs["peak_rss_mb"], "tag": tags,
                      "tag_ratio": tags["zoo_texts_per_s"] / tags["transformers_texts_per_s"]}, indent=1))


if __name__ == "__main__":
    main()
