"""Write the embedded DGSS benchmark (a thin wrapper of `reinlite data benchmark`).

    python data_scripts/make_benchmark.py --out data/benchmark [--seed 0] [--source 2000] [--target 500]
"""
import sys

from reinlite.cli import main

if __name__ == "__main__":
    sys.exit(main(["data", "benchmark", *sys.argv[1:]]))
