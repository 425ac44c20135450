"""Train the GastricVision distill recipe; same options as `gastricvision train distill`.

Run from the repository root, e.g. `python train/distill.py --help`.
"""

import sys

from gastricvision.training import main

if __name__ == "__main__":
    sys.exit(main("distill"))
