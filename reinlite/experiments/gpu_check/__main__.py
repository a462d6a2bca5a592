"""``python -m reinlite.experiments.gpu_check``: what the torchrun / compile children run."""
import sys

from reinlite.experiments.gpu_check.cli import main

sys.exit(main())
