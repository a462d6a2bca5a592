"""The model: a frozen ViT refined by Rein, and a Mask2Former-style head.

    rein.py       the Rein layer (Eqs. 3-12 of arXiv 2312.04265v1) as small pure functions and the module
    backbone.py   any timm ViT, frozen, as multi-scale maps (ViTBackbone); with a Rein after
                  every block and its queries (ReinBackbone)
    baselines.py  frozen, full fine-tuning, LoRA, VPT, AdaptFormer (METHODS: the registry)
    head.py       the Mask2Former-style head: masked-attention decoder fed by Rein's queries
    pixel_decoder.py  the head's pixel decoders by name (PIXEL_DECODERS: msdeform, fpn)
    losses.py     Hungarian matching and the class / mask / dice losses
    segmentor.py  backbone + head, and the one builder ``build_model(cfg.model)``
Every default lives in reinlite.config (ReinConfig, HeadConfig, LossConfig, LoraConfig, ...).
"""
