"""Convert the official Cityscapes download into what reinlite's Cityscapes loader reads.

Where to get it and what is written: see reinlite.data.convert.convert_cityscapes (printed by --help).
These datasets need registration, so nothing is downloaded automatically.

    python data_scripts/convert_cityscapes.py ROOT

Prints a report (converted / resized / skipped files, by name); exit status 1 if any file
had to be skipped, 2 if ROOT does not have the expected layout.
"""
import sys

from reinlite.data.convert import convert_cityscapes, run_cli

if __name__ == "__main__":
    sys.exit(run_cli(convert_cityscapes, description=__doc__ + "\n" + convert_cityscapes.__doc__))
