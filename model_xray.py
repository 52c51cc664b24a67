"""The ``model-xray`` command: start the page, write a report, or save a capture.

model-xray app [streamlit options]                     # the page, as `streamlit run app.py`
model-xray report "PROMPT" --model demo --out report.html
model-xray capture "PROMPT" --model demo --out run.npz
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
APP = HERE / "app.py"
STREAMLIT_CONFIG = HERE / "views" / "streamlit.toml"


def streamlit_flags(config: Path = STREAMLIT_CONFIG) -> list[str]:
    """The page's Streamlit settings as command-line flags, so they hold from any working folder."""
    settings = tomllib.loads(config.read_text(encoding="utf-8"))
    flags = []
    for section, options in settings.items():
        for name, value in options.items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            flags.append(f"--{section}.{name}={text}")
    return flags


def run_app(extra: list[str]) -> int:
    """``streamlit run app.py`` with the page's settings; ``extra`` options come last and win."""
    from views.circuits import install_bundle

    install_bundle(HERE / "static")  # Streamlit looks for its static folder when it starts
    command = [sys.executable, "-m", "streamlit", "run", str(APP), *streamlit_flags(), *extra]
    return subprocess.call(command, cwd=HERE)


def _analysis(args: argparse.Namespace):
    from backend import capture, lens_summary, load_model

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    lm = load_model(None if args.model == "demo" else args.model, device=args.device)
    cap = capture(lm, args.prompt, max_tokens=args.max_tokens)
    return lm, cap, lens_summary(lm, cap)


def write_report(args: argparse.Namespace) -> Path:
    """The self-contained HTML report of one prompt."""
    from backend.heads import head_scores
    from backend.neurons import neuron_effect
    from views.report import report_html, top_neuron

    lm, cap, summary = _analysis(args)
    layer = cap.n_layers - 1
    position, neuron = top_neuron(cap, layer)
    effect = neuron_effect(lm, cap, layer, neuron, position)
    out = Path(args.out)
    out.write_text(report_html(lm.info, cap, summary, head_scores(cap), effect), encoding="utf-8")
    return out


def write_capture(args: argparse.Namespace) -> tuple[Path, Path]:
    """The capture's arrays and lens summary (.npz) with a JSON sidecar."""
    from dataclasses import asdict

    from backend.export import save_run

    lm, cap, summary = _analysis(args)
    return save_run(args.out, cap, summary, model_info=asdict(lm.info))


def parser() -> argparse.ArgumentParser:
    """The command line."""
    top = argparse.ArgumentParser(prog="model-xray", description="Look inside a transformer language model.")
    commands = top.add_subparsers(dest="command", required=True)
    commands.add_parser("app", help="start the page (streamlit run app.py); other options go to streamlit")
    for name, default, what in (("report", "report.html", "write one self-contained HTML report"),
                                ("capture", "run.npz", "save the captured arrays (.npz) and a JSON sidecar")):
        sub = commands.add_parser(name, help=what)
        sub.add_argument("prompt")
        sub.add_argument("--model", default="demo", help="demo (the bundled model), a hub id or a local folder")
        sub.add_argument("--out", default=default)
        sub.add_argument("--max-tokens", type=int, default=512)
        sub.add_argument("--device", default="auto")
    return top


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``model-xray``."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["app"]:
        return run_app(argv[1:])
    args = parser().parse_args(argv)
    from backend.errors import XrayError

    try:
        if args.command == "report":
            print(f"wrote {write_report(args)}")
        else:
            print("wrote " + " and ".join(str(p) for p in write_capture(args)))
    except XrayError as error:
        print(f"model-xray: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
