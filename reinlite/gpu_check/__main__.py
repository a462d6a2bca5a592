"""``python -m reinlite.gpu_check``: what the torchrun / compile children run."""
import sys

from .cli import main

sys.exit(main())
