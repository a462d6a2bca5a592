"""Experiments as package code: each module owns one `reinlite <subcommand>`.

    probe.py          linear probe of a frozen backbone, source -> targets  (reinlite probe)
    pretrain.py       pretrain the proxy-supervised course backbone         (reinlite pretrain)
    pretrain_mae.py   pretrain the self-supervised (MAE-style) one          (reinlite pretrain-mae)
    domain_shift.py   how far apart the benchmark's domains are             (reinlite domain-shift)
    corpus.py         the procedural pretraining corpus both pretrainings share
"""
from __future__ import annotations

import argparse
import shlex
from typing import Callable


def command_of(prog: str, args: argparse.Namespace,
               add_arguments: Callable[[argparse.ArgumentParser], None]) -> str:
    """The command line that reruns ``args``: ``prog`` and every option that differs from its default.

    Runs record it (checkpoints, weight records), so the record reproduces the run whether it was
    started through ``reinlite <subcommand>`` or a module's own ``main``.
    """
    ap = argparse.ArgumentParser(add_help=False)
    add_arguments(ap)
    parts: list[str] = []
    for action in ap._actions:
        if not action.option_strings or action.default == argparse.SUPPRESS and not hasattr(args, action.dest):
            continue
        value = getattr(args, action.dest, action.default)
        default = action.default
        if isinstance(value, (list, tuple)) and isinstance(default, (list, tuple)):
            same = list(value) == list(default)
        else:
            same = value == default or (value is False and default in (False, argparse.SUPPRESS))
        if same or value is None:
            continue
        flag = max(action.option_strings, key=len)
        if isinstance(action, argparse._StoreTrueAction):
            parts.append(flag)
        elif isinstance(value, (list, tuple)):
            parts += [flag, *(str(v) for v in value)]
        else:
            parts += [flag, str(value)]
    return " ".join([prog, *(shlex.quote(p) for p in parts)])
