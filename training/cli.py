"""The command lines the training scripts share: a config's fields as flags, and a model folder argument."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path


def config_main(doc: str, config_type: type, run: Callable[[object, Path], object]) -> None:
    """``--out`` and one flag per field of the dataclass ``config_type``; then ``run(config, out)``."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    for name, default in asdict(config_type()).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    args = vars(parser.parse_args())
    out = args.pop("out")
    run(config_type(**args), out)


def folder_argument(doc: str) -> Path:
    """The model folder a quality or card script works on."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("folder", type=Path)
    return parser.parse_args().folder


def save_quality(folder: Path, figures: dict) -> None:
    """The figures as ``quality.json`` beside the model, where its card reads them."""
    (folder / "quality.json").write_text(json.dumps(figures, indent=2) + "\n")


def save_card(folder: Path, text: str) -> None:
    """The card as the folder's ``README.md``."""
    (folder / "README.md").write_text(text)
    print(f"wrote {folder / 'README.md'}")
