"""The `landslide-lit` command: LightningCLI for fit/validate/test/predict, plus synth and demo.

``run(args)`` is callable from tests and returns the LightningCLI. Before LightningCLI
parses anything:

* ``--config NAME.yaml`` falls back to the configs bundled with the package
  when no such file exists in the working directory;
* validate/test/predict without ``--ckpt_path`` use the best checkpoint of the
  latest fit run under the working directory, and restore the model and data
  settings it was trained with (command-line values still win).
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from importlib import resources
from pathlib import Path

from lightning.pytorch.cli import LightningCLI

from landslide_lit.checkpointing import (
    Interrupted,
    command_guard,
    reserve_run_version,
    resume_checkpoint,
)
from landslide_lit.data.composite import resolve_channels
from landslide_lit.data.cube import CubeError
from landslide_lit.data.datamodule import LandslideDataModule
from landslide_lit.module import LandslideSegmenter
from landslide_lit.regions import REGIONS
from landslide_lit.runs import (
    RUNS_DIR,
    CheckpointError,
    checkpoint_arguments,
    checkpoint_channels,
    latest_best_checkpoint,
    read_checkpoint,
)

log = logging.getLogger("landslide_lit")
EVALUATION_COMMANDS = ("validate", "test", "predict")


class LandslideCLI(LightningCLI):
    """LightningCLI with the region flag, checkpoint defaults and model/data links."""

    def __init__(self, *args, checkpoint_channels: list[str] | None = None, **kwargs) -> None:
        self.checkpoint_channels = checkpoint_channels
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--region",
            type=str | None,
            default=None,
            help="region to evaluate: validate scores it, test/predict use it as the "
            f"test region (built-in: {', '.join(sorted(REGIONS))})",
        )
        parser.link_arguments("data.channel_names", "model.channel_names", apply_on="instantiate")
        parser.set_defaults(
            {
                "trainer.logger": [
                    {
                        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                        "init_args": {"save_dir": RUNS_DIR, "name": "landslide"},
                    },
                    {
                        "class_path": "landslide_lit.checkpointing.ResumableCSVLogger",
                        "init_args": {"save_dir": RUNS_DIR, "name": "landslide"},
                    },
                ],
                "trainer.callbacks": [
                    {
                        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                        "init_args": {
                            "monitor": "val/auprc",
                            "mode": "max",
                            "filename": "best-epoch{epoch:02d}",
                            "auto_insert_metric_name": False,
                        },
                    },
                    # last.ckpt after every validation: since Lightning 2.6 `save_last`
                    # writes it only together with a new best checkpoint
                    {
                        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                        "init_args": {"filename": "last"},
                    },
                    {"class_path": "landslide_lit.maps.ProbabilityMapWriter"},
                    # validate/test: metrics.json with bootstrap intervals, PR curve, panels
                    {"class_path": "landslide_lit.evaluation.EvaluationWriter"},
                    {"class_path": "landslide_lit.checkpointing.CheckpointOnSigterm"},
                ],
                # add plugins with --trainer.plugins+=...; a plain --trainer.plugins replaces it
                "trainer.plugins": [
                    {"class_path": "landslide_lit.checkpointing.AtomicCheckpointIO"}
                ],
                # the data module shards every loader itself, evaluation without padding
                "trainer.use_distributed_sampler": False,
            }
        )

    def parse_arguments(self, parser, args) -> None:
        super().parse_arguments(parser, args)
        # before LightningCLI reads the checkpoint's hyperparameters: check it, resolve `last`
        if self.config.get("subcommand") == "fit":
            config = self.config.fit
            config.ckpt_path = resume_checkpoint(config.ckpt_path, config.trainer)

    def _parse_ckpt_path(self) -> None:
        """Leave the parsed config as it is for evaluation commands.

        LightningCLI would re-apply the checkpoint's model hyperparameters over the
        command line. ``restore_from_checkpoint`` already put them first on the command
        line, so later options (``--model.encoder_weights=null``, ``--model.val_auprc``)
        must keep winning. ``fit --ckpt_path`` keeps Lightning's behaviour.
        """
        if self.config.get("subcommand") == "fit":
            super()._parse_ckpt_path()

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if config.region:
            key = "validate_region" if self.subcommand == "validate" else "test_region"
            config.data[key] = config.region
        reserve_run_version(config.trainer)
        if self.checkpoint_channels is not None:
            channels = list(resolve_channels(config.data.channels))
            if channels != self.checkpoint_channels:
                raise SystemExit(
                    f"error: the checkpoint was trained on channels {self.checkpoint_channels}, "
                    f"but --data.channels gives {channels}; drop the override or use a "
                    "checkpoint trained on these channels"
                )


def bundled_config_dir() -> Path:
    return Path(str(resources.files("landslide_lit.configs")))


def resolve_bundled_configs(args: list[str]) -> list[str]:
    """Replace ``--config NAME`` by the bundled file when NAME is not a file here."""
    resolved = list(args)
    for i, arg in enumerate(resolved):
        name, inline = (
            (arg.split("=", 1)[1], True) if arg.startswith("--config=") else (None, False)
        )
        if arg == "--config" and i + 1 < len(resolved):
            name = resolved[i + 1]
        if name is None or Path(name).exists():
            continue
        bundled = bundled_config_dir() / (name if name.endswith(".yaml") else f"{name}.yaml")
        if not bundled.exists():
            known = ", ".join(sorted(p.name for p in bundled_config_dir().glob("*.yaml")))
            raise SystemExit(f"error: config {name!r} is not a file; bundled configs: {known}")
        if inline:
            resolved[i] = f"--config={bundled}"
        else:
            resolved[i + 1] = str(bundled)
    return resolved


def option_value(args: list[str], option: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == option and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(option + "="):
            return arg.split("=", 1)[1]
    return None


def restore_from_checkpoint(args: list[str]) -> tuple[list[str], list[str] | None]:
    """Insert the checkpoint's settings (and path) after the subcommand name."""
    ckpt_path = option_value(args, "--ckpt_path")
    if ckpt_path in (None, "null", "None"):
        ckpt_path = str(latest_best_checkpoint())
        log.warning("using checkpoint %s (best of the latest fit run here)", ckpt_path)
        args = [*args, "--ckpt_path", ckpt_path]
    checkpoint = read_checkpoint(ckpt_path)
    # The checkpoint holds the encoder's weights: never fetch pretrained ones to overwrite.
    restored = [
        args[0],
        *checkpoint_arguments(checkpoint),
        *args[1:],
        "--model.encoder_weights=null",
    ]
    return restored, checkpoint_channels(checkpoint)


def synth_main(args: list[str]) -> None:
    """`landslide-lit synth`: write a synthetic cube in a region's real schema."""
    from landslide_lit.data.synthetic import write_synthetic_cube

    parser = argparse.ArgumentParser(
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
    path = write_synthetic_cube(
        options.region,
        root=options.root,
        size=tuple(options.size) if options.size else None,
        seed=options.seed,
        fmt=options.format,
        overwrite=options.overwrite,
    )
    print(path)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is now (tests and notebooks replace it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def cache_main(args: list[str]) -> None:
    """`landslide-lit cache clear`: remove the prepared chips of the chip cache.

    Without ``--cache-dir`` both places a run may have used are emptied: the data root's
    ``.chip_cache`` and the per-user folder a read-only data root falls back to.
    """
    from landslide_lit.data.cache import CACHE_DIR, ChipCache, user_cache_dir
    from landslide_lit.regions import data_root

    parser = argparse.ArgumentParser(
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
    if options.cache_dir is not None:
        folders = [Path(options.cache_dir).expanduser()]
    else:
        folders = [data_root(options.root) / CACHE_DIR, user_cache_dir()]
    for folder in folders:
        print(f"removed {ChipCache(folder).clear()} cache entries from {folder}")


def _configure_logging() -> None:
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    # main() leaves sys.argv as it is for Lightning's DDP launcher and passes args too
    warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter is intended")
    # Evaluation runs keep the fit's ModelCheckpoint defaults; it saves nothing there.
    warnings.filterwarnings("ignore", message=r"The dirpath has changed from")
    if not log.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("[landslide-lit] %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)


def main(args: list[str] | None = None) -> None:
    """Entry point of `landslide-lit` and `python -m landslide_lit`: errors in plain words."""
    if args is None:
        # sys.argv stays: Lightning's DDP launcher starts the other ranks with it
        args = sys.argv[1:]
    try:
        run(args)
    except (CubeError, CheckpointError) as exc:
        raise SystemExit(f"error: {exc}") from None
    except Interrupted as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None


def run(args: list[str] | None = None) -> LandslideCLI | None:
    """Run a `landslide-lit` command; the LightningCLI (None for synth, cache, demo, reproduce,
    transfer)."""
    _configure_logging()
    args = list(sys.argv[1:] if args is None else args)
    if args and args[0] == "synth":
        synth_main(args[1:])
        return None
    if args and args[0] == "demo":
        from landslide_lit.demo import demo_main

        demo_main(args[1:])
        return None
    if args and args[0] == "cache":
        cache_main(args[1:])
        return None
    if args and args[0] in ("reproduce", "transfer"):
        from landslide_lit.reproduce import reproduce_main, transfer_main

        (reproduce_main if args[0] == "reproduce" else transfer_main)(args[1:])
        return None
    args = resolve_bundled_configs(args)
    channels = None
    if (
        args
        and args[0] in EVALUATION_COMMANDS
        and not {"-h", "--help", "--print_config"} & set(args)
    ):
        args, channels = restore_from_checkpoint(args)
    with command_guard():
        return LandslideCLI(
            LandslideSegmenter,
            LandslideDataModule,
            seed_everything_default=42,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"description": __doc__.splitlines()[0]},
            checkpoint_channels=channels,
            args=args,
        )
