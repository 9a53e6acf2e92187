"""The house keeps its layering (docs/ARCHITECTURE.md): no import cycle between femo modules and
none of the "never" arrows, read from the source with ``ast`` (imports inside functions count).

Edges into the root package ``femo`` itself are ignored: every module imports it implicitly, and
it holds only the version and ``femo.load``.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import femo

ROOT = Path(femo.__file__).resolve().parent

#: (importer prefix, imported prefix, why): arrows that must never exist.
NEVER: tuple[tuple[str, str, str], ...] = (
    ("femo.data", "femo.models", "data never imports models"),
    ("femo.models", "femo.data", "models never import data"),
    ("femo.models", "femo.audit", "models never import the audits"),
    ("femo.models", "femo.commands", "models never import the CLI"),
    ("femo.models", "femo.cli", "models never import the CLI"),
    ("femo.training", "femo.reports", "training never imports reports"),
    *((("femo.features", later, "features never import later stages") for later in
       ("femo.training", "femo.inference", "femo.reports", "femo.audit"))),
    ("femo.inference", "femo.reports", "inference never imports reports"),
    ("femo.inference", "femo.audit", "inference never imports the audits"),
    ("femo.annotate", "femo.training", "annotation never imports training"),
    ("femo.annotate", "femo.reports", "annotation never imports reports"),
)
#: The command-line layer: the only modules allowed to import femo.cli / femo.commands.
CLI_LAYER = ("femo.cli", "femo.commands", "femo.__main__")


def module_names(root: Path, package: str = "femo") -> dict[str, Path]:
    """Dotted module name -> file for every .py under ``root`` (``pkg/__init__.py`` is ``pkg``)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = (package, *path.relative_to(root).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module ``name`` refers to: itself, else its nearest parent that is a module."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _targets(node: ast.AST, importer: str, is_package: bool, package: str) -> list[str]:
    """Dotted names an ``import`` / ``from ... import`` statement may load (candidates, unresolved)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:  # relative import: climb from the importer's package
        here = importer if is_package else importer.rpartition(".")[0]
        for _ in range(node.level - 1):
            here = here.rpartition(".")[0]
        base = f"{here}.{base}" if base else here
    return [f"{base}.{a.name}" for a in node.names] + [base]


def import_graph(root: Path = ROOT, package: str = "femo") -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(femo module -> femo modules it imports, femo module -> top-level third-party names it imports)."""
    modules = module_names(root, package)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    external: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            cands = _targets(node, name, path.name == "__init__.py", package)
            if isinstance(node, ast.ImportFrom) and cands:  # `from pkg import mod` loads pkg.mod
                cands = cands[:-1] if any(_resolve(c, modules) == c for c in cands[:-1]) else cands[-1:]
            for cand in cands:
                if cand == package or cand.startswith(package + "."):
                    target = _resolve(cand, modules)
                    if target and target != name and target != package:
                        graph[name].add(target)
                elif cand:
                    external[name].add(cand.split(".")[0])
    return graph, external


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as [a, b, ..., a], or [] when the graph has none (iterative DFS)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    for start in sorted(graph):
        if start in state:
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return []


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(graph: dict[str, set[str]], external: dict[str, set[str]]) -> list[str]:
    """Every "never" arrow present, as ``importer -> imported (rule)`` lines."""
    bad = []
    for src, targets in sorted(graph.items()):
        for dst in sorted(targets):
            bad += [f"{src} -> {dst} ({why})" for a, b, why in NEVER if _within(src, a) and _within(dst, b)]
            if not any(_within(src, c) for c in CLI_LAYER) and any(_within(dst, c) for c in CLI_LAYER[:2]):
                bad.append(f"{src} -> {dst} (the library never calls its own CLI)")
        if "papermill" in external[src] and not _within(src, "femo.reports"):
            bad.append(f"{src} -> papermill (only femo.reports imports papermill)")
    return bad


def test_femo_has_no_import_cycle() -> None:
    graph, _ = import_graph()
    assert len(graph) > 50, "the walk found too few modules"
    assert find_cycle(graph) == []


def test_femo_has_none_of_the_never_arrows() -> None:
    assert violations(*import_graph()) == []


def test_the_graph_sees_imports_inside_functions() -> None:
    graph, external = import_graph()
    assert "femo.training.loop" in graph["femo.audit.ablation"]  # imported inside retrain_subsets
    assert "papermill" in external["femo.reports.notebooks"]


def _write_package(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.mark.parametrize("files, cycle", [
    # the old train <-> evaluate cycle: a top-level import one way, a function-level one back
    ({"__init__.py": "", "train.py": "from femo.evaluate import metrics\n",
      "evaluate.py": "def run():\n    from femo.train import evaluate_single\n"},
     ["femo.evaluate", "femo.train", "femo.evaluate"]),
    ({"__init__.py": "", "a/__init__.py": "", "a/x.py": "from ..b import y\n", "b/__init__.py": "",
      "b/y.py": "import femo.a.x\n"}, ["femo.a.x", "femo.b.y", "femo.a.x"]),
    ({"__init__.py": "", "a.py": "import femo.b\n", "b.py": "import femo\n"}, []),
])
def test_cycles_are_found_in_a_small_package(tmp_path: Path, files: dict, cycle: list) -> None:
    graph, _ = import_graph(_write_package(tmp_path / "femo", files))
    assert find_cycle(graph) == cycle


def test_never_arrows_are_found_in_a_small_package(tmp_path: Path) -> None:
    files = {"__init__.py": "", "cli.py": "", "data/__init__.py": "", "models/__init__.py": "",
             "data/store.py": "from femo.models import net\n", "models/net.py": "",
             "reports/__init__.py": "", "reports/demo.py": "def f():\n    from femo import cli\n",
             "training/__init__.py": "", "training/loop.py": "import papermill\nfrom femo.reports import demo\n"}
    bad = violations(*import_graph(_write_package(tmp_path / "femo", files)))
    assert bad == ["femo.data.store -> femo.models.net (data never imports models)",
                   "femo.reports.demo -> femo.cli (the library never calls its own CLI)",
                   "femo.training.loop -> femo.reports.demo (training never imports reports)",
                   "femo.training.loop -> papermill (only femo.reports imports papermill)"]


@pytest.mark.parametrize(("importer", "imported", "rule"), [
    ("features/extract.py", "training.loop", "features never import later stages"),
    ("features/face.py", "audit.stats", "features never import later stages"),
    ("inference/stream.py", "reports.figures", "inference never imports reports"),
    ("inference/predictor.py", "audit.stats", "inference never imports the audits"),
    ("annotate/job.py", "training.runs", "annotation never imports training"),
    ("annotate/job.py", "reports.demo", "annotation never imports reports"),
])
def test_stage_arrows_are_found_in_a_small_package(tmp_path: Path, importer: str, imported: str, rule: str) -> None:
    source = importer.removesuffix(".py").replace("/", ".")
    files = {"__init__.py": "", f"{importer.split('/')[0]}/__init__.py": "",
             f"{imported.split('.')[0]}/__init__.py": "", f"{imported.replace('.', '/')}.py": "",
             importer: f"def f():\n    from femo.{imported} import x\n"}
    bad = violations(*import_graph(_write_package(tmp_path / "femo", files)))
    assert bad == [f"femo.{source} -> femo.{imported} ({rule})"]


#: Packages whose ``__init__`` docstring lists every module with its one job.
LISTED_PACKAGES = ("features", "training", "inference", "reports", "annotate")
DOCS = ROOT.parent / "docs" / "ARCHITECTURE.md"
README = ROOT.parent / "README.md"


def _modules(package: str) -> list[str]:
    """File names (``name.py``, or ``name/`` for a sub-package) of femo's ``package``, no __init__."""
    folder = ROOT / package
    files = [p.name for p in folder.glob("*.py") if p.name != "__init__.py"]
    return sorted(files + [f"{p.name}/" for p in folder.iterdir() if (p / "__init__.py").is_file()])


def _house_picture() -> dict[str, str]:
    """{package: its text} from the tree in docs/ARCHITECTURE.md: a ``  name/`` line and the
    indented lines that continue it."""
    text = DOCS.read_text()
    start = text.index("femo/\n  __init__.py")
    parts: dict[str, str] = {}
    name = ""
    for line in text[start:text.index("```", start)].splitlines():
        head = line[2:].split(" ", 1)[0] if line.startswith("  ") and not line.startswith("   ") else ""
        if head.endswith("/"):
            name = head.rstrip("/")
        if name:
            parts[name] = parts.get(name, "") + line + "\n"
    return parts


def _readme_row(package: str) -> str:
    rows = [line for line in README.read_text().splitlines() if line.startswith(f"| `femo/{package}/` |")]
    assert len(rows) == 1, f"README.md: one 'Where things go' row for femo/{package}/, found {len(rows)}"
    return rows[0]


PACKAGES = ("data", "features", "models", "training", "inference", "annotate", "audit", "reports")


@pytest.mark.parametrize("package", PACKAGES)
def test_the_architecture_picture_and_readme_name_every_module(package: str) -> None:
    picture, row = _house_picture()[package], _readme_row(package)
    missing = [m for m in _modules(package) if m not in picture.split()]
    assert missing == [], f"docs/ARCHITECTURE.md: femo/{package}/ line does not name {missing}"
    missing = [m for m in _modules(package) if f"`{m}`" not in row]
    assert missing == [], f"README.md 'Where things go': femo/{package}/ row does not name {missing}"


def test_every_sub_command_is_named() -> None:
    commands = [m.removesuffix(".py") for m in _modules("commands")]
    assert [c for c in commands if c not in _house_picture()["commands"].split()] == []
    assert [c for c in commands if f"`{c}`" not in _readme_row("commands")] == []


@pytest.mark.parametrize("package", LISTED_PACKAGES)
def test_package_docstring_lists_its_modules(package: str) -> None:
    doc = ast.get_docstring(ast.parse((ROOT / package / "__init__.py").read_text())) or ""
    listed = [m for m in _modules(package) if f":mod:`.{m.removesuffix('.py')}`" in doc]
    assert listed == _modules(package), f"femo/{package}/__init__.py docstring lacks {sorted(set(_modules(package)) - set(listed))}"
