"""The shape of the code: the backend and the pure builders never touch Streamlit."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PURE = [*sorted((ROOT / "backend").glob("*.py")),
        *(ROOT / "views" / name for name in ("figures.py", "circuits.py", "coloured.py", "captions.py", "display.py",
                                             "state.py", "downloads.py", "report.py"))]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_backend_and_builders_never_import_streamlit():
    offenders = [str(p.relative_to(ROOT)) for p in PURE if "streamlit" in imported_modules(p)]
    assert offenders == []


def test_backend_imports_without_streamlit_loaded():
    code = "import sys, backend, views.figures, views.circuits; print('streamlit' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_nothing_uses_unsafe_html():
    sources = [*ROOT.glob("*.py"), *ROOT.glob("views/*.py"), *ROOT.glob("backend/*.py")]
    assert [str(p) for p in sources if "unsafe_allow_html" in p.read_text()] == []


def test_streamlit_config_is_a_safe_and_quick_local_default():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "localhost" and config["server"]["enableXsrfProtection"] is True
    assert config["browser"]["gatherUsageStats"] is False
    assert config["runner"]["postScriptGC"] is False  # a 0.2 s full collection after every run blocks sending
