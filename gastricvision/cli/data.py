"""``gastricvision data``: download datasets, check dataset folders and write splits."""

from __future__ import annotations

import json
import sys

from . import EXIT_BAD_INPUT, EXIT_OK

# Keys of gastricvision.download.DATASET_SOURCES, repeated here so that building the
# parser does not import requests.
DOWNLOADABLE_DATASETS = ("gashissdb", "gchtid")


def register(subparsers) -> None:
    parser = subparsers.add_parser("data", help="download datasets, verify dataset folders and write splits")
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

    download = commands.add_parser(
        "download",
        help="download GasHisSDB or GCHTID from figshare, extract and verify it",
        description="Download the dataset's archive from figshare (resuming an interrupted "
        "download), check its MD5, extract it into the --dest folder without letting any "
        "member escape it, and compare the tile counts with the published totals. Exit "
        "status 2 when the counts differ or files are unreadable.",
    )
    download.add_argument("dataset", choices=DOWNLOADABLE_DATASETS, metavar="DATASET", help="gashissdb or gchtid")
    download.add_argument("--dest", required=True, metavar="DIR", help="folder for the archive and the extracted tiles")
    download.add_argument(
        "--api-url",
        metavar="URL",
        help="figshare API base URL (default: $GASTRICVISION_FIGSHARE_API or https://api.figshare.com/v2)",
    )
    download.add_argument("--retries", type=int, default=5, metavar="N", help="failed attempts in a row before giving up (default 5)")
    download.add_argument("--remove-archive", action="store_true", help="delete the archive after a successful extraction")
    download.add_argument("--check-files", action="store_true", help="also decode and hash every extracted file (slow)")
    download.set_defaults(handler=run_download)

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
    # Counts that differ from the published totals mean an incomplete download, so the
    # exit status lets scripts stop on it. Plain class folders have no published totals.
    incomplete = report.expected is not None and not report.complete
    return EXIT_BAD_INPUT if report.unreadable or incomplete else EXIT_OK


def run_download(args) -> int:
    from ..archives import format_size
    from ..download import download_dataset, verify_download

    result = download_dataset(args.dataset, args.dest, api_url=args.api_url, retries=args.retries)
    title = result.source.title
    if result.downloaded_bytes:
        resumed = f", resumed at {format_size(result.resumed_from)}" if result.resumed_from else ""
        checked = "MD5 checked" if result.md5 else "size checked (the article lists no MD5)"
        print(f"{title}: downloaded {format_size(result.downloaded_bytes)}{resumed}; {checked}")

    report = result.extract_report
    if report is None:
        print(f"{title}: already downloaded and extracted into {result.root}")
    else:
        print(f"{title}: extracted {len(report.files):,} files ({format_size(report.total_bytes)}) into {result.root}")
        if report.skipped:
            first = report.skipped[0]
            print(f"  {len(report.skipped):,} archive members skipped, e.g. {first.name}: {first.reason}")

    progress = None
    if args.check_files:
        from tqdm import tqdm

        def progress(items):
            return tqdm(items, desc="checking files", unit="file")

    verification = verify_download(args.dataset, result.root, check_files=args.check_files, progress=progress)
    print("\n".join(verification.lines()))
    if verification.complete:
        return EXIT_OK
    print(
        f"error: {result.root} does not match the published {title} totals; see the report above.",
        file=sys.stderr,
    )
    return EXIT_BAD_INPUT


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
