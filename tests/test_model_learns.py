"""The tiny model learns on a real genome (S. cerevisiae chrI, bundled in data/genomes)."""
from __future__ import annotations

import gzip
import math

import torch

from janus_pretrain.tokenizer import encode
from model_helpers import build, tiny_config


def _genome_ids(path) -> torch.Tensor:
    with gzip.open(path) as handle:
        return encode(b"".join(line.strip() for line in handle if not line.startswith(b">")))


def test_loss_decreases_on_a_real_genome(repo_root):
    ids = _genome_ids(repo_root / "data/genomes/scer_chrI.fna.gz")
    train, held_out = ids[:200_000], ids[200_000:]
    gen = torch.Generator().manual_seed(0)

    def crops(source: torch.Tensor, batch: int = 4, length: int = 256) -> torch.Tensor:
        starts = torch.randint(0, len(source) - length, (batch,), generator=gen).tolist()
        return torch.stack([source[s:s + length] for s in starts])

    model = build(tiny_config(scan_chunk=32, fusion_query_block=512))
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-3, betas=(0.9, 0.95), weight_decay=0.1)
    probe = crops(held_out, batch=8)
    losses = []
    for _ in range(40):
        x = crops(train)
        out = model(x, labels=x)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.ce_loss.item())
    with torch.no_grad():
        held_out_ce = model(probe, labels=probe).ce_loss.item()
    assert sum(losses[-5:]) / 5 < losses[0] - 1.0, losses  # from ~ln(16) at init
    assert held_out_ce < math.log(4), held_out_ce  # better than a uniform guess over A/C/G/T
