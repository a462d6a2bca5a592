#!/usr/bin/env python
"""Thin wrapper: the linear probe lives in reinlite.experiments.probe.

    reinlite probe --bench DIR --source 300 --target 100 --epochs 20 --size 128 256   # the same flags
"""
from reinlite.experiments.probe import main

if __name__ == "__main__":
    raise SystemExit(main(prog="python data_scripts/probe_backbone.py"))
