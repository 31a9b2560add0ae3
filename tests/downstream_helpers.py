"""Small models, exports and FASTA files shared by the export and downstream tests."""
from __future__ import annotations

from pathlib import Path

import torch

from janus_pretrain.config import ModelConfig
from janus_pretrain.export import save_pretrained
from janus_pretrain.model import JanusForPretraining

# Mamba + per-stream attention (layer 0) + MoE (layer 1) + fusion: every parameter kind
SMALL = ModelConfig(d_model=16, n_layers=2, attn_layer_period=2, attn_layer_offset=0, expert_layer_period=2,
                    expert_layer_offset=1, num_experts=4, top_k=2, intermediate_size=32, n_heads=2, d_state=4,
                    expand=2, kernels="reference", scan_chunk=16, fusion_query_block=64)


def small_model(seed: int = 0, config: ModelConfig = SMALL, perturb: bool = True) -> JanusForPretraining:
    """A small model; `perturb` moves every weight off its init (norm weights are all 1 at init,
    which would hide a norm loaded into the wrong slot)."""
    torch.manual_seed(seed)
    model = JanusForPretraining(config)
    if perturb:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def small_export(directory: Path, seed: int = 0, config: ModelConfig = SMALL) -> tuple[JanusForPretraining, Path]:
    model = small_model(seed, config)
    return model, save_pretrained(model, directory / "export", {"step": 0})


def write_fasta(path: Path, records: list[tuple[str, str]], width: int = 50) -> Path:
    lines = []
    for name, seq in records:
        lines.append(f">{name} test")
        lines += [seq[i:i + width] for i in range(0, len(seq), width)]
    path.write_text("\n".join(lines) + "\n")
    return path


def random_dna(length: int, seed: int) -> str:
    gen = torch.Generator().manual_seed(seed)
    return "".join("ACGT"[i] for i in torch.randint(0, 4, (length,), generator=gen).tolist())
