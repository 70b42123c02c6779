"""``elign data``: build the QM9 cache (and optionally a dense training file)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from elign.data.dense import dense_from_qm9


def add_parser(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("data", help="build the QM9 cache (and optionally a dense training file)")
    d.add_argument("--cache", help="cache file (default: $ELIGN_CACHE or ~/.cache/elign/qm9.npz)")
    d.add_argument("--source", default="auto", choices=["auto", "qm9pack", "archive"])
    d.add_argument("--archive", help="path to dsgdb9nsd.xyz.tar.bz2 when the qm9pack wheel is absent")
    d.add_argument("--dense", help="also write a dense training file (.npz) that a GPU run can carry")
    d.add_argument("--rebuild", action="store_true", help="parse the source again even if the cache exists")
    d.set_defaults(func=cmd_data, output_files=("dense",))  # the dense path is checked before the work


def cmd_data(args: argparse.Namespace) -> int:
    from elign.data.qm9 import build_cache, default_cache_path, load_qm9

    cache = Path(args.cache) if args.cache else default_cache_path()
    if cache.exists() and not args.rebuild:
        print(f"QM9 cache: {cache} (already built; --rebuild to parse the source again)")
    else:
        print(json.dumps(build_cache(cache_path=cache, source=args.source, archive_path=args.archive), indent=1))
    if args.dense:
        data = load_qm9(cache_path=cache)
        dense = dense_from_qm9(data)
        Path(args.dense).parent.mkdir(parents=True, exist_ok=True)
        dense.save(args.dense)
        print(f"dense training file: {args.dense} ({Path(args.dense).stat().st_size / 1e6:.1f} MB)")
    return 0
