"""The model: a frozen ViT refined by Rein, and a Mask2Former-style head.

    rein.py       the Rein layer (Eqs. 3-8) as small pure functions and the module
    backbone.py   any timm ViT, frozen, with a Rein after every block; multi-scale maps + queries
    baselines.py  frozen, full fine-tuning, LoRA, VPT, AdaptFormer (a registry of methods)
    head.py       the Mask2Former-style head (pixel decoder, masked-attention decoder)
    losses.py     Hungarian matching and the class / mask / dice losses
    segmentor.py  backbone + head, and the one builder ``build_model(cfg.model)``
"""
