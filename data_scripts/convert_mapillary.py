"""Convert the official Mapillary Vistas v1.2 download into what reinlite's Mapillary Vistas v1.2 loader reads.

Where to get it and what is written: see reinlite.data.convert.convert_mapillary (printed by --help).
These datasets need registration, so nothing is downloaded automatically.

    python data_scripts/convert_mapillary.py ROOT --out OUT        # validation halved, as the release

Prints a report (converted / resized / skipped files, by name); exit status 1 if any file
had to be skipped, 2 if ROOT does not have the expected layout.
"""
import sys

from reinlite.data.convert import convert_mapillary, run_cli

OPTIONS = [
    (("--short-side",), dict(type=int, default=None,
                             help="resize every split to this short side instead (default: none; "
                                  "the --halve splits are halved, the others keep their size)")),
    (("--halve",), dict(nargs="*", default=["validation"], metavar="SPLIT",
                        help="splits halved as the Rein release does (default: validation)")),
]

if __name__ == "__main__":
    sys.exit(run_cli(convert_mapillary, description=__doc__ + "\n" + convert_mapillary.__doc__,
                     needs_out="required", extra=OPTIONS))
