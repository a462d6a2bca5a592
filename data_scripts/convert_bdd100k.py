"""Convert the official BDD100K (10k segmentation) download into what reinlite's BDD100K (10k segmentation) loader reads.

Where to get it and what is written: see reinlite.data.convert.convert_bdd100k (printed by --help).
These datasets need registration, so nothing is downloaded automatically.

    python data_scripts/convert_bdd100k.py ROOT [--out OUT]

Prints a report (converted / resized / skipped files, by name); exit status 1 if any file
had to be skipped, 2 if ROOT does not have the expected layout.
"""
import sys

from reinlite.data.convert import convert_bdd100k, run_cli

if __name__ == "__main__":
    sys.exit(run_cli(convert_bdd100k, description=__doc__ + "\n" + convert_bdd100k.__doc__, needs_out=True))
