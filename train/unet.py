"""Train the GastricVision unet recipe; same options as `gastricvision train unet`.

Run from the repository root, e.g. `python train/unet.py --help`.
"""

import sys

from gastricvision.training import main

if __name__ == "__main__":
    sys.exit(main("unet"))
