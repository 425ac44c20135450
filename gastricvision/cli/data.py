"""``gastricvision data``: check dataset folders and write splits."""

from __future__ import annotations

import json

from . import EXIT_BAD_INPUT, EXIT_OK


def register(subparsers) -> None:
    parser = subparsers.add_parser("data", help="verify dataset folders and write splits")
    commands = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    verify = commands.add_parser(
        "verify",
        help="count tiles per class and compare with the published totals",
        description="Detect the layout of ROOT, count its tiles per class and compare them "
        "with the published GasHisSDB and GCHTID totals.",
    )
    verify.add_argument("root", metavar="ROOT", help="dataset folder")
    verify.add_argument("--size", type=int, metavar="PX", help="GasHisSDB sub-database (160, 120 or 80)")
    verify.add_argument("--check-files", action="store_true", help="also decode and hash every file (slow)")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.set_defaults(handler=run_verify)

    split = commands.add_parser(
        "split",
        help="write a stratified train/val/test split as CSV",
        description="Split the images of one or more dataset folders by class, reproducibly.",
    )
    split.add_argument("roots", nargs="+", metavar="ROOT", help="dataset folders")
    split.add_argument("--out", required=True, metavar="CSV", help="output CSV (a .json with the seed is written beside it)")
    split.add_argument("--seed", type=int, default=0, help="shuffle seed (default 0)")
    split.add_argument("--fractions", default="0.7,0.15,0.15", metavar="T,V,T", help="train,val,test fractions")
    split.add_argument("--size", type=int, metavar="PX", help="GasHisSDB sub-database")
    split.add_argument("--class-map", metavar="MAP", help="class map name or SOURCE=TARGET pairs")
    split.set_defaults(handler=run_split)


def run_verify(args) -> int:
    from ..datasets import verify_dataset

    progress = None
    if args.check_files:
        from tqdm import tqdm

        def progress(items):
            return tqdm(items, desc="checking files", unit="file")

    report = verify_dataset(args.root, size=args.size, check_files=args.check_files, progress=progress)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print("\n".join(report.lines()))
    return EXIT_BAD_INPUT if report.unreadable else EXIT_OK


def run_split(args) -> int:
    from ..datasets import make_splits, open_datasets, save_splits
    from ..errors import DatasetError

    try:
        fractions = tuple(float(x) for x in args.fractions.split(","))
    except ValueError:
        raise DatasetError(f"Invalid --fractions {args.fractions!r}: give three numbers such as 0.7,0.15,0.15.") from None
    if len(fractions) != 3:
        raise DatasetError(f"Invalid --fractions {args.fractions!r}: give three numbers such as 0.7,0.15,0.15.")

    records = open_datasets(args.roots, size=args.size, class_map=args.class_map)
    splits = make_splits(records, fractions=fractions, seed=args.seed)
    path = save_splits(splits, args.out, seed=args.seed, fractions=fractions)
    for name, items in splits.items():
        print(f"{name:<5} {len(items):>7,}")
    print(f"wrote {path}")
    return EXIT_OK
