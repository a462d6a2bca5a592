"""Experiments as package code: each module owns one `reinlite <subcommand>`.

    probe.py          linear probe of a frozen backbone, source -> targets  (reinlite probe)
    pretrain.py       pretrain the proxy-supervised course backbone         (reinlite pretrain)
    pretrain_mae.py   pretrain the self-supervised (MAE-style) one          (reinlite pretrain-mae)
    domain_shift.py   how far apart the benchmark's domains are             (reinlite domain-shift)
    corpus.py         the procedural pretraining corpus both pretrainings share
"""
