"""Convert the official GTA5 download into what reinlite's GTA5 loader reads.

Where to get it and what is written: see reinlite.data.convert.convert_gta5 (printed by --help).
These datasets need registration, so nothing is downloaded automatically.

    python data_scripts/convert_gta5.py ROOT

Prints a report (converted / resized / skipped files, by name); exit status 1 if any file
had to be skipped, 2 if ROOT does not have the expected layout.
"""
import sys

from reinlite.data.convert import convert_gta5, run_cli

if __name__ == "__main__":
    sys.exit(run_cli(convert_gta5, description=__doc__ + "\n" + convert_gta5.__doc__))
