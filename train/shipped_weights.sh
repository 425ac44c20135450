#!/usr/bin/env bash
# Reproduce the weights shipped in weights/: the five models, trained in order on the
# real H&E tiles in ../shared/data (stand-in data, see README "Shipped weights").
# Usage, from the repository root: train/shipped_weights.sh [DATA_DIR]
# Each command logs to runs/shipped/<model>.log; the times are recorded in the README.
set -euo pipefail
DATA=${1:-../shared/data}
GV=${GV:-.venv/bin/gastricvision}
mkdir -p runs/shipped
NCT="--data $DATA/nct-crc-he/CRC-VAL-HE-7K --data $DATA/nct-crc-he/NCT-CRC-HE-100K"
STANDIN="Stand-in data, not GasHisSDB or GCHTID: far too few tiles for diagnostic accuracy; these weights demonstrate the pipeline."

run() {
  local name=$1; shift
  echo "== $name: $*"
  /usr/bin/time -f "$name: %e s wall" "$GV" train "$@" 2>&1 | tee "runs/shipped/$name.log"
}

# Binary Normal vs Abnormal: GasHisSDB, LC25000 colon cut into 160 px tiles, NCT-CRC-HE
# normal mucosa vs tumour. ImageNet EfficientNet-Lite0: a few hundred source images
# cannot train ResNet-18 from scratch.
run binary binary --data "$DATA/gashissdb" --data "$DATA/lc25000" $NCT --class-map gi-binary \
  --arch tf_efficientnet_lite0 --epochs 12 --max-minutes 30 --patience 5 --half \
  --out runs/shipped/binary --export weights/binary --data-note "$STANDIN"

# Student: ResNet-18 distilled from the binary model, with every other tile as unlabelled data.
run student distill --teacher weights/binary --data "$DATA/gashissdb" --data "$DATA/lc25000" $NCT \
  --class-map gi-binary --unlabelled "$DATA/kather-2016" --unlabelled "$DATA/kather-msi-mss" \
  --arch resnet18 --epochs 15 --max-minutes 35 --patience 6 --half \
  --out runs/shipped/student --export weights/student --data-note "$STANDIN"

# Tissue: NCT-CRC-HE classes mapped onto GCHTID's (NORM to NOR, BACK dropped).
# About 70 training tiles: small batches for enough optimiser steps, and long patience
# because the validation split has only 15 tiles.
run tissue tissue $NCT --class-map nct-crc-he --batch-size 16 --epochs 150 --max-minutes 20 --patience 40 --workers 0 --half \
  --out runs/shipped/tissue --export weights/tissue --data-note "$STANDIN Colorectal NCT-CRC-HE tiles stand in for gastric GCHTID tiles; NOR was trained on normal colon mucosa."

ALL="--data $DATA/gashissdb --data $DATA/gchtid $NCT --data $DATA/kather-2016 --data $DATA/kather-msi-mss --data $DATA/lc25000"
run autoencoder autoencoder $ALL --epochs 40 --max-minutes 15 --patience 8 --half \
  --out runs/shipped/autoencoder --export weights/autoencoder --data-note "$STANDIN"

run unet unet $ALL --epochs 40 --max-minutes 20 --patience 8 --half \
  --out runs/shipped/unet --export weights/unet --data-note "$STANDIN"
