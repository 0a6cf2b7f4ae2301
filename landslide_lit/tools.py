"""`landslide-lit synth` and `landslide-lit cache`: the data tools beside the LightningCLI."""

from __future__ import annotations

from pathlib import Path

from landslide_lit.argv import ArgumentParser
from landslide_lit.data.cache import CACHE_DIR, ChipCache, user_cache_dir
from landslide_lit.data.synthetic import write_synthetic_cube
from landslide_lit.errors import ConfigError
from landslide_lit.regions import REGIONS, data_root

__all__ = ["cache_main", "synth_main"]


def synth_main(args: list[str]) -> None:
    """`landslide-lit synth`: write a synthetic cube in a region's real schema."""
    parser = ArgumentParser(
        prog="landslide-lit synth",
        description="Write a synthetic datacube with a region's real file name and schema "
        "under ROOT/synthetic/.",
    )
    parser.add_argument("--region", required=True, choices=sorted(REGIONS))
    parser.add_argument(
        "--root", default=None, help="data root (default: $LANDSLIDE_LIT_DATA or ./data)"
    )
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--format", choices=("zarr", "netcdf"), default="zarr")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing cube")
    options = parser.parse_args(args)
    try:
        path = write_synthetic_cube(
            options.region,
            root=options.root,
            size=tuple(options.size) if options.size else None,
            seed=options.seed,
            fmt=options.format,
            overwrite=options.overwrite,
        )
    except FileExistsError as error:
        raise ConfigError(
            f"landslide-lit synth: {error.filename or error} exists already; pass --overwrite "
            "to replace it, or --root to write elsewhere"
        ) from None
    print(path)


def cache_main(args: list[str]) -> None:
    """`landslide-lit cache clear`: remove the prepared chips of the chip cache.

    Without ``--cache-dir`` both places a run may have used are emptied: the data root's
    ``.chip_cache`` and the per-user folder a read-only data root falls back to.
    """
    parser = ArgumentParser(
        prog="landslide-lit cache",
        description=f"Manage the chip cache (<data root>/{CACHE_DIR}, else {user_cache_dir()}).",
    )
    parser.add_argument("action", choices=("clear",))
    parser.add_argument(
        "--root", default=None, help="data root (default: $LANDSLIDE_LIT_DATA or ./data)"
    )
    parser.add_argument(
        "--cache-dir",
        default=None,
        help="clear this folder only (what --data.cache_dir named)",
    )
    options = parser.parse_args(args)
    if options.root is not None and not Path(options.root).expanduser().is_dir():
        raise ConfigError(
            f"--root {options.root}: no such folder; give the data root that holds the "
            f"cubes (and their {CACHE_DIR})"
        )
    if options.cache_dir is not None:
        folders = [Path(options.cache_dir).expanduser()]
    else:
        folders = [data_root(options.root) / CACHE_DIR, user_cache_dir()]
    for folder in folders:
        print(f"removed {ChipCache(folder).clear()} cache entries from {folder}")
