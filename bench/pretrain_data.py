"""Data pipeline throughput for ``zoo pretrain``: tokenizing a plain-text corpus (MB/s) and building training
examples from it (examples/s: instances + masking + collation into micro-batches), for ALBERT (SOP, n-gram
masking) and BERT (NSP, token masking), single process — the work one data worker does for its share.

The corpus is generated (random sentences of common Chinese characters with some ASCII words), written once;
the vocab is Google's Chinese BERT vocab layout (built here from the same characters).

    .venv/bin/python bench/pretrain_data.py [--mb 5] [--seq 128] [--batches 200]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

CHARS = ("的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而"
         "方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好"
         "应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道"
         "命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长"
         "求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处府研")
WORDS = ["iPhone", "GPU", "the", "model", "2024", "AI", "app", "NLP"]


def make_corpus(path: Path, megabytes: float, seed: int = 0) -> None:
    rnd = random.Random(seed)
    with open(path, "w", encoding="utf-8") as fh:
        size = 0
        while size < megabytes * 1e6:
            for _ in range(rnd.randint(2, 12)):  # a document
                sentence = "".join(rnd.choice(CHARS) for _ in range(rnd.randint(8, 60)))
                if rnd.random() < 0.2:
                    sentence += " " + rnd.choice(WORDS)
                line = sentence + "。\n"
                fh.write(line)
                size += len(line.encode())
            fh.write("\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=5.0)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--micro", type=int, default=32)
    args = parser.parse_args()

    from zoo.tokenizer import Tokenizer
    from zoo.training.corpus import prepare_corpus
    from zoo.training.feeding import BatchSplit, Position, micro_batches
    from zoo.training.instances import InstanceSampler
    from zoo.training.masking import ExampleBuilder, MaskingConfig
    from zoo.training.tasks.pretraining import CorpusData

    work = Path(tempfile.mkdtemp(prefix="zoo-bench-data-"))
    corpus_file = work / "corpus.txt"
    make_corpus(corpus_file, args.mb)
    vocab = ["[PAD]", *(f"[unused{i}]" for i in range(1, 100)), "[UNK]", "[CLS]", "[SEP]", "[MASK]",
             *dict.fromkeys(CHARS), "。", *(w.lower() for w in WORDS)]
    (work / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = Tokenizer.from_file(work / "vocab.txt")
    megabytes = corpus_file.stat().st_size / 1e6
    start = time.perf_counter()
    corpus = prepare_corpus([corpus_file], tokenizer, work / "tokenized")
    tokenize_s = time.perf_counter() - start
    result: dict[str, object] = {"corpus_mb": round(megabytes, 2), "tokens": corpus.num_tokens,
                                 "tokenize_mb_per_s": megabytes / tokenize_s}
    for family, objective, masking in (("albert", "sop", MaskingConfig.albert(args.seq)),
                                       ("bert", "nsp", MaskingConfig.bert(args.seq))):
        sampler = InstanceSampler(corpus, objective=objective, max_seq_length=args.seq)
        builder = ExampleBuilder.from_tokenizer(tokenizer, masking)
        split = BatchSplit(batch=args.micro, world=1, rank=0, accum=1)
        stream = micro_batches(CorpusData(corpus, sampler, builder), split, Position())
        next(stream)
        start = time.perf_counter()
        for _ in range(args.batches):
            next(stream)
        elapsed = time.perf_counter() - start
        result[f"{family}_{objective}_examples_per_s"] = args.batches * args.micro / elapsed
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
