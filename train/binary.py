"""Train the GastricVision binary recipe; same options as `gastricvision train binary`.

Run from the repository root, e.g. `python train/binary.py --help`.
"""

import sys

from gastricvision.training import main

if __name__ == "__main__":
    sys.exit(main("binary"))
