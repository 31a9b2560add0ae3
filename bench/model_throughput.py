"""Training throughput of the Janus model on this machine (forward + backward + AdamW step).

    python bench/model_throughput.py                       # 72-dim model, L=1024 and 16384, both fusions
    python bench/model_throughput.py --vs-jamba            # plus transformers' Jamba of equal size
    python bench/model_throughput.py --config configs/1k.yaml --seq-lens 1024 4096 --fusion-kernels pieces

Figures are printed as ratios against baselines measured in the same run (machines are noisy):
Janus at L=1024 vs Jamba at L=256 (Jamba's best case on CPU: its attention path is quadratic),
Janus at the longest L vs Janus at L=1024 (linear time means a ratio near 1), and each fusion
kernel (model.fusion_kernel) against the first one given, at each L.
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from janus_pretrain.config import ModelConfig, load_config
from janus_pretrain.model import JanusForPretraining


# wall: elapsed time; process: CPU time of this process, which a crowded shared machine does not
# inflate (meaningful with --threads 1, where CPU time and elapsed time agree on an idle machine)
CLOCKS = {"wall": time.perf_counter, "process": time.process_time}


def tokens_per_second(model: torch.nn.Module, seq_len: int, batch: int, steps: int, loss_of,
                      clock=time.perf_counter) -> float:
    return interleaved_tokens_per_second({"model": model}, seq_len, batch, steps, loss_of, clock)["model"]


def interleaved_tokens_per_second(models: dict, seq_len: int, batch: int, steps: int, loss_of,
                                  clock=time.perf_counter) -> dict:
    """Training tokens/s of each model; their steps alternate, so that a shared machine's load
    changes hit all of them alike (a ratio between them is then worth more than each figure)."""
    optimizers = {name: torch.optim.AdamW(model.parameters(), lr=1e-4) for name, model in models.items()}
    x = torch.randint(7, 11, (batch, seq_len))
    timings = {name: [] for name in models}
    for step in range(steps + 1):  # the first step warms up allocators and caches
        for name, model in models.items():
            start = clock()
            loss = loss_of(model, x)
            optimizers[name].zero_grad(set_to_none=True)
            loss.backward()
            optimizers[name].step()
            if step:
                timings[name].append(clock() - start)
    return {name: batch * seq_len / (sum(t) / len(t)) for name, t in timings.items()}


def janus_loss(model, x):
    return model(x, labels=x).loss


def jamba_model(config: ModelConfig, n_layers: int):
    from transformers import JambaConfig, JambaForCausalLM

    jamba = JambaConfig(vocab_size=config.vocab_size, hidden_size=config.d_model, num_hidden_layers=n_layers,
                        intermediate_size=config.ffn_dim, num_attention_heads=config.n_heads,
                        num_key_value_heads=config.n_heads, num_experts=config.num_experts,
                        num_experts_per_tok=config.top_k, expert_layer_period=config.expert_layer_period,
                        expert_layer_offset=config.expert_layer_offset, attn_layer_period=8, attn_layer_offset=4,
                        mamba_d_state=config.d_state, mamba_d_conv=config.d_conv, mamba_expand=config.expand,
                        use_mamba_kernels=False, output_router_logits=True,
                        router_aux_loss_coef=config.router_aux_loss_coef)
    return JambaForCausalLM(jamba)


def jamba_loss(model, x):
    return model(input_ids=x, labels=x).loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="run YAML whose model section to use (default: the 72-dim reference)")
    parser.add_argument("--seq-lens", type=int, nargs="+", default=[1024, 16384])
    parser.add_argument("--tokens-per-step", type=int, default=16384, help="batch = max(1, this // seq_len)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--vs-jamba", action="store_true", help="also time transformers' JambaForCausalLM")
    parser.add_argument("--jamba-seq-len", type=int, default=256)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="process: CPU time (for --threads 1 on a shared machine)")
    parser.add_argument("--fusion-kernels", nargs="+", default=["reference", "pieces"],
                        choices=["reference", "pieces", "flex"], help="model.fusion_kernel values to compare")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_config(args.config).model if args.config else ModelConfig()
    # on CPU the other ops run their torch implementations either way; only the fusion differs
    config.kernels = "reference" if not torch.cuda.is_available() else config.kernels
    models = {}
    for fusion in args.fusion_kernels:  # same seed: the same weights on every fusion path
        torch.manual_seed(0)
        models[fusion] = JanusForPretraining(dataclasses.replace(config, fusion_kernel=fusion))
    janus = models[args.fusion_kernels[-1]]
    print(f"Janus d_model={config.d_model} n_layers={config.n_layers} (x2 streams), "
          f"{sum(p.numel() for p in janus.parameters()) / 1e6:.2f} M parameters, threads={torch.get_num_threads()}, "
          f"{args.clock} clock, fusion kernels {', '.join(args.fusion_kernels)} (steps interleaved)")
    results = {}
    for seq_len in args.seq_lens:
        batch = max(1, args.tokens_per_step // seq_len)
        measured = interleaved_tokens_per_second(models, seq_len, batch, args.steps, janus_loss, CLOCKS[args.clock])
        for fusion, tps in measured.items():
            results[fusion, seq_len] = tps
            print(f"  janus   L={seq_len:>7} batch={batch:>3} fusion={fusion:<9}: {tps:9.1f} tokens/s", flush=True)
    base_len, first = args.seq_lens[0], args.fusion_kernels[0]
    for fusion in args.fusion_kernels:
        for seq_len in args.seq_lens[1:]:
            print(f"ratio janus L={seq_len} / janus L={base_len} ({fusion} fusion): "
                  f"{results[fusion, seq_len] / results[fusion, base_len]:.2f} (1.0 = linear time)")
        if fusion != first:
            for seq_len in args.seq_lens:
                print(f"ratio {fusion} / {first} fusion at L={seq_len}: "
                      f"{results[fusion, seq_len] / results[first, seq_len]:.2f}")
    janus_tps = results[args.fusion_kernels[-1], base_len]
    if args.vs_jamba:
        torch.manual_seed(0)
        jamba = jamba_model(config, n_layers=2 * config.n_layers)
        batch = max(1, args.tokens_per_step // args.jamba_seq_len)
        jamba_tps = tokens_per_second(jamba, args.jamba_seq_len, batch, args.steps, jamba_loss, CLOCKS[args.clock])
        print(f"  jamba   L={args.jamba_seq_len:>7} batch={batch:>3}: {jamba_tps:9.1f} tokens/s "
              f"({sum(p.numel() for p in jamba.parameters()) / 1e6:.2f} M parameters, {2 * config.n_layers} layers)")
        print(f"ratio janus L={base_len} / jamba L={args.jamba_seq_len}: {janus_tps / jamba_tps:.2f} "
              f"(target >= 5)")


if __name__ == "__main__":
    main()
