#!/usr/bin/env python
"""Thin wrapper: the course-backbone pretraining lives in reinlite.experiments.pretrain.

    reinlite pretrain --out /tmp/course_vit_run --steps N --seed 0     # the same flags
"""
from reinlite.experiments.pretrain import main

if __name__ == "__main__":
    raise SystemExit(main(prog="python data_scripts/pretrain_course_vit.py"))
