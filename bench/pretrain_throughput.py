"""CPU pretraining throughput (tokens/s) and peak memory of one training step — forward with the MLM + SOP
losses, backward, gradient clipping, a LAMB update — for an albert_base_zh-sized model (random weights, real
shapes: V 21128, E 128, H 768, 12 layers sharing one group, MLM + SOP heads): zoo's ``Encoder`` against
transformers' ``AlbertForPreTraining`` with the same weights, batch, sequence length, masks and optimizer
(zoo's upstream LAMB for both). Each library runs in its own subprocess (for a clean peak RSS); steps are timed
after one warm-up step.

    .venv/bin/python bench/pretrain_throughput.py [--batch 8] [--seq 128] [--steps 5] [--threads N] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

ALBERT_BASE = dict(vocab_size=21128, embedding_size=128, hidden_size=768, num_hidden_layers=12,
                   num_attention_heads=12, intermediate_size=3072, max_position_embeddings=512, hidden_act="relu")


def batch(n: int, t: int, seed: int = 0):  # noqa: ANN201 - tensors
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


def run_one(library: str, n: int, t: int, steps: int, threads: int | None, device: str) -> dict[str, float]:
    import torch

    if threads:
        torch.set_num_threads(threads)
    from zoo.config import ModelConfig
    from zoo.models.encoder import Encoder
    from zoo.training.optim import clip_by_global_norm, create_optimizer, param_groups

    config = ModelConfig(architecture="albert", **ALBERT_BASE, hidden_dropout_prob=0.0,
                         attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    ours = Encoder(config, heads="pretraining")
    ids, mask, types, labels, order = (x.to(device) for x in batch(n, t))
    if library == "zoo":
        model = ours.to(device).train().requires_grad_(True)

        def step_loss():  # noqa: ANN202
            return model(ids, attention_mask=mask, token_type_ids=types, labels=labels,
                         seq_relationship_labels=order).loss
    else:
        import transformers

        from zoo.converters import hf_names

        data = hf_names.transformers_config(config, "pretraining")
        data["classifier_dropout_prob"] = 0.0  # zoo's SOP head has no dropout here either: same computation
        model = transformers.AlbertForPreTraining(transformers.AutoConfig.for_model(**data))
        model.load_state_dict(hf_names.to_transformers(ours.state_dict(), config, "pretraining"), strict=True)
        model = model.to(device).train()
        del ours

        def step_loss():  # noqa: ANN202
            return model(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels,
                         sentence_order_label=order).loss

    optimizer, schedule = create_optimizer(param_groups(list(model.named_parameters())), optimizer="lamb",
                                           init_lr=1e-4, num_train_steps=1000)
    times, losses = [], []
    for i in range(steps + 1):
        start = time.perf_counter()
        loss = step_loss()
        loss.backward()
        clip_by_global_norm([p for p in model.parameters() if p.grad is not None], 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - start)
        losses.append(float(loss))
    return {"step_s": statistics.median(times), "tokens_per_s": n * t / statistics.median(times),
            "first_loss": losses[0], "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", choices=("zoo", "transformers"))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(args.child, args.batch, args.seq, args.steps, args.threads, args.device)))
        return
    results = {}
    for library in ("zoo", "transformers"):
        cmd = [sys.executable, __file__, "--child", library, "--batch", str(args.batch), "--seq", str(args.seq),
               "--steps", str(args.steps), "--device", args.device]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        results[library] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    # the same weights and batch: the losses of the first step agree
    assert abs(results["zoo"]["first_loss"] - results["transformers"]["first_loss"]) < 1e-3, results
    results["zoo_vs_transformers_tokens_per_s"] = results["zoo"]["tokens_per_s"] / results["transformers"]["tokens_per_s"]
    results["zoo_vs_transformers_peak_rss"] = results["zoo"]["peak_rss_mb"] / results["transformers"]["peak_rss_mb"]
    results.update(batch=args.batch, seq=args.seq, steps=args.steps, device=args.device)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
