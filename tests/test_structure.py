"""The shape of the code: the backend and the pure builders never touch Streamlit."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PURE = [*sorted((ROOT / "backend").glob("*.py")), *sorted((ROOT / "views" / "content").glob("*.py")),
        *(ROOT / "views" / name for name in ("figures.py", "circuits.py", "coloured.py", "captions.py", "display.py",
                                             "state.py", "downloads.py", "report.py", "policy.py"))]
HOOK_API = ("register_forward_hook", "register_forward_pre_hook", "register_full_backward_hook",
            "register_full_backward_pre_hook", "register_module_forward")


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


def test_one_backend_module_reaches_inside_the_model():
    """Only backend.hooks registers PyTorch hooks or swaps a module's forward (the other modules say what, not how)."""
    users = sorted(p.name for p in (ROOT / "backend").glob("*.py")
                   if any(name in p.read_text() for name in HOOK_API) or ".forward = " in p.read_text())
    assert users == ["hooks.py"]


def backend_imports(path: Path) -> set[str]:
    """The backend modules a backend module imports, at its top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("backend"):
            found.add(node.module if node.module != "backend" else "backend")
            found.update(f"backend.{alias.name}" for alias in node.names
                         if (ROOT / "backend" / f"{alias.name}.py").exists() and node.module == "backend")
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("backend"))
    return found - {"backend"}


def test_the_backend_imports_form_no_circle():
    graph = {f"backend.{p.stem}": backend_imports(p) for p in (ROOT / "backend").glob("*.py") if p.stem != "__init__"}
    done, path = set(), []

    def visit(module: str) -> None:
        if module in path:
            raise AssertionError("import circle: " + " -> ".join([*path[path.index(module):], module]))
        if module in done:
            return
        path.append(module)
        for other in sorted(graph.get(module, ())):
            visit(other)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


def test_modules_stay_small():
    lengths = {p.name: len(p.read_text().splitlines()) for p in (ROOT / "backend").glob("*.py")}
    assert max(lengths.values()) <= 450, {name: n for name, n in lengths.items() if n > 450}
    assert len((ROOT / "app.py").read_text().splitlines()) < 400
