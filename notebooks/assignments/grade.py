"""Grade a folder of submissions with ``otter run`` (no Docker) and write one CSV of scores.

    python grade.py a1_rein_layer path/to/submissions [--dist dist] [--out dist/grades]

For every ``*.ipynb`` or ``*.zip`` (the zip the notebook's export cell makes) in the folder,
this runs ``otter run -a dist/<A>/autograder/<A>-autograder_*.zip`` in a fresh process, keeps
otter's ``results.json`` under ``<out>/<A>/<submission>/`` and writes ``<out>/<A>.csv`` with
one row per submission: the autograded total, the possible points and every question's score.
Manually graded questions (the written part of assignment 3) are not in the CSV: grade them
from the submitted notebooks.
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path


def find_autograder_zip(dist: Path, assignment: str) -> Path:
    zips = sorted((dist / assignment / "autograder").glob(f"{assignment}-autograder_*.zip"))
    if not zips:
        sys.exit(f"no autograder zip in {dist / assignment / 'autograder'}: run `make build` first")
    return zips[-1]


def grade_one(submission: Path, autograder: Path, out_dir: Path, timeout: float) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "otter", "run", "--no-logo", "-a", str(autograder),
               "-o", str(out_dir), str(submission)]
    start = time.time()
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        (out_dir / "otter_run.log").write_text(proc.stdout + proc.stderr)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    results = out_dir / "results.json"
    if proc.returncode != 0 or not results.is_file():
        return {"error": f"otter run failed (exit {proc.returncode}); see {out_dir / 'otter_run.log'}"}
    tests = json.loads(results.read_text())["tests"]
    scores = {t["name"]: t["score"] for t in tests if "score" in t}
    possible = {t["name"]: t["max_score"] for t in tests if "max_score" in t}
    return {"scores": scores, "total": sum(scores.values()), "possible": sum(possible.values()),
            "seconds": round(time.time() - start, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("assignment", help="master name without .ipynb, e.g. a1_rein_layer")
    parser.add_argument("submissions", type=Path, help="a folder of .ipynb/.zip submissions, or one file")
    parser.add_argument("--dist", type=Path, default=Path("dist"))
    parser.add_argument("--out", type=Path, default=Path("dist/grades"))
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per submission")
    args = parser.parse_args(argv)

    autograder = find_autograder_zip(args.dist, args.assignment)
    if args.submissions.is_dir():
        submissions = sorted(p for p in args.submissions.iterdir() if p.suffix in (".ipynb", ".zip"))
    else:
        submissions = [args.submissions]
    if not submissions:
        sys.exit(f"no .ipynb or .zip submissions in {args.submissions}")

    rows, questions = [], []
    for submission in submissions:
        result = grade_one(submission, autograder, args.out / args.assignment / submission.stem, args.timeout)
        for question in result.get("scores", {}):
            if question not in questions:
                questions.append(question)
        rows.append((submission.name, result))
        summary = result.get("error") or f"{result['total']:g} / {result['possible']:g} ({result['seconds']} s)"
        print(f"{submission.name}: {summary}", flush=True)

    table = args.out / f"{args.assignment}.csv"
    table.parent.mkdir(parents=True, exist_ok=True)
    with open(table, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["submission", "total", "possible", *questions, "error"])
        for name, result in rows:
            scores = result.get("scores", {})
            writer.writerow([name, result.get("total", ""), result.get("possible", ""),
                             *[scores.get(q, "") for q in questions], result.get("error", "")])
    print(f"wrote {table}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
