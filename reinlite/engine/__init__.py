"""Training and evaluation.

    step.py         the one training step: forward (AMP), loss, backward, clip, optimizer step
    device.py       the one device and AMP rule (pick_device, amp_enabled)
    train.py        the loop: data order by step, resume, DDP, logging
    optim.py        the one AdamW builder (parameter groups, the backbone lr multiplier),
                    the poly schedule and the pretraining's warm-up + cosine
    checkpoint.py   a run's own checkpoints (trainable weights + config, optimiser state)
    evaluate.py     slide / whole inference, the one mIoU, eval and predict commands
    diagnostics.py  Rein's scale, feature-delta ratio and query cosine, logged while training
    demo.py         the main job: benchmark, train, evaluate (``make demo``)
"""
