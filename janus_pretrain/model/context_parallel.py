"""Context parallelism: one sequence split over the ranks of a CP group, exact (docs/training.md).

Who holds what. With P ranks and L = P * l positions, CP rank r holds positions [r l, (r+1) l) of
every sample, for both streams. Its forward-stream rows are forward slice r (the stream's order is
the positions' order); its backward-stream rows, read in that stream's own causal order (positions
descending, as the model flips them), are backward slice P-1-r. Each stream therefore depends on
the slices before it in its own order: the forward stream on ranks < r, the backward stream on
ranks > r. L not divisible by P is an error (no padding: a pad would be a position the model reads).

What crosses a slice boundary:
- Mamba conv: the last d_conv - 1 inputs of the previous slice in stream order (halo).
- Mamba scan, two passes: each rank scans its slice from a zero state (the ordinary kernel) and
  computes its slice's final state h_end and total decay exp(A sum(delta)); these (B, Di, N) pairs
  are all-gathered, each rank folds those before it into the state entering its slice, h_in, and
  adds the correction C_t . (exp(A cumsum(delta)_t) h_in) to its outputs. No rank waits for
  another's scan; the exchange is 2 B Di N values per rank, layer and stream.
- Attention (per-stream causal, and the fusion's self and cross pieces): ring attention. The
  ranks' key/value blocks go round the ring (P - 1 point-to-point steps, the next block in flight
  while this one is computed); every (query piece, key block) pair is at most three piece-kernel
  calls (block_calls: the diagonal square causal, earlier blocks full, later ones skipped; the
  cross pieces' two-row shift adds one full call where a piece starts inside a block), merged by
  log-sum-exp. Backward sends the blocks round again, each followed by an fp32 accumulator of its
  key/value gradients to which every rank adds its queries' share, and which reaches the block's
  owner after P steps; every piece's kernel backward runs with the row's merged (out, lse)
  (model/piece_kernels.py). A rank holds two blocks at a time, not the whole sequence.
- Read-out out[p] = F[p-1] + B[p+1]: one row from each neighbour.
- Loss and MoE load balancing: sums (weighted CE, target counts, router statistics) summed over
  the group, so every rank sees the whole sequence's value.

Every exchange is a collective (or, in the ring, one send-and-receive step) that all ranks of the
group join, in the same order in forward and in backward (a rank without a predecessor still joins
and multiplies what it got by zero), so the exchanges cannot deadlock on gloo. The gradient of the whole sequence's loss is the SUM over the CP
ranks of each rank's parameter gradients: every rank's loss value is the whole sequence's, but its
backward reaches only its own slice's contributions (sums forward, identity backward).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.autograd.function import once_differentiable
from torch.utils.checkpoint import checkpoint

from janus_pretrain.model.fusion_pieces import CROSS_SHIFT, merge_attention
from janus_pretrain.model.piece_kernels import MathPieces, pick_pieces

# torch 2.13 renamed the flat collectives (the old names warn); older torch has only the old ones
_ALL_GATHER = getattr(dist, "all_gather_single", dist.all_gather_into_tensor)
_REDUCE_SCATTER = getattr(dist, "reduce_scatter_single", dist.reduce_scatter_tensor)
# elements of one (B, Di, t, N) work tensor of the scan's carry terms (fp32: 16 MiB)
CARRY_ELEMENTS = 1 << 22


def _all_gather(x: torch.Tensor, group) -> torch.Tensor:
    size = dist.get_world_size(group)
    out = x.new_empty(size * x.numel())  # flat: gloo rejects a stacked output
    _ALL_GATHER(out, x.contiguous().view(-1), group=group)
    return out.view(size, *x.shape)


def _reduce_scatter(stacked: torch.Tensor, group) -> torch.Tensor:
    """(P, ...) on every rank -> this rank's entry summed over the group."""
    out = stacked.new_empty(stacked.shape[1:])
    _REDUCE_SCATTER(out.view(-1), stacked.contiguous().view(-1), group=group)
    return out


class _GatherSlices(torch.autograd.Function):
    """x on every rank -> (P, ...) every rank's x in rank order; backward: the gradients of the
    gathered entries summed over the group, each rank keeping its own."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return _all_gather(x, group)

    @staticmethod
    def backward(ctx, grad):
        return _reduce_scatter(grad, ctx.group), None


class _SumOverGroup(torch.autograd.Function):
    """Sum over the group forward; identity backward: each rank's backward reaches its own term."""

    @staticmethod
    def forward(ctx, x, group):
        total = x.clone()
        dist.all_reduce(total, group=group)
        return total

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class StreamSlices:
    """One stream's view of the CP group: which slice this rank holds in the stream's causal
    order (index), and exchanges with the slices before it."""

    def __init__(self, group, size: int, rank: int, reverse: bool):
        self.group, self.size, self.rank, self.reverse = group, size, rank, reverse
        self.index = self.index_of(rank)  # this rank's slice in stream order

    def index_of(self, rank: int) -> int:
        """The stream-order slice rank `rank` holds."""
        return self.size - 1 - rank if self.reverse else rank

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """(P, ...) every slice's x, in stream order; differentiable."""
        gathered = _GatherSlices.apply(x, self.group)
        return gathered.flip(0) if self.reverse else gathered

    def from_previous(self, x: torch.Tensor) -> torch.Tensor:
        """The previous slice's x (in stream order); zeros on the first slice. Differentiable."""
        gathered = self.gather(x)
        if self.index == 0:
            return gathered[0] * 0  # keeps the exchange in this rank's graph: its backward is collective
        return gathered[self.index - 1]


class ContextParallel:
    """A CP group as the model sees it: size, this rank's slice, both streams' views."""

    def __init__(self, group=None):
        self.group = group
        self.size = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        self.forward = StreamSlices(group, self.size, self.rank, reverse=False)
        self.backward = StreamSlices(group, self.size, self.rank, reverse=True)

    def stream(self, backward: bool) -> StreamSlices:
        return self.backward if backward else self.forward

    def local_slice(self, seq_len: int, where: str = "data.seq_len") -> slice:
        """Positions this rank holds; L must split evenly over the group."""
        if seq_len % self.size:
            raise ValueError(f"context parallel: {where}={seq_len} is not divisible by parallel.cp_size="
                             f"{self.size}; choose a length that is a multiple of cp_size")
        part = seq_len // self.size
        return slice(self.rank * part, (self.rank + 1) * part)

    def split(self, t: torch.Tensor | None) -> torch.Tensor | None:
        """(B, L, ...) -> this rank's (B, L / P, ...) slice."""
        return None if t is None else t[:, self.local_slice(t.shape[1])]

    def sum(self, x: torch.Tensor) -> torch.Tensor:
        """The group's sum; backward reaches this rank's own term only (the engine sums gradients)."""
        return _SumOverGroup.apply(x, self.group)

    def total(self, x: torch.Tensor) -> torch.Tensor:
        """The group's sum of a value that needs no gradient (e.g. a count)."""
        x = x.detach().clone()
        dist.all_reduce(x, group=self.group)
        return x


# ---------------------------------------------------------------- Mamba


def conv_across_slices(conv, x, weight, bias, activation, stream: StreamSlices):
    """Causal depthwise conv of a slice x (B, Di, l) with the previous slice's last W - 1 inputs."""
    halo = weight.shape[-1] - 1
    if halo == 0:
        return conv(x, weight, bias, activation=activation)
    if x.shape[-1] < halo:
        raise ValueError(f"context parallel: a slice of {x.shape[-1]} positions is shorter than the conv's "
                         f"halo of d_conv - 1 = {halo}; use a longer data.seq_len or a smaller cp_size")
    previous = stream.from_previous(x[..., -halo:])  # (B, Di, W-1)
    return conv(torch.cat([previous, x], dim=-1), weight, bias, activation=activation)[..., halo:]


def _end_state(cum, total, A, x, B):
    """sum_t exp(A (S - cum_t)) x_t B_t over a time chunk: (B, Di, N); S - cum_t >= 0, so <= 1."""
    weight = torch.exp((total[..., None] - cum)[..., None] * A[:, None, :])  # (B, Di, t, N)
    return (weight * (x[..., None] * B.transpose(1, 2)[:, None])).sum(2)


def _carried_outputs(cum, A, C, h_in):
    """C_t . (exp(A cum_t) h_in) over a time chunk: (B, Di, t)."""
    weight = torch.exp(cum[..., None] * A[:, None, :])  # (B, Di, t, N)
    return (weight * h_in[:, :, None, :] * C.transpose(1, 2)[:, None]).sum(-1)


def _time_chunks(cum: torch.Tensor, n_state: int) -> list[slice]:
    batch, dim, length = cum.shape
    step = max(1, CARRY_ELEMENTS // max(batch * dim * n_state, 1))
    return [slice(i, min(i + step, length)) for i in range(0, length, step)]


def _chunked(fn, *args):
    # recomputed in backward: only the (B, Di, l) inputs are kept, never a (B, Di, l, N) tensor
    return checkpoint(fn, *args, use_reentrant=False) if torch.is_grad_enabled() else fn(*args)


def scan_carry_correction(u, dt, A, B, C, z, delta_bias, stream: StreamSlices) -> torch.Tensor:
    """What the states carried in from the previous slices add to a zero-state scan's output y.

    Same layouts as the scan (model/scan.py): u, dt, z (B, Di, l); A (Di, N); B, C (B, N, l);
    delta = softplus(dt + delta_bias). Returns (B, Di, l) in u's dtype, to add to the scan's y
    (which already holds D u and the silu(z) gate).
    """
    work = torch.promote_types(u.dtype, torch.float32)
    delta = F.softplus(dt.to(work) + delta_bias.to(work)[None, :, None])  # (B, Di, l)
    cum = delta.cumsum(-1)
    A, B, C = A.to(work), B.to(work), C.to(work)
    x = delta * u.to(work)
    total = cum[..., -1]  # (B, Di)
    h_end = sum(_chunked(_end_state, cum[..., part], total, A, x[..., part], B[..., part])
                for part in _time_chunks(cum, A.shape[1]))  # (B, Di, N) from a zero entering state
    decay = torch.exp(total[..., None] * A)  # (B, Di, N): the slice's decay of an entering state
    slices = stream.gather(torch.stack([h_end, decay]))  # (P, 2, B, Di, N), stream order
    if stream.index == 0:
        return (slices.sum() * 0).to(u.dtype)  # nothing carried in; still joins the collectives
    h_in = slices[0, 0]
    for j in range(1, stream.index):  # state after slice j = decay_j * (state entering j) + h_end_j
        h_in = slices[j, 1] * h_in + slices[j, 0]
    carried = torch.cat([_chunked(_carried_outputs, cum[..., part], A, C[..., part], h_in)
                         for part in _time_chunks(cum, A.shape[1])], dim=-1)
    if z is not None:
        carried = carried * F.silu(z.to(work))
    return carried.to(u.dtype)


# ---------------------------------------------------------------- attention: a ring
#
# A query piece is a set of this rank's query rows, in the piece's causal order, reading one key
# stream causally: entry e is piece row t = q0 + e and reads key-stream rows 0..t (rows with t < 0
# read nothing). Every rank's block of keys and values covers, per key stream, one contiguous range
# of that stream's rows (the block layout says which, and whether the block holds them reversed).


class _Piece:
    def __init__(self, rows: torch.Tensor, stream: int, q0: int):
        first = max(0, -q0)  # entries before it have t < 0: no key at all
        self.rows, self.stream, self.q0 = rows[first:], stream, q0 + first  # first valid t
        self.count = len(self.rows)
        # rows that are one ascending run of local rows are read as views, not copied
        self.start = int(self.rows[0]) if self.count and torch.equal(
            self.rows, torch.arange(int(self.rows[0]), int(self.rows[0]) + self.count, device=self.rows.device)) else None

    def take(self, t: torch.Tensor, e0: int, e1: int) -> torch.Tensor:
        """Entries e0:e1 of the piece from t's local rows (dim 2: q, out, lse alike), in the piece's order."""
        if self.start is not None:
            return t[:, :, self.start + e0:self.start + e1]
        return t.index_select(2, self.rows[e0:e1])

    def add(self, t: torch.Tensor, e0: int, e1: int, value: torch.Tensor) -> None:
        """t[local rows of entries e0:e1] += value."""
        if self.start is not None:
            t[:, :, self.start + e0:self.start + e1] += value
        else:
            t.index_add_(2, self.rows[e0:e1], value)


def _pieces(*pieces: _Piece) -> list[_Piece]:
    return [p for p in pieces if p.count > 0]  # a cross piece of a 1- or 2-row slice may have no row


def block_calls(q0: int, count: int, k0: int, n: int) -> list[tuple[int, int, int, int, bool]]:
    """The kernel calls of one (query piece, key block) pair: query entries e0:e1 (piece rows
    q0 + e) read block keys c0:c1 (key-stream rows k0 + c), causal on a square diagonal or full.

    Rows that overlap the block read its keys up to themselves: one causal call on the square where
    query and key rows coincide, plus one full call on the block's keys before that square (only
    when the piece starts inside the block: the cross pieces' two-row shift); rows past the block
    read all of it (one full call); rows before it nothing (no call: the later pairs are skipped).
    """
    q1, k1 = q0 + count, k0 + n
    calls = []
    d0, d1 = max(q0, k0), min(q1, k1)
    if d0 < d1:
        calls.append((d0 - q0, d1 - q0, d0 - k0, d1 - k0, True))
        if d0 > k0:
            calls.append((d0 - q0, d1 - q0, 0, d0 - k0, False))
    if max(q0, k1) < q1:
        calls.append((max(q0, k1) - q0, count, 0, n, False))
    return calls


class _Ring:
    """The CP group as a ring: each step a block goes to the next rank and one comes from the
    previous, so at step s this rank holds the block of rank (r - s) mod P."""

    def __init__(self, group):
        self.group = group
        self.size, self.rank = dist.get_world_size(group), dist.get_rank(group)
        world = group if group is not None else dist.group.WORLD
        self.next = dist.get_global_rank(world, (self.rank + 1) % self.size)
        self.previous = dist.get_global_rank(world, (self.rank - 1) % self.size)

    def owner(self, step: int) -> int:
        return (self.rank - step) % self.size

    def pass_on(self, tensor: torch.Tensor, tag: int):
        """Start sending tensor on and receiving the previous rank's; returns a wait() that gives the
        received tensor. tensor must stay unchanged until then (it is being sent)."""
        incoming = torch.empty_like(tensor)
        works = dist.batch_isend_irecv([dist.P2POp(dist.isend, tensor, self.next, self.group, tag),
                                        dist.P2POp(dist.irecv, incoming, self.previous, self.group, tag)])

        def wait() -> torch.Tensor:
            for work in works:
                work.wait()
            works.clear()  # the sent tensor is free once its send is done
            return incoming
        return wait


_KV_TAG, _GRAD_TAG = 1, 2  # the two streams of messages of the backward ring


class _Span:
    """Key stream `stream`'s rows [k0, k0 + count) are the block's rows start:start + count
    (reversed: in reverse order)."""

    def __init__(self, stream: int, k0: int, start: int, count: int, reversed: bool = False):
        self.stream, self.k0, self.start, self.count, self.reversed = stream, k0, start, count, reversed

    def block_rows(self, c0: int, c1: int) -> slice:
        """The block rows of key-stream rows k0 + c0 .. k0 + c1 - 1 (ascending; reversed spans: backwards)."""
        if self.reversed:
            return slice(self.start + self.count - c1, self.start + self.count - c0)
        return slice(self.start + c0, self.start + c1)

    def keys(self, block: torch.Tensor, c0: int, c1: int) -> tuple[torch.Tensor, torch.Tensor]:
        """k and v of key-stream rows k0 + c0 .. k0 + c1 - 1, in stream order (a view unless reversed)."""
        kv = block[:, :, :, self.block_rows(c0, c1)]
        return tuple(kv.flip(3) if self.reversed else kv)

    def add_grads(self, grads: torch.Tensor, dk: torch.Tensor, dv: torch.Tensor, c0: int, c1: int) -> None:
        """Adds stream-ordered gradients of rows c0..c1-1 into the block-layout buffer grads (2, N, H, m, W)."""
        rows = self.block_rows(c0, c1)
        for buffer, grad in ((grads[0], dk), (grads[1], dv)):
            buffer[:, :, rows] += grad.flip(2) if self.reversed else grad


def _calls(pieces, layout: list[_Span]):
    """Every kernel call of this rank's pieces on one block: (piece index, span, e0, e1, c0, c1, causal)."""
    for i, piece in enumerate(pieces):
        span = next(s for s in layout if s.stream == piece.stream)
        for call in block_calls(piece.q0, piece.count, span.k0, span.count):
            yield (i, span, *call)


class _RingAttention(torch.autograd.Function):
    """Local query pieces attending every rank's key block as it comes round the ring; q, k, v
    (N, H, m, W), padded head dim. spans(owner) gives the layout of rank owner's block.

    Forward: P steps; the next block is in flight while this one is computed; each piece keeps a
    running (out, lse) merged by log-sum-exp. Backward: the key/value blocks go round again, each
    followed by an fp32 gradient accumulator that every rank adds its queries' share to; after P
    steps it is back at the rank that owns the block. A rank waits for the accumulator before it
    computes (one accumulator's transfer per step is not hidden), so alive at a time, whatever P
    is: two blocks (the one computed, the one arriving), one accumulator and one call's copies."""

    @staticmethod
    def forward(ctx, q, k, v, pieces, spans, group, kernel, scale):
        ring = _Ring(group)
        work = torch.promote_types(q.dtype, torch.float32)
        outs = [q.new_zeros((*q.shape[:2], p.count, q.shape[3]), dtype=work) for p in pieces]
        lses = [q.new_full((*q.shape[:2], p.count), float("-inf"), dtype=work) for p in pieces]
        states = {}
        block = torch.stack([k, v])
        for step in range(ring.size):
            arriving = ring.pass_on(block, _KV_TAG) if step < ring.size - 1 else None
            owner = ring.owner(step)
            for i, span, e0, e1, c0, c1, causal in _calls(pieces, spans(owner)):
                keys, values = span.keys(block, c0, c1)
                out_c, lse_c, states[owner, i, e0, e1, c0, c1, causal] = kernel.forward(
                    pieces[i].take(q, e0, e1), keys, values, scale, causal=causal)
                outs[i][:, :, e0:e1], lses[i][:, :, e0:e1] = merge_attention(
                    outs[i][:, :, e0:e1], lses[i][:, :, e0:e1], out_c, lse_c)
            if arriving is not None:
                block = arriving()
        del block
        out = q.new_zeros(q.shape, dtype=work)
        lse = q.new_full(q.shape[:3], float("-inf"), dtype=work)
        for piece, out_p, lse_p in zip(pieces, outs, lses):
            out[:, :, piece.rows], lse[:, :, piece.rows] = merge_attention(
                out[:, :, piece.rows], lse[:, :, piece.rows], out_p, lse_p)
        out = out.to(q.dtype)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.pieces, ctx.spans, ctx.group, ctx.kernel, ctx.scale, ctx.states = pieces, spans, group, kernel, scale, states
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        pieces, kernel, scale = ctx.pieces, ctx.kernel, ctx.scale
        ring = _Ring(ctx.group)
        work = torch.promote_types(q.dtype, torch.float32)
        dout = dout.contiguous()
        dq = torch.zeros_like(q, dtype=work)
        block = torch.stack([k, v])
        accumulated = None  # wait(): this rank's last send done, the previous rank's accumulator here
        for step in range(ring.size):
            arriving = ring.pass_on(block, _KV_TAG) if step < ring.size - 1 else None
            owner = ring.owner(step)
            # the block's gradients so far (the ranks before this one added their shares), or zeros
            grads = torch.zeros_like(block, dtype=work) if accumulated is None else accumulated()
            for i, span, e0, e1, c0, c1, causal in _calls(pieces, ctx.spans(owner)):
                piece = pieces[i]
                keys, values = span.keys(block, c0, c1)
                # each row's MERGED out and lse (model/piece_kernels.py)
                dq_c, dk_c, dv_c = kernel.backward(
                    piece.take(dout, e0, e1), piece.take(q, e0, e1), keys, values, piece.take(out, e0, e1),
                    piece.take(lse, e0, e1), ctx.states[owner, i, e0, e1, c0, c1, causal], scale,
                    causal=causal)
                piece.add(dq, e0, e1, dq_c.to(work))
                span.add_grads(grads, dk_c, dv_c, c0, c1)
            accumulated = ring.pass_on(grads, _GRAD_TAG)  # to the next rank; after step P-1, to the owner
            del grads
            if arriving is not None:
                block = arriving()
        dkv = accumulated()  # this rank's own block's gradients, every rank's share summed
        return dq.to(q.dtype), dkv[0].to(k.dtype), dkv[1].to(v.dtype), None, None, None, None, None


def _piece_backend(kernels, dtype):
    """The causal-piece kernel of the model's kernel set (the math pieces where it has none)."""
    return pick_pieces(kernels.pieces or (MathPieces(),), dtype)


def _attend(q, k, v, pieces, spans, group, kernel, scale):
    head_dim = q.shape[-1]
    multiple = kernel.head_dim_multiple
    pad = -head_dim % multiple
    if pad:
        q, k, v = (F.pad(t, (0, pad)) for t in (q, k, v))
    out = _RingAttention.apply(q, k, v, pieces, spans, group, kernel, scale)
    return out[..., :head_dim] if pad else out


def causal_attention_across_slices(kernels, q, k, v, stream: StreamSlices):
    """Per-stream causal attention of a slice: q, k, v (B, l, H, Dh) in stream order -> (B, l, H, Dh)."""
    rows = q.shape[1]
    piece = _Piece(torch.arange(rows, device=q.device), 0, stream.index * rows)

    def spans(owner: int) -> list[_Span]:  # rank owner's block: its slice of the stream, in order
        return [_Span(0, stream.index_of(owner) * rows, 0, rows)]

    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, l, Dh)
    out = _attend(q, k, v, [piece], spans, stream.group, _piece_backend(kernels, q.dtype), q.shape[-1] ** -0.5)
    return out.transpose(1, 2)


def fusion_attention_across_slices(kernels, q, k, v, context: ContextParallel, scale: float | None = None):
    """Janus-masked fusion attention of this rank's 2l rows [forward a..b-1 ; backward a..b-1]
    (positions a = r l, b = a + l): q, k, v (B, H, 2l, Dh) -> (B, H, 2l, Dh).

    The four pieces (docs/fusion.md), in piece rows t (query entry e = t - q0):
      forward self   forward rows a..b-1            reads forward stream rows 0..t,    q0 = a
      forward cross  forward rows b-1..a (reversed) reads backward stream rows 0..t,   q0 = L-2-b
      backward self  backward rows b-1..a           reads backward stream rows 0..t,   q0 = L-b
      backward cross backward rows a..b-1           reads forward stream rows 0..t,    q0 = a-2
    (the backward stream's row j is position L-1-j; the cross pieces' two-row shift makes the
    forward row q read backward positions >= q+2 and the backward row q forward positions <= q-2).
    """
    rows, device = q.shape[2] // 2, q.device
    length, a = context.size * rows, context.rank * rows
    b = a + rows

    def spans(owner: int) -> list[_Span]:
        # rank owner's 2l rows: forward positions in order (forward stream rows from owner * l), then
        # the same positions ascending, which the backward stream (row j = position L-1-j) reads reversed
        return [_Span(0, owner * rows, 0, rows), _Span(1, length - (owner + 1) * rows, rows, rows, reversed=True)]

    local = torch.arange(rows, device=device)
    pieces = _pieces(_Piece(local, 0, a), _Piece(local.flip(0), 1, length - CROSS_SHIFT - b),
                     _Piece(rows + local.flip(0), 1, length - b), _Piece(rows + local, 0, a - CROSS_SHIFT))
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    return _attend(q, k, v, pieces, spans, context.group, _piece_backend(kernels, q.dtype), scale)


# ---------------------------------------------------------------- read-out


def janus_readout_across_slices(fused: torch.Tensor, context: ContextParallel) -> torch.Tensor:
    """(B, 2l, D) this rank's fused rows -> (B, l, D), out[p] = F[p-1] + B[p+1] (model/janus.py);
    F[a-1] comes from the previous rank, B[b] from the next (zero at the sequence's ends)."""
    rows = fused.shape[1] // 2
    forward_rows, backward_rows = fused[:, :rows], fused[:, rows:]
    before = context.forward.from_previous(forward_rows[:, -1:])  # F[a-1]
    after = context.backward.from_previous(backward_rows[:, :1])  # B[b]: the backward stream's previous slice
    return torch.cat([before, forward_rows[:, :-1]], dim=1) + torch.cat([backward_rows[:, 1:], after], dim=1)
