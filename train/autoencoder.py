"""Train the GastricVision autoencoder recipe; same options as `gastricvision train autoencoder`.

Run from the repository root, e.g. `python train/autoencoder.py --help`.
"""

import sys

from gastricvision.training import main

if __name__ == "__main__":
    sys.exit(main("autoencoder"))
