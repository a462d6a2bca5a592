#!/usr/bin/env python
"""Thin wrapper: the domain-shift measurement lives in reinlite.experiments.domain_shift.

    reinlite domain-shift --root data/benchmark [--steps 600] [--scale 0.5]   # the same flags
"""
from reinlite.experiments.domain_shift import main

if __name__ == "__main__":
    raise SystemExit(main(prog="python data_scripts/domain_shift.py"))
