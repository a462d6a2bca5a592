"""Training and evaluation.

    train.py        the loop: data order by step, resume, DDP, logging
    optim.py        AdamW parameter groups, the poly schedule, the backbone lr multiplier
    checkpoint.py   a run's own checkpoints (trainable weights + config, optimiser state)
    evaluate.py     slide / whole inference, the one mIoU, eval and predict commands
    diagnostics.py  Rein's scale, feature-delta ratio and query cosine, logged while training
    demo.py         the main job: benchmark, train, evaluate (``make demo``)
"""
