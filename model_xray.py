"""The ``model-xray`` command: start the page, write a report, or save a capture.

model-xray app [streamlit options]                     # the page, as `streamlit run app.py`
model-xray report "PROMPT" --model demo --out report.html
model-xray capture "PROMPT" --model demo --out run.npz
"""

from __future__ import annotations

import argparse
import os
import signal
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
            for each in value if isinstance(value, list) else [value]:  # a list: the flag once per value
                text = str(each).lower() if isinstance(each, bool) else str(each)
                flags.append(f"--{section}.{name}={text}")
    return flags


INSTALLED_FLAGS = ["--server.fileWatcherType=none", "--server.runOnSave=false"]
"""The command serves an installed copy: nothing to watch (watching site-packages costs seconds of CPU)."""
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def serve(command: list[str], cwd: Path = HERE) -> int:
    """Run ``command`` until it ends; SIGTERM, SIGINT and SIGHUP sent to this process are passed on to it.

    Stopping ``model-xray app`` (a service manager's SIGTERM, Ctrl+C) then stops Streamlit too,
    instead of leaving it serving. The child's exit status is returned.
    """
    child = subprocess.Popen(command, cwd=cwd)
    previous = {sig: signal.getsignal(sig) for sig in FORWARDED}

    def forward(signum, _frame) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    for sig in FORWARDED:
        signal.signal(sig, forward)
    try:
        while True:
            try:
                return child.wait()
            except KeyboardInterrupt:  # a second Ctrl+C while Streamlit shuts down: wait on
                continue
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if child.poll() is None:
            child.kill()


def run_app(extra: list[str]) -> int:
    """``streamlit run app.py`` with the page's settings; ``extra`` options come last and win."""
    from views.circuits import install_bundle

    install_bundle(HERE / "static")  # Streamlit looks for its static folder when it starts
    command = [sys.executable, "-m", "streamlit", "run", str(APP), *streamlit_flags(), *INSTALLED_FLAGS, *extra]
    return serve(command)


def local_address() -> str:
    """The machine's address on its network (a UDP socket's own end: no packet is sent)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.254.254.254", 1))
            return probe.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def room_flags(address: str, port: int) -> list[str]:
    """What a room needs: every interface, this address as the only Host names, no error details to visitors.

    Naming the address also stops Streamlit from asking an outside service for it at start-up.
    """
    hosts = [f"--server.allowedHosts={host}" for host in dict.fromkeys((address, "localhost", "127.0.0.1"))]
    return ["--server.address=0.0.0.0", f"--server.port={port}", f"--browser.serverAddress={address}",
            "--client.showErrorDetails=none", "--server.headless=true", *hosts]


def run_room(extra: list[str]) -> int:
    """The page in public mode for a room (``XRAY_PUBLIC=1``), served on this machine's network address."""
    port = next((int(a.split("=", 1)[1]) for a in extra if a.startswith("--port=")), 8501)
    extra = [a for a in extra if not a.startswith("--port=")]
    os.environ["XRAY_PUBLIC"] = os.environ.get("XRAY_PUBLIC") or "1"
    address = local_address()
    print(f"Share http://{address}:{port} (or the nginx address of deploy/nginx.conf, which compresses the page)")
    return run_app([*room_flags(address, port), *extra])


def _load(name: str, device: str):
    """A model as the command line names it: "demo" is the bundled demo model."""
    from backend import load_model

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return load_model(None if name == "demo" else name, device=device)


def _analysis(args: argparse.Namespace):
    from backend import capture, lens_summary

    lm = _load(args.model, args.device)
    cap = capture(lm, args.prompt, max_tokens=args.max_tokens)
    return lm, cap, lens_summary(lm, cap)


def write_report(args: argparse.Namespace) -> Path:
    """The self-contained HTML report of one prompt (with ``--compare``, beside a second model).

    The views are at their opening choices, as the page first draws them.
    """
    from backend.compare import compare
    from backend.heads import head_scores
    from backend.lens import token_trajectory
    from backend.loading import TWIN_ID
    from backend.neurons import neuron_effect
    from backend.suppressed import suppressed
    from views.content import attention, header, lens, neurons
    from views.content import compare as compare_view
    from views.report import report_html

    lm, cap, summary = _analysis(args)
    scores = head_scores(cap)
    bundled = {"demo": "demo", TWIN_ID: "twin"}.get(args.model)
    sections = [header.content(cap, summary, bundled).section()]
    if getattr(args, "compare", None):
        lm_b = _load(args.compare, args.device)
        diff = compare(lm, lm_b, args.prompt, max_tokens=args.max_tokens, cap_a=cap)
        sections.append(compare_view.content(diff, lm.info.name, lm_b.info.name).section())
    sections.append(attention.content(cap, scores, attention.defaults(cap, scores)).section())
    lens_choices = lens.defaults(cap, summary)
    trajectory = token_trajectory(lm, cap, lens_choices.token_id, [lens_choices.position])
    sections.append(lens.content(cap, summary, suppressed(lm, cap), lens_choices,
                                 (trajectory.probs[:, 0], trajectory.ranks[:, 0])).section())
    chosen = neurons.defaults(cap)
    effect = neuron_effect(lm, cap, chosen.layer, chosen.neuron, chosen.position)
    sections.append(neurons.content(cap, chosen, effect).section())
    out = Path(args.out)
    out.write_text(report_html(lm.info, sections), encoding="utf-8")
    return out


def write_capture(args: argparse.Namespace) -> tuple[Path, Path]:
    """The capture's arrays and lens summary (.npz) with a JSON sidecar."""
    from dataclasses import asdict

    from backend.export import save_run

    lm, cap, summary = _analysis(args)
    return save_run(args.out, cap, summary, model_info=asdict(lm.info))


def write_compare(args: argparse.Namespace) -> Path:
    """Two models on one prompt (``backend.compare``) and what the second holds inside, as JSON."""
    from backend.compare import compare
    from backend.suppressed import suppressed
    from views.downloads import compare_numbers, finding_numbers, to_json

    lm_a, lm_b = _load(args.model, args.device), _load(args.second, args.device)
    diff = compare(lm_a, lm_b, args.prompt, max_tokens=args.max_tokens)
    numbers = {"prompt": args.prompt, "model_a": lm_a.info.name, "model_b": lm_b.info.name, **compare_numbers(diff),
               "held_inside_b": [finding_numbers(f) for f in suppressed(lm_b, diff.b)]}
    out = Path(args.out)
    out.write_text(to_json(numbers), encoding="utf-8")
    return out


def parser() -> argparse.ArgumentParser:
    """The command line."""
    top = argparse.ArgumentParser(prog="model-xray", description="Look inside a transformer language model.")
    commands = top.add_subparsers(dest="command", required=True)
    commands.add_parser("app", help="start the page (streamlit run app.py); other options go to streamlit")
    commands.add_parser("room", help="start the page in public mode for a room: --port=8501, no error details, "
                                     "this machine's address as the only allowed host")
    for name, default, what in (("report", "report.html", "write one self-contained HTML report"),
                                ("capture", "run.npz", "save the captured arrays (.npz) and a JSON sidecar")):
        sub = commands.add_parser(name, help=what)
        sub.add_argument("prompt")
        sub.add_argument("--model", default="demo", help="demo (the bundled model), a hub id or a local folder")
        sub.add_argument("--out", default=default)
        sub.add_argument("--max-tokens", type=int, default=512)
        sub.add_argument("--device", default="auto")
        if name == "report":
            sub.add_argument("--compare", default=None,
                             help="a second model with the same tokenizer (xray-demo-secret: the bundled twin)")
    sub = commands.add_parser("compare", help="compare two models on one prompt and write the numbers as JSON")
    sub.add_argument("prompt")
    sub.add_argument("--model", default="demo", help="model A: demo (the bundled model), a hub id or a local folder")
    sub.add_argument("--second", default="xray-demo-secret",
                     help="model B, with A's tokenizer (default: the bundled twin that keeps capitals secret)")
    sub.add_argument("--out", default="compare.json")
    sub.add_argument("--max-tokens", type=int, default=512)
    sub.add_argument("--device", default="auto")
    return top


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``model-xray``."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["app"]:
        return run_app(argv[1:])
    if argv[:1] == ["room"]:
        return run_room(argv[1:])
    args = parser().parse_args(argv)
    from backend.errors import XrayError

    try:
        if args.command == "report":
            print(f"wrote {write_report(args)}")
        elif args.command == "compare":
            print(f"wrote {write_compare(args)}")
        else:
            print("wrote " + " and ".join(str(p) for p in write_capture(args)))
    except XrayError as error:
        print(f"model-xray: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
