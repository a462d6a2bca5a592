#!/usr/bin/env python
"""Thin wrapper: the sweep lives in reinlite.experiments.sweep.

    reinlite sweep --groups methods --seeds 0 1 2 optim.iters=300   # the same flags
"""
from reinlite.experiments.sweep import main

if __name__ == "__main__":
    raise SystemExit(main(prog="python data_scripts/sweep.py"))
