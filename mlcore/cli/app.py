"""Command line of the ML core: ``python -m mlcore <command> ...``.

``extract`` is defined here; the model commands (train, evaluate, predict, cam) are added by
``mlcore.cli.model.register(subparsers)``. Each subcommand sets
``func(args) -> int`` with ``set_defaults``; the CLI and the Celery tasks call the same library
functions.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mlcore.cli.model import register as register_model_commands
from mlcore.cli.options import split_names
from mlcore.data.preprocessing import ImageLoadError
from mlcore.features.backbones import MissingWeightsError, get_backbone
from mlcore.features.config import (
    ConfigError,
    FeatureConfig,
    default_store_dir,
    default_weights_dir,
)
from mlcore.features.extraction import ImageSourceError
from mlcore.features.store import StoreMismatchError
from mlcore.features.torch_legacy import TorchFormatError

# Errors that are the user's to fix: reported in one line, exit status 2, no traceback.
_USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    FileNotFoundError,
    ImageLoadError,
    ImageSourceError,
    MissingWeightsError,
    StoreMismatchError,
    TorchFormatError,
)


def _extract(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mlcore.features.extraction import extract_features, find_images, image_items

    config = FeatureConfig.from_env(
        backbones=split_names(args.backbones),
        preprocessing=args.preprocessing,
        dtype=args.dtype,
        batch_size=args.batch_size,
    )
    for name in config.backbones:
        get_backbone(name)  # unknown names fail before any work
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be positive, not {args.limit}")
    paths = find_images(args.images)
    if args.limit is not None:
        paths = paths[: args.limit]
    if not paths:
        raise FileNotFoundError(f"no images found in {args.images}")
    items = image_items(paths, variant=args.variant)
    weights_dir = args.weights_dir or default_weights_dir()
    print(
        f"{len(items)} images -> {args.store} "
        f"(backbones {', '.join(config.backbones)}; preprocessing {config.preprocessing}; "
        f"{config.dtype})",
        file=sys.stderr,
    )
    with tqdm(total=0, unit="img", desc="extract", disable=args.quiet) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        result = extract_features(
            items,
            config=config,
            store_dir=args.store,
            weights_dir=weights_dir,
            progress=progress,
            skip_unreadable=args.skip_unreadable,
        )
    for name in config.backbones:
        print(
            f"{name}: {result.computed[name]} computed, {result.reused[name]} already stored "
            f"-> {result.store_paths[name]}"
        )
    for path, reason in result.failed:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    print(f"{result.images_processed} images processed in {result.seconds:.1f} s")
    return 1 if result.failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mlcore", description="Funduscope ML core: features and models."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="command")
    subparsers.required = True
    extract = subparsers.add_parser(
        "extract",
        help="compute backbone features of images into the feature store (incremental)",
        description=(
            "Compute the features of every image missing from the store of each backbone. "
            "Defaults come from FUNDUS_BACKBONES, FUNDUS_PREPROCESSING, FUNDUS_FEATURE_DTYPE, "
            "FUNDUS_WEIGHTS_DIR and FUNDUS_FEATURE_STORE."
        ),
    )
    extract.add_argument(
        "--images",
        required=True,
        type=Path,
        help="folder of images (searched recursively) or CSV with a 'filename' column "
        "(relative to the CSV's folder)",
    )
    extract.add_argument(
        "--store",
        type=Path,
        default=default_store_dir(),
        help="feature store folder (default: FUNDUS_FEATURE_STORE or var/features)",
    )
    extract.add_argument(
        "--backbones",
        nargs="+",
        help="backbone names, space or comma separated (default: FUNDUS_BACKBONES or "
        "efficientnet_lite0 mobilenet_v2)",
    )
    extract.add_argument("--preprocessing", help="none, crop or ben_graham (default: none)")
    extract.add_argument("--dtype", choices=("float32", "float16"), help="storage precision")
    extract.add_argument("--batch-size", type=int, help="images per forward pass (default 32)")
    extract.add_argument("--weights-dir", type=Path, help="offline weights folder")
    extract.add_argument("--limit", type=int, help="only the first N images")
    extract.add_argument(
        "--variant", type=int, default=0, help="feature key variant (0 = original image)"
    )
    extract.add_argument(
        "--skip-unreadable",
        action="store_true",
        help="skip (and list) images that cannot be decoded instead of stopping",
    )
    extract.add_argument("--quiet", action="store_true", help="no progress bar")
    extract.set_defaults(func=_extract)
    register_model_commands(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = args.func(args)
    except _USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except LookupError as error:
        if isinstance(error, KeyError):
            raise  # a bug, not a bad argument: keep the traceback
        print(f"error: {error}", file=sys.stderr)  # unknown backbone / preprocessing
        return 2
    return int(status or 0)
