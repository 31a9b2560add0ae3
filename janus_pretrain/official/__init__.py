"""The official JanusDNA code's on-disk formats (github.com/Qihao-Duan/JanusDNA, Lightning + Hydra).

  lightning_file.py  reading a Lightning .ckpt without running code from it, and writing one
  names.py           official state-dict names <-> ours (tensors only, both directions)
  variant.py         the official model config <-> our ModelConfig, checked against the weights
  convert.py         official checkpoint -> export (`janus convert --from janusdna`) and
                     export -> official checkpoint (`janus convert --to janusdna`)

docs/janusdna.md says what differs between the official model and ours and how each difference
is represented (model.fusion_scale_dim, norm_eps, final_mlp_kind, tokenizer, init,
aux_loss_pooling, loss_targets; attention 'every 100 layers' is attn_layer_period 0).
"""
