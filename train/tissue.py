"""Train the GastricVision tissue recipe; same options as `gastricvision train tissue`.

Run from the repository root, e.g. `python train/tissue.py --help`.
"""

import sys

from gastricvision.training import main

if __name__ == "__main__":
    sys.exit(main("tissue"))
