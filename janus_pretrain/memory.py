"""Predicted peak memory per GPU (or CPU process) of one training step, with a breakdown.

    janus memory --config configs/1m.yaml [--set k=v ...] [--ranks 8]     (janus_pretrain/commands/memory.py)

Backends are the kernel sets of model/kernels.py (KERNEL_SETS: cuda, cuda-flex, torch-cuda,
reference; kernel_set() names the one a model runs).

Terms (docs/memory.md lists the assumptions behind each):
- model states: bf16 parameters and gradients, and under ZeRO-2 the fp32 master weights, fp32
  gradient partition and two AdamW moments divided over the data-parallel ranks (expert
  parameters: num_experts / ep_size of them per rank, partitioned over world / ep_size ranks),
  plus DeepSpeed's reduce bucket;
- activations kept across the backbone (everything autograd saves, or only the checkpoint
  inputs under activation checkpointing);
- the peak inside the largest block recomputed in backward (both streams of a layer, or one
  fusion sub-block) with the gradients alive at that moment;
- logits and loss (chunked under model.loss_chunk), the FlexAttention block mask (cuda-flex
  only: the causal-pieces fusion has no mask), workspace.
Each activation width below is the list of tensors autograd keeps, read off the code of the
model and of the kernels (mamba_ssm keeps u, delta, z, B, C, out and chunk-boundary states;
flash/Flex attention and the fusion pieces keep q, k, v, out and the log-sum-exp).

Context parallelism (parallel.cp_size, model/context_parallel.py): each rank keeps the activations
of its seq_len / cp positions; every attention (per-stream and fusion) is ring attention, whose
backward holds two of the ranks' key/value blocks and one fp32 gradient accumulator of a
block's size at a time, plus one kernel call's copies (ring_kv_bytes): all of it sized by the
rank's own slice, so it falls with cp as well. ZeRO still partitions over every rank (the data-parallel world of
DeepSpeed).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from janus_pretrain.config import ConfigError, ModelConfig, RunConfig
from janus_pretrain.model.attention import FUSION_SCORE_BUDGET
from janus_pretrain.model.block_mask import block_mask_bytes
from janus_pretrain.model.context_parallel import CARRY_ELEMENTS
from janus_pretrain.model.kernels import KERNEL_SETS
from janus_pretrain.model.scan import SCAN_BLOCK_STEPS

GIB = 1 << 30
FP32, BF16, INT64 = 4, 2, 8
BACKENDS = tuple(KERNEL_SETS)  # the kernel sets the model predicts for
PIECE_HEAD_MULTIPLE = 8  # the CUDA flash kernels' head-dim multiple (model/piece_kernels.py)
SCAN_LIVE_SLABS = 4  # (B, Di, block, N) fp32 work tensors alive at once in the torch scan's backward
FUSION_SCORE_BYTES = 8  # reference fusion attention: bytes per (query row, key) of a block (mask, buffers; measured)
MAMBA_KERNEL_CHUNK = 2048  # mamba_ssm keeps fp32 states (B, Di, L / 2048, 2N) for its backward
CUDA_RESERVED = int(1.5 * GIB)  # CUDA context, cuBLAS/NCCL workspaces: outside the caching allocator
FRAGMENTATION = 0.05  # caching-allocator slack over the activation peak (CUDA)


@dataclass
class Term:
    name: str
    bytes: float
    note: str = ""


@dataclass
class Estimate:
    terms: list[Term] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(t.bytes for t in self.terms)

    def add(self, name: str, nbytes: float, note: str = "") -> None:
        self.terms.append(Term(name, float(nbytes), note))

    def table(self) -> str:
        width = max(len(t.name) for t in self.terms)
        rows = [f"  {t.name:<{width}}  {t.bytes / GIB:9.3f} GiB  {t.note}" for t in self.terms]
        return "\n".join([*rows, f"  {'total':<{width}}  {self.total / GIB:9.3f} GiB"])


# ----------------------------------------------------------------------------- parameters

@dataclass(frozen=True)
class ParameterCount:
    total: int  # every parameter of the full model (all experts)
    expert: int  # parameters inside MoE experts (sharded over expert-parallel ranks)

    @property
    def dense(self) -> int:
        return self.total - self.expert


def parameter_count(m: ModelConfig) -> ParameterCount:
    """Exact count of JanusForPretraining(m).parameters(), from the layer map."""
    d, di, n, r, f = m.d_model, m.d_inner, m.d_state, m.dt_rank_value, m.ffn_dim
    norm = d
    swiglu = 3 * d * f
    attn = 4 * d * d  # qkv + out projections, no bias
    projections = d * 2 * di + di * d  # Mamba in/out projections
    mamba_own = di * m.d_conv + di + di * (r + 2 * n) + r * di + di + r + 2 * n + di * n + di
    total = m.vocab_size * d + d  # embedding, final norm
    expert = 0
    for i in range(m.n_layers):
        mixer_attention = m.is_attention_layer(i)
        if not mixer_attention and m.tie_mamba_projections:
            total += projections
        for _stream in range(2):
            total += 2 * norm
            total += attn if mixer_attention else mamba_own + (0 if m.tie_mamba_projections else projections)
            if m.is_expert_layer(i):
                total += d * m.num_experts + m.num_experts * swiglu
                expert += m.num_experts * swiglu
            else:
                total += swiglu
    total += 2 * norm + attn + swiglu  # fusion block
    official_mlp = d * 2 * d + 2 * d + 2 * d * d + d  # Linear(D, 2D) + Linear(2D, D), with biases
    total += (0 if not m.final_mlp else official_mlp if m.final_mlp_kind == "janusdna" else swiglu) + d * m.vocab_size  # head
    return ParameterCount(total, expert)


def model_state_terms(est: Estimate, config: RunConfig, gpus: int, deepspeed: dict | None = None) -> None:
    """ZeRO-2 bf16 (or fp32) model states per rank."""
    counts = parameter_count(config.model)
    ep = config.parallel.ep_size
    if gpus % ep:
        raise ConfigError(f"{config.source}: parallel.ep_size={ep} must divide the number of GPUs ({gpus})")
    local = counts.dense + counts.expert / ep  # parameters this rank holds
    owned = counts.dense / gpus + counts.expert / gpus  # partition owned: experts over world/ep ranks
    half = config.train.precision == "bf16"
    pbytes = BF16 if half else FP32
    est.add("parameters", local * pbytes, f"{local / 1e6:.1f} M held per rank ({counts.total / 1e6:.1f} M total)")
    est.add("parameter gradients", local * pbytes, "full-size, before reduction (upper bound)")
    zero = (config.deepspeed or {}).get("zero_optimization", {}) if deepspeed is None else deepspeed
    bucket = float(zero.get("reduce_bucket_size", 5e8))
    est.add("ZeRO reduce bucket", bucket * pbytes, f"DeepSpeed ipg buffer: reduce_bucket_size {bucket:.3g} elements")
    # fp32 master copy, fp32 gradient partition, AdamW m and v, and ZeRO-2's contiguous gradient
    # partition in the model dtype (grads_in_partition)
    master = (FP32 if half else 0) + FP32 + 2 * FP32 + pbytes
    est.add("optimizer states (ZeRO-2)", owned * master, f"fp32 master/grad + AdamW over {gpus} ranks")


# ----------------------------------------------------------------------------- activations

@dataclass(frozen=True)
class Widths:
    """Bytes per row that one block keeps for backward, and its backward transient."""

    kept: float
    transient: float


def _act_bytes(backend: str, precision: str) -> int:
    return BF16 if backend != "reference" and precision == "bf16" else FP32


def _package_kernels(backend: str) -> bool:
    return backend in ("cuda", "cuda-flex")


# fp32 (B, Di, l) tensors the context-parallel scan correction keeps per row (scan_carry_correction:
# softplus input, delta, its cumsum, delta x u, u, the carried outputs, z and silu(z))
CARRY_KEPT_DI = 8


def _mamba(m: ModelConfig, s: int, backend: str, cp: int = 1) -> Widths:
    """Pre-norm Mamba mixer of one stream, per row (its input row excluded: the caller keeps it)."""
    widths = _mamba_kernels(m, s, backend)
    if cp == 1:
        return widths
    # plus, in backward, the correction's fp32 output gradient and that of its input u
    return Widths(widths.kept + FP32 * CARRY_KEPT_DI * m.d_inner, widths.transient + FP32 * 2 * m.d_inner)


def _mamba_kernels(m: ModelConfig, s: int, backend: str) -> Widths:
    d, di, n, r = m.d_model, m.d_inner, m.d_state, m.dt_rank_value
    small = (r + 2 * n) + r + 4 * n  # x_proj output, normed dt, normed and transposed B/C
    if backend == "torch-cuda":
        # model dtype s: normed input, xz, conv output, silu(u), gated output; fp32 copies the
        # chunked scan keeps: u, delta + bias, softplus, y + uD, z, silu(z) (7 Di on CPU: no casts)
        kept = s * (d + 2 * di + 3 * di) + FP32 * (6 * di + small + 4)
        transient = s * 2 * di + FP32 * 4 * di  # dxz; du, ddelta, dz and dy of the scan backward
        return Widths(kept, transient)
    if _package_kernels(backend):
        # normed input, xz (B, 2Di, L), conv output, dt, scan `out`, gated output (out_proj
        # input); fp32 rstds and the kernel's chunk-boundary states
        kept = s * (d + 2 * di + di + di + di + di + small) + FP32 * (4 + 2 * n * di / MAMBA_KERNEL_CHUNK)
        transient = s * (2 * di + 3 * di)  # dxz, du/ddelta/dz of the scan backward
    else:
        # normed input, xz, conv output, silu(u), delta+bias, softplus, y+uD, silu(z), gated output
        kept = s * (d + 2 * di + 7 * di + small + 4)
        transient = s * (2 * di + 4 * di)  # dxz; du, ddelta, dz and dy of the scan backward
    return Widths(kept, transient)


def _attention(m: ModelConfig, s: int, backend: str) -> Widths:
    """Pre-norm causal multi-head attention over one row (input row excluded); also the fusion
    attention of the reference and Flex paths."""
    d = m.d_model
    # normed input, qkv, head-merged output copy (out_proj input); kernels also keep out + lse
    kept = s * (d + 3 * d + d) + FP32 * 1
    if backend != "reference":  # flash_attn, SDPA's flash kernel and Flex keep out and lse
        kept += s * d + FP32 * m.n_heads
    return Widths(kept, s * (3 * d + 2 * d))


def _fusion_attention(m: ModelConfig, s: int, backend: str) -> Widths:
    """Fusion attention per row of the 2L rows (input excluded). Causal pieces, counted off
    model/fusion_pieces.py: kept = normed input, stream-major q, k, v and merged out (head dim
    padded to 8: factor p), out_proj input, fp32 lse per head; backward peak (inside either
    kernel call) = incoming gradient, its stream-major copy (p), 3 reordered cross inputs or the
    self gradients (3p), 3 cross gradients (3p), the kernel's fp32 dq accumulator (2p): 1 + 9p."""
    if backend in ("reference", "cuda-flex"):
        return _attention(m, s, backend)
    d, dh = m.d_model, m.d_model // m.n_heads
    p = -(-dh // PIECE_HEAD_MULTIPLE) * PIECE_HEAD_MULTIPLE / dh
    kept = s * (d + 4 * p * d + d) + FP32 * (m.n_heads + 1)
    return Widths(kept, s * d * (1 + 9 * p))


def ring_kv_bytes(m: ModelConfig, slice_len: int, batch: int, s: int, backend: str, fusion: bool) -> float:
    """Peak transient of one ring attention's backward under context parallelism, for a rank's
    slice of slice_len positions (model/context_parallel.py, _RingAttention.backward). A block is
    `rows` = l per-stream or 2l fusion rows of k and v (model dtype): two blocks alive (the one being
    computed, the one arriving); one fp32 gradient accumulator of a block's size (each rank waits
    for it before it computes); the fp32 dq of the local rows; one kernel call's copies (at most l
    query rows of q, the output gradient and the merged output, l key rows of k and v flipped, the
    kernel's dq, dk, dv, the dq in fp32 and one flipped gradient)."""
    dh = m.d_model // m.n_heads
    multiple = 1 if backend == "reference" else PIECE_HEAD_MULTIPLE  # MathPieces on CPU, flash pieces on CUDA
    width = batch * m.n_heads * (-(-dh // multiple) * multiple)  # B H W per row
    rows = (2 if fusion else 1) * slice_len
    blocks = 2 * 2 * rows * width * s + 2 * rows * width * FP32
    call = slice_len * width * (9 * s + FP32)
    return blocks + rows * width * FP32 + call


def _swiglu(m: ModelConfig, s: int, recompute: bool, rows_per_token: int = 1) -> Widths:
    """Pre-norm SwiGLU (input row excluded): keeps the normed input; its hidden unless recomputed."""
    d, f = m.d_model, m.ffn_dim
    kept = s * d + FP32 + (0 if recompute else rows_per_token * s * 4 * f)
    return Widths(kept, rows_per_token * s * (2 * d + (0 if recompute else 2 * f)))


def _moe(m: ModelConfig, s: int, recompute: bool) -> Widths:
    """Router, dispatch (sorted copies of the top-k rows and their outputs) and experts, per token."""
    k, e, d = m.top_k, m.num_experts, m.d_model
    inner = _swiglu(m, s, recompute, rows_per_token=k)
    # probs (fp32), top-k weights, rows gathered per expert, expert outputs, int64 routing indices
    kept = inner.kept + FP32 * (e + 2 * k) + s * 2 * k * d + INT64 * 3 * k
    return Widths(kept, inner.transient + s * 2 * k * d)


def _ffn_chunk_transient(m: ModelConfig, s: int, rows: int) -> float:
    """Bytes of one recomputed FFN chunk: its four (rows, F) tensors, then in backward two F-wide
    gradients while the consumed product is already freed (5F), plus input and output gradients."""
    chunk = min(m.ffn_chunk or rows, rows)
    return chunk * s * (5 * m.ffn_dim + 2 * m.d_model)


def _layer_stream(m: ModelConfig, i: int, s: int, backend: str, recompute_ffn: bool,
                  cp: int = 1) -> tuple[Widths, Widths]:
    """(mixer, FFN) of one stream of layer i; the FFN part includes the mid-layer residual row."""
    mixer = _attention(m, s, backend) if m.is_attention_layer(i) else _mamba(m, s, backend, cp)
    ffn = _moe(m, s, recompute_ffn) if m.is_expert_layer(i) else _swiglu(m, s, recompute_ffn)
    residual = s * m.d_model + FP32  # the mid-layer residual row and rstd, kept by the FFN's norm
    return mixer, Widths(ffn.kept + residual, ffn.transient)


def _workspace(m: ModelConfig, i: int, tokens: int, batch: int, s: int, backend: str, cp: int = 1) -> float:
    """Work memory of layer i's kernels in backward that autograd does not keep; under context
    parallelism the scan correction's (B, Di, t, N) fp32 chunks of CARRY_ELEMENTS (recomputed)."""
    chunk = min(CARRY_ELEMENTS, tokens * m.d_inner * m.d_state)  # a slice shorter than one chunk: smaller
    carry = SCAN_LIVE_SLABS * chunk * FP32 if cp > 1 and not m.is_attention_layer(i) else 0.0
    if _package_kernels(backend) or m.is_attention_layer(i):
        return carry  # mamba_ssm / flash recompute in registers and shared memory
    block = min(tokens, batch * SCAN_BLOCK_STEPS) * m.d_state * m.d_inner  # one time block, all channels
    return SCAN_LIVE_SLABS * block * FP32 + carry


def _fusion_scores(m: ModelConfig, seq_len: int, batch: int, backend: str) -> float:
    if backend != "reference":
        return 0.0  # flash pieces and FlexAttention tile on chip; Flex's block mask is a separate term
    keys = 2 * seq_len
    rows = max(1, min(m.fusion_query_block, FUSION_SCORE_BUDGET // (batch * m.n_heads * keys)))
    return batch * rows * keys * FUSION_SCORE_BYTES


def activation_terms(est: Estimate, m: ModelConfig, seq_len: int, batch: int, backend: str,
                     precision: str, cp: int = 1) -> None:
    """Activations at the peak of backward: what is still kept plus the costliest phase.

    Backward runs phase by phase (loss chunk, fusion FFN, fusion attention, layers last to
    first, one stream at a time); after each, autograd frees what that phase owned, so the peak
    is the maximum over phases of (still kept + what the phase recomputes + its transient).
    cp > 1: this rank's seq_len / cp positions, every attention phase with the ring's blocks and
    gradient accumulators on top (ring_kv_bytes); the fusion runs the causal pieces.
    """
    s = _act_bytes(backend, precision)
    if cp > 1 and backend == "cuda-flex":
        backend = "cuda"  # the context-parallel fusion always runs the causal pieces: no Flex block mask
    seq_len = seq_len // cp
    ring = {fusion: ring_kv_bytes(m, seq_len, batch, s, backend, fusion) if cp > 1 else 0.0
                for fusion in (False, True)}
    tokens = batch * seq_len
    ckpt = m.activation_checkpointing
    recompute = ckpt != "none"
    row = s * m.d_model
    fusion_attn, fusion_ffn = _fusion_attention(m, s, backend), _swiglu(m, s, recompute)
    streams = [_layer_stream(m, i, s, backend, recompute, cp) for i in range(m.n_layers)]
    layer_chunk = _ffn_chunk_transient(m, s, tokens) if recompute else 0.0  # a dense FFN or one expert
    fusion_chunk = _ffn_chunk_transient(m, s, 2 * tokens) if recompute else 0.0
    chunk = min(m.loss_chunk or seq_len, seq_len)
    logits = batch * chunk * m.vocab_size * FP32 * 4  # fp32 logits, log-softmax and their gradients
    readout = tokens * (2 * row + FP32 + INT64 + 2 * FP32)  # norm input, hidden, rstd, labels, weights
    if not m.loss_chunk:
        readout += tokens * (row + m.vocab_size * FP32 * 2)  # head input, logits, log-softmax kept

    # backward visits these phases in this order. Each: (tensors it owns that stay alive from
    # the forward until its backward ran, tensors its recomputation saves, transient on top)
    out_grads = 2 * tokens * row  # gradients of the block's outputs (two streams, or 2L rows)
    saved = (lambda w, rows: 0.0) if recompute else (lambda w, rows: rows * w.kept)
    redo = (lambda w, rows: rows * w.kept) if recompute else (lambda w, rows: 0.0)
    phases = [("head and loss chunk", readout, 0.0, logits)]
    fusion_extra = ring[True] if cp > 1 else _fusion_scores(m, seq_len, batch, backend)
    ring_in = {"fusion attention (2L rows)": ring[True]}  # phase -> its ring's k/v bytes
    for name, w, extra in (("fusion FFN (2L rows)", fusion_ffn, fusion_chunk),
                           ("fusion attention (2L rows)", fusion_attn, fusion_extra)):
        phases.append((name, 2 * tokens * row + saved(w, 2 * tokens), redo(w, 2 * tokens),
                       2 * tokens * w.transient + extra + out_grads))
    for i in reversed(range(m.n_layers)):
        # a stream's FFN runs its backward first (its mixer's tensors still alive), then the mixer
        mixer, ffn = streams[i]
        kinds = "+".join(m.layer_map()[i])
        stream_kept = mixer.kept + ffn.kept
        mid = tokens * row if ckpt == "block" else 0.0  # "block" also checkpoints the mid-layer row
        for stream in (1, 0):  # the backward stream ran last, so its backward comes first
            phases.append((f"layer {i} ({kinds}) stream {stream} FFN", mid + saved(ffn, tokens),
                           redo(Widths(ffn.kept if ckpt == "block" else stream_kept, 0), tokens),
                           max(ffn.transient * tokens, layer_chunk) + out_grads))
            name = f"layer {i} ({kinds}) stream {stream} mixer"
            ring_in[name] = ring[False] if m.is_attention_layer(i) else 0.0
            phases.append((name, tokens * row + saved(mixer, tokens), redo(mixer, tokens),
                           mixer.transient * tokens + _workspace(m, i, tokens, batch, s, backend, cp) + out_grads
                           + ring_in[name]))
    alive = sum(owned for _, owned, _, _ in phases)  # everything kept when backward starts
    peak = (-1.0, "", 0.0, 0.0, 0.0)
    for name, owned, recomputed, transient in phases:
        total = alive + recomputed + transient
        if total > peak[0]:
            peak = (total, name, alive, recomputed, transient)
        alive -= owned  # freed once this phase's backward ran
    _, name, kept, recomputed, transient = peak
    what = "every tensor autograd saves" if ckpt == "none" else "checkpoint inputs, read-out, targets"
    est.add(f"activations kept ({ckpt} checkpointing)", kept, f"{what}, alive at the peak")
    est.add(f"peak phase: {name}, recomputed", recomputed, "tensors its recomputation saves")
    ring_here = ring_in.get(name, 0.0)
    est.add("  its backward transient", transient, "gradients and work buffers of that phase" + (
        f", {ring_here / GIB:.2f} GiB of them the ring attention's k/v blocks (cp {cp})" if ring_here else ""))
    if backend == "cuda-flex":
        est.add("Flex block mask", block_mask_bytes(seq_len), "4 int32 (2L/128)^2 index tensors (B = H = 1)")


# ----------------------------------------------------------------------------- estimates

def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"memory: backend must be one of {', '.join(BACKENDS)}, got {backend!r}")


def step_estimate(config: RunConfig, seq_len: int, backend: str) -> Estimate:
    """One forward+backward of one micro batch: parameter gradients and activations (no optimizer).

    This is what bench/memory_scaling.py measures (a model without DeepSpeed)."""
    _check_backend(backend)
    est = Estimate()
    counts = parameter_count(config.model)
    s = _act_bytes(backend, config.train.precision)
    est.add("parameter gradients", counts.total * s, "")
    activation_terms(est, config.model, seq_len, config.train.micro_batch, backend, config.train.precision,
                     config.parallel.cp_size)
    return est


def training_estimate(config: RunConfig, seq_len: int, backend: str = "cuda", gpus: int = 1) -> Estimate:
    """Peak bytes per rank of a DeepSpeed ZeRO-2 training step at seq_len (each rank holding
    seq_len / parallel.cp_size of every sample)."""
    _check_backend(backend)
    cp = config.parallel.cp_size
    if gpus % cp or seq_len % cp:
        raise ConfigError(f"{config.source}: parallel.cp_size={cp} must divide the number of GPUs ({gpus}) and "
                          f"seq_len ({seq_len})")
    est = Estimate()
    model_state_terms(est, config, gpus)
    n_states = len(est.terms)
    activation_terms(est, config.model, seq_len, config.train.micro_batch, backend, config.train.precision, cp)
    if backend != "reference":
        act = sum(t.bytes for t in est.terms[n_states:])
        est.add("allocator fragmentation", FRAGMENTATION * act, f"{FRAGMENTATION:.0%} of the activation terms")
        est.add("CUDA context and workspaces", CUDA_RESERVED, "outside torch's allocator")
    return est


def max_seq_len(config: RunConfig, device_bytes: float, backend: str = "cuda", gpus: int = 1,
                multiple: int = 1024) -> int:
    """Largest multiple of `multiple` (and of parallel.cp_size) whose predicted peak fits in device_bytes (0 if none)."""
    multiple = math.lcm(multiple, config.parallel.cp_size)

    def fits(length: int) -> bool:
        return training_estimate(config, length, backend, gpus).total <= device_bytes
    if not fits(multiple):
        return 0
    hi = multiple
    while fits(hi * 2) and hi < (1 << 34):
        hi *= 2
    lo, hi = hi, hi * 2  # fits(lo), not fits(hi)
    while hi - lo > multiple:
        mid = (lo + hi) // 2 // multiple * multiple
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def report(config, seq_len: int, backend: str, ranks: int, device_gb: float, source: str) -> str:
    """The memory model's prediction for `config` as printed by `janus memory` and `--dry-run`."""
    est = training_estimate(config, seq_len, backend, ranks)
    device = device_gb * 1e9
    longest = max_seq_len(config, device, backend, ranks)
    m = config.model
    lines = [f"{source}: seq_len {seq_len:,}, micro batch {config.train.micro_batch}, backend {backend}, "
             f"{config.train.precision}, {ranks} GPU(s), ep_size {config.parallel.ep_size}, "
             f"cp_size {config.parallel.cp_size}, "
             f"activation_checkpointing {m.activation_checkpointing}, loss_chunk {m.loss_chunk}, "
             f"ffn_chunk {m.ffn_chunk}",
             est.table(),
             f"predicted peak {est.total / 1e9:.1f} GB of {device_gb:.0f} GB "
             f"({'fits' if est.total <= device else 'does NOT fit'}); longest seq_len that fits: {longest:,} bp"]
    cp = config.parallel.cp_size
    if cp > 1:
        lines.append(f"context parallel: each GPU holds {seq_len // cp:,} of the {seq_len:,} positions; activations "
                     f"fall about as 1/{cp}, and so do the ring attention's key/value blocks (two of {seq_len // cp:,} "
                     f"positions and their fp32 gradients at a time); the weights do not")
    if m.objective != "janus":  # the model above counts two streams and the fusion block
        lines.append(f"note: model.objective={m.objective}: predicted for the janus layout; "
                     + ("an upper bound (clm has no backward stream and no fusion block)" if m.objective == "clm"
                        else "mlm has the same layout; its unmasked fusion runs torch's fused attention, "
                             "not modelled apart"))
    return "\n".join(lines)
