"""CPU pretraining throughput (tokens/s) and peak memory of one training step — forward with the MLM + SOP/NSP
losses, backward, gradient clipping, a LAMB update — for an albert_base_zh-sized model (random weights, real
shapes: V 21128, E 128, H 768, 12 layers sharing one group, MLM + SOP heads; ``--model bert_base``: BERT-base
Chinese, MLM + NSP): zoo's ``Encoder`` against transformers' ``AlbertForPreTraining`` (``BertForPreTraining``) with the same weights, batch, sequence length, masks and optimizer
(zoo's upstream LAMB for both). Speed: both models in one process, their steps alternating (so both see the same
machine load), after one warm-up step each; median step time. Peak RSS: each library alone in a subprocess.

    .venv/bin/python bench/pretrain_throughput.py [--batch 8] [--seq 128] [--steps 5] [--threads N] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

MODELS = {
    "albert_base": dict(architecture="albert", vocab_size=21128, embedding_size=128, hidden_size=768,
                        num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                        max_position_embeddings=512, hidden_act="relu"),
    "bert_base": dict(architecture="bert", vocab_size=21128, hidden_size=768, num_hidden_layers=12,
                      num_attention_heads=12, intermediate_size=3072, max_position_embeddings=512,
                      hidden_act="gelu_new"),
}
MODEL = "albert_base"


def batch(n: int, t: int, seed: int = 0):
    """A pretraining batch: 15% of positions predicted (at most 20 per example), half the pairs swapped."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 21000, (n, t), generator=gen)
    labels = torch.full((n, t), -100)
    for row in range(n):
        positions = torch.randperm(t - 2, generator=gen)[: min(20, round(0.15 * t))] + 1
        labels[row, positions] = ids[row, positions]
        ids[row, positions] = 4  # [MASK]
    types = torch.zeros_like(ids)
    types[:, t // 2:] = 1
    order = torch.randint(0, 2, (n,), generator=gen)
    return ids, torch.ones_like(ids), types, labels, order


def config():
    from zoo.config import ModelConfig

    return ModelConfig(**MODELS[MODEL], hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def weights_file() -> str:
    """Random albert_base-sized weights (canonical names), written once and shared by both libraries."""
    import tempfile

    import torch
    from safetensors.torch import save_file

    from zoo.models.encoder import Encoder

    path = Path(tempfile.gettempdir()) / f"zoo-bench-pretrain-{MODEL}.safetensors"
    if not path.exists():
        torch.manual_seed(0)
        save_file({k: v.contiguous() for k, v in Encoder(config(), heads="pretraining").state_dict().items()},
                  str(path))
    return str(path)


def build(library: str, n: int, t: int, threads: int | None, device: str):
    """A function running one training step of ``library``'s model; returns the loss."""
    import torch
    from safetensors.torch import load_file

    if threads:
        torch.set_num_threads(threads)
    from zoo.models.encoder import Encoder
    from zoo.training.optim import clip_by_global_norm, create_optimizer, param_groups

    state = load_file(weights_file())
    ids, mask, types, labels, order = (x.to(device) for x in batch(n, t))
    if library == "zoo":
        model = Encoder(config(), heads="pretraining")
        model.load_state_dict(state)
        model = model.to(device).train().requires_grad_(True)

        def loss_of() -> torch.Tensor:
            return model(ids, attention_mask=mask, token_type_ids=types, labels=labels,
                         seq_relationship_labels=order).loss
    else:
        import transformers

        from zoo.converters import hf_names

        data = hf_names.transformers_config(config(), "pretraining")
        data["classifier_dropout_prob"] = 0.0  # zoo's SOP head has no dropout here either: same computation
        model = getattr(transformers, data["architectures"][0])(transformers.AutoConfig.for_model(**data))
        model.load_state_dict(hf_names.to_transformers(state, config(), "pretraining"), strict=True)
        model = model.to(device).train()

        def loss_of() -> torch.Tensor:
            pair = {"sentence_order_label" if MODEL.startswith("albert") else "next_sentence_label": order}
            return model(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels, **pair).loss
    del state

    optimizer, schedule = create_optimizer(param_groups(list(model.named_parameters())), optimizer="lamb",
                                           init_lr=1e-4, num_train_steps=1000)

    def step() -> float:
        loss = loss_of()
        loss.backward()
        clip_by_global_norm([p for p in model.parameters() if p.grad is not None], 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        return float(loss.detach())

    return step


def speed(n: int, t: int, steps: int, threads: int | None, device: str) -> dict[str, object]:
    runs = {library: build(library, n, t, threads, device) for library in ("zoo", "transformers")}
    first = {library: run() for library, run in runs.items()}  # warm-up; the same weights and batch agree
    assert abs(first["zoo"] - first["transformers"]) < 1e-3, first
    times: dict[str, list[float]] = {library: [] for library in runs}
    for _ in range(steps):
        for library, run in runs.items():
            start = time.perf_counter()
            run()
            times[library].append(time.perf_counter() - start)
    out: dict[str, object] = {"first_loss": first}
    for library, t_ in times.items():
        out[f"{library}_tokens_per_s"] = n * t / statistics.median(t_)
    return out


def peak_rss(library: str, n: int, t: int, threads: int | None, device: str) -> float:
    step = build(library, n, t, threads, device)
    step()
    step()
    # VmHWM: the peak of this process image (ru_maxrss would carry over the parent's peak across fork + exec)
    with open("/proc/self/status", encoding="ascii") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM")) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", choices=tuple(MODELS), default="albert_base")
    parser.add_argument("--child", choices=("zoo", "transformers"))
    args = parser.parse_args()
    global MODEL
    MODEL = args.model
    if args.child:
        print(json.dumps(peak_rss(args.child, args.batch, args.seq, args.threads, args.device)))
        return
    result = speed(args.batch, args.seq, args.steps, args.threads, args.device)
    for library in ("zoo", "transformers"):
        cmd = [sys.executable, __file__, "--child", library, "--model", args.model, "--batch", str(args.batch),
               "--seq", str(args.seq),
               "--device", args.device] + (["--threads", str(args.threads)] if args.threads else [])
        result[f"{library}_peak_rss_mb"] = json.loads(subprocess.run(cmd, check=True, capture_output=True,
                                                                     text=True).stdout)
    result["zoo_over_transformers_tokens_per_s"] = result["zoo_tokens_per_s"] / result["transformers_tokens_per_s"]  # type: ignore[operator]
    result["zoo_over_transformers_peak_rss"] = result["zoo_peak_rss_mb"] / result["transformers_peak_rss_mb"]  # type: ignore[operator]
    result.update(model=args.model, batch=args.batch, seq=args.seq, steps=args.steps, device=args.device)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
