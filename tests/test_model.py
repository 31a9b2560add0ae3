"""Properties of the Janus model: no leak of x[p] into logits[p], equal paths, MoE, sizes."""
from __future__ import annotations


import pytest
import torch
import torch.nn.functional as F

from janus_pretrain.config import ModelConfig
from janus_pretrain.model import JanusForPretraining
from janus_pretrain.model.kernels import Kernels, select_kernels
from janus_pretrain.model.moe import MoEFeedForward
from janus_pretrain.tokenizer import N_ID, PAD_ID
from kernel_shims import shim_cuda_kernels, shim_torch_cuda_pieces
from model_helpers import build, flex_fusion_kernels, random_bases, tiny_config


def _torch_cuda_glue():
    """A GPU without kernel packages: torch ops, fusion pieces on torch's CUDA flash kernel (shim)."""
    return Kernels(fusion="pieces", pieces=shim_torch_cuda_pieces())


# every kernel path the model can take; the CUDA glue runs through shims of the packages' signatures
# (in fp32 the CUDA fusion pieces run the math backend, as on a GPU; bf16 below runs the flash shims)
BACKENDS = {"reference": Kernels, "reference+flex": flex_fusion_kernels,
            "cpu default (fusion pieces)": lambda: select_kernels("auto", "cpu"),
            "cuda-glue+shims": shim_cuda_kernels, "torch-cuda-glue+shims": _torch_cuda_glue,
            "cuda-glue+shims, reference fusion": lambda: shim_cuda_kernels(fusion="reference")}
# FlexAttention has no CPU backward: gradients are checked on the other paths
DIFFERENTIABLE_ON_CPU = sorted(set(BACKENDS) - {"reference+flex"})


def _changed_base(x: torch.Tensor, p: int) -> torch.Tensor:
    y = x.clone()
    y[:, p] = (x[:, p] - 7 + 1) % 4 + 7  # another base
    return y


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_logits_at_p_do_not_depend_on_base_p_but_all_others_do(backend):
    model = build(kernels=BACKENDS[backend]()).eval()
    x = random_bases(2, 37)
    with torch.no_grad():
        base = model(x).logits
        for p in (0, 1, 18, 35, 36):
            diff = (model(_changed_base(x, p)).logits - base).abs().amax(dim=-1)  # (B, L)
            assert torch.equal(diff[:, p], torch.zeros(2)), f"logits[{p}] changed with x[{p}]"
            others = torch.cat([diff[:, :p], diff[:, p + 1:]], dim=1)
            assert (others > 0).all(), f"some position ignores x[{p}]: {others.min()}"


@pytest.mark.parametrize("backend", ["cpu default (fusion pieces)", "cuda-glue+shims", "torch-cuda-glue+shims"])
def test_no_leak_in_bf16_through_the_flash_pieces(backend):
    """bf16 is where the CUDA fusion runs its flash kernels (shims here); the leak test is exact."""
    model = build(kernels=BACKENDS[backend]()).to(torch.bfloat16).eval()
    x = random_bases(1, 23)
    with torch.no_grad():
        base = model(x).logits
        for p in (0, 11, 22):
            diff = (model(_changed_base(x, p)).logits - base).abs().amax(dim=-1)  # (B, L)
            assert diff[0, p] == 0, f"logits[{p}] changed with x[{p}]"
            assert (torch.cat([diff[:, :p], diff[:, p + 1:]], dim=1) > 0).all()


@pytest.mark.parametrize("backend", DIFFERENTIABLE_ON_CPU)
def test_gradient_of_logits_p_wrt_embedding_p_is_zero(backend):
    model = build(kernels=BACKENDS[backend]())
    captured = {}
    model.backbone.embedding.register_forward_hook(lambda mod, inp, out: captured.setdefault("e", out))
    x = random_bases(1, 29)
    logits = model(x).logits
    for p in (0, 14, 28):
        (grad,) = torch.autograd.grad(logits[:, p].sum(), captured["e"], retain_graph=True)
        per_position = grad.abs().amax(dim=-1)[0]  # (L,)
        assert per_position[p] == 0
        assert (torch.cat([per_position[:p], per_position[p + 1:]]) > 0).all()


def _loss_and_grads(config: ModelConfig, x: torch.Tensor):
    model = build(config)
    out = model(x, labels=x)
    out.loss.backward()
    return out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("change", [{"activation_checkpointing": "layer"}, {"activation_checkpointing": "block"},
                                    {"loss_chunk": 7}])
def test_checkpointing_and_loss_chunking_change_nothing(change):
    x = random_bases(2, 40)
    loss_ref, grads_ref = _loss_and_grads(tiny_config(), x)
    loss, grads = _loss_and_grads(tiny_config(**change), x)
    torch.testing.assert_close(loss, loss_ref, rtol=1e-6, atol=1e-6)
    assert grads.keys() == grads_ref.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], grads_ref[name], rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.parametrize("fusion", ["pieces", "auto"])
def test_fusion_pieces_give_the_reference_loss_and_gradients(fusion):
    # kernels=auto on CPU: torch ops (as the reference) and the fusion pieces on the CPU flash kernel
    x = random_bases(2, 33)
    loss_ref, grads_ref = _loss_and_grads(tiny_config(), x)
    loss, grads = _loss_and_grads(tiny_config(kernels="auto", fusion_kernel=fusion), x)
    torch.testing.assert_close(loss, loss_ref, rtol=1e-6, atol=1e-6)
    assert grads.keys() == grads_ref.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], grads_ref[name], rtol=1e-4, atol=1e-6, msg=name)


def test_loss_is_mean_ce_over_base_targets_plus_aux():
    model = build()
    x = random_bases(2, 30)
    labels = x.clone()
    labels[0, 3], labels[1, 7], labels[1, 8] = N_ID, PAD_ID, N_ID
    weight = torch.rand(2, 30)
    out = model(x, labels=labels, loss_weight=weight)
    ce = F.cross_entropy(out.logits.flatten(0, 1), labels.flatten(), reduction="none").view(2, 30)
    mask = torch.ones(2, 30)
    mask[0, 3] = mask[1, 7] = mask[1, 8] = 0
    expected = (ce * mask * weight).sum() / (mask * weight).sum()
    torch.testing.assert_close(out.ce_loss, expected)
    torch.testing.assert_close(out.loss, expected + model.config.router_aux_loss_coef * out.aux_loss)


def test_moe_aux_loss_is_near_its_uniform_routing_value_at_init():
    # at uniform routing the Switch/Mixtral loss equals top_k; a fresh router (logit std ~0.17) is near
    # it, slightly above because the chosen experts are those with the larger probabilities; a
    # collapsed router (every token to the same experts) would give num_experts
    torch.manual_seed(0)
    model = JanusForPretraining(ModelConfig(kernels="reference"))
    with torch.no_grad():
        aux = model(random_bases(2, 128)).aux_loss
    assert 0.95 * model.config.top_k <= aux.item() <= 1.15 * model.config.top_k


def test_moe_dispatch_equals_dense_per_expert_loop():
    torch.manual_seed(0)
    moe = MoEFeedForward(d_model=16, hidden=24, num_experts=5, top_k=2, std=0.5)
    x = torch.randn(3, 11, 16, requires_grad=True)
    out, _ = moe(x)
    tokens = x.reshape(-1, 16)
    probs = torch.softmax(moe.router(tokens), dim=-1)
    weights, index = probs.topk(2, dim=-1)
    dense = torch.stack([moe.experts[str(e)](tokens) for e in range(5)], dim=1)  # (T, E, D)
    expected = (dense.gather(1, index[..., None].expand(-1, -1, 16)) * weights[..., None]).sum(1)
    torch.testing.assert_close(out.reshape(-1, 16), expected, rtol=1e-5, atol=1e-6)
    g1 = torch.autograd.grad(out.square().sum(), [x, *moe.parameters()])
    g2 = torch.autograd.grad(expected.square().sum(), [x, *moe.parameters()])
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert moe.expert_counts.sum() == 33 * 2
    assert torch.equal(moe.expert_counts, torch.bincount(index.flatten(), minlength=5))


def test_state_dict_keys_are_identical_across_kernel_choices_and_tied_projections_stored_once():
    keys = {choice: list(build(tiny_config(kernels=choice)).state_dict()) for choice in ("reference", "auto", "cuda")}
    assert keys["reference"] == keys["auto"] == keys["cuda"]
    model = build()
    assert "backbone.layers.0.mamba_in_proj.weight" in keys["reference"]
    # tied: the layer stores the pair once, so neither stream's mixer may have its own copy
    assert not any(".mixer.in_proj." in k or ".mixer.out_proj." in k for k in keys["reference"]
                   if ".layers.0." in k)
    layer = model.backbone.layers[0]
    assert layer.fwd.mixer.projections()[0] is layer.bwd.mixer.projections()[0]
    untied = build(tiny_config(tie_mamba_projections=False)).backbone.layers[0]
    assert untied.fwd.mixer.projections()[0] is not untied.bwd.mixer.projections()[0]


def _parameter_counts(config: ModelConfig) -> tuple[int, int]:
    """(total, activated): an MoE token uses top_k of num_experts experts (the reference's count)."""
    model = JanusForPretraining(config)
    total = sum(p.numel() for p in model.parameters())
    experts = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    return total, total - experts + experts * config.top_k // config.num_experts


@pytest.mark.parametrize("config, total, activated", [
    (ModelConfig(), 9.0e6, 2.0e6),  # the reference "72-dim" model
    (ModelConfig(d_model=144, attn_layer_period=0), None, 7.7e6),  # the 131k model, no mid attention
])
def test_reference_sizes_match_the_paper_within_5_percent(config, total, activated):
    got_total, got_activated = _parameter_counts(config)
    assert abs(got_activated - activated) <= 0.05 * activated, got_activated
    if total is not None:
        assert abs(got_total - total) <= 0.05 * total, got_total


def test_dt_bias_and_A_log_follow_mamba_initialisation():
    config = tiny_config()
    mixer = build(config).backbone.layers[0].fwd.mixer
    dt = F.softplus(mixer.dt_proj.bias.detach())
    assert dt.min() >= config.dt_init_floor * 0.999 and dt.max() <= config.dt_max * 1.001
    expected = torch.log(torch.arange(1, config.d_state + 1, dtype=torch.float32)).expand(config.d_inner, -1)
    assert torch.equal(mixer.A_log.detach(), expected)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_no_leak_on_cuda_with_the_kernels_this_gpu_has(dtype):
    """The whole model on the GPU with kernels=auto (package kernels where they import, the fusion
    pieces on the GPU's flash kernel in bf16, math pieces in fp32)."""
    model = build(tiny_config(kernels="auto")).to(device="cuda", dtype=dtype).eval()
    x = random_bases(2, 300).cuda()
    with torch.no_grad():
        base = model(x).logits
        for p in (0, 1, 150, 298, 299):
            diff = (model(_changed_base(x, p)).logits - base).abs().amax(dim=-1)  # (B, L)
            assert torch.equal(diff[:, p], torch.zeros(2, device="cuda", dtype=dtype)), f"logits[{p}] saw x[{p}]"
            assert (torch.cat([diff[:, :p], diff[:, p + 1:]], dim=1) > 0).float().mean() > 0.99
