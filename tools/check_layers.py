"""Static architecture check of the ``samllava`` package (run from the repository root).

Reads every module's source (nothing is imported) and reports:

* a module of the package that no layer of :data:`LAYERS` names (every module has a room);
* an import that points to a higher layer, counting imports written inside functions;
* an import cycle between modules (Tarjan's strongly connected components);
* an import of a ``samllava`` module written inside a function (it would hide a cycle from a reader
  and from Python), or of another package without a comment, beside it or on the line above, that
  gives the reason (a heavy or optional dependency: say which);
* a module over ``--max-module`` lines or a function over ``--max-function`` lines;
* more than :data:`MAX_LOOSE` modules loose in the package folder, and an import loop between two of its
  folders (folder A imports folder B and B imports A, whatever the modules).

Importing ``a.b.c`` runs ``a/__init__.py`` and ``a/b/__init__.py`` too, so those packages count as
imported. Edges from a module into its own ancestor packages are ignored (a package's ``__init__``
re-exports its children, and a child is always run after its parent).

Prints each finding, then a summary line; exit status 1 when anything is found.
``python tools/check_layers.py --table`` prints the layer table.
"""
from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

# Bottom to top: a module may import its own layer and the layers below it, never a higher one.
# A name covers the module and, for a package, every module inside it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("samllava", "samllava.core", "samllava.metrics")),
    ("data", ("samllava.data",)),
    ("assets", ("samllava.assets",)),
    ("stages", ("samllava.coarse", "samllava.sam", "samllava.describe")),
    ("model", ("samllava.model",)),
    ("train", ("samllava.train",)),
    ("evaluate", ("samllava.evaluate",)),
    ("report", ("samllava.report",)),
    ("diagnose", ("samllava.diagnose",)),
    ("export", ("samllava.export",)),
    ("notebook", ("samllava.notebook",)),
    ("cli", ("samllava.cli", "samllava.__main__")),
]
# What each layer holds, for the README's map (tests/test_readme.py keeps the two equal).
LAYER_ROLES = {
    "base": "typed profiles, device, seeds, batching, caching, where files live and how they are written "
            "(`core/`); the paper's metrics (`metrics/`)",
    "data": "MVTec-AD, VisA, own folders, synthetic and real-texture generators, few-shot supports, instructions",
    "assets": "weight resolution, verified downloads, the data sets' archives, packaged assets",
    "stages": "coarse (Sec. 3.1, Eq. 1-2, the verdict), sam (Sec. 3.1-3.2, Eq. 3-6), describe (SASA, LLaVA, "
              "LoRA, wording; Sec. 3.3-3.4, Eq. 7-8, 10)",
    "model": "SAM-LLaVA assembled (Eq. 9), its checkpoint, a data set encoded once",
    "train": "end-to-end training, the SAM side alone, the profile's default model",
    "evaluate": "the evaluation harness, answers and their accuracy, the judge, the complexity benchmark",
    "report": "figures, the paper's values, results/SUMMARY.md, CLAIMS.md and the comparison of two runs",
    "diagnose": "`samllava diagnose`: one entry (`diagnose.run`), reading images, writing masks and reports",
    "export": "`samllava export`: the detection part as ONNX graphs, and their runner without torch",
    "notebook": "the notebooks' tables, the heatmap explorer, try-your-own-image, the papermill runner",
    "cli": "the `samllava` command",
}
MAX_LOOSE = 8  # modules directly in the package folder (the rest live in a folder named after their layer)


@dataclass
class Module:
    name: str
    path: Path
    is_package: bool
    imports: dict[str, int] = field(default_factory=dict)  # target module -> first line


def module_name(path: Path, root: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def layer_of(name: str) -> int | None:
    """Index in :data:`LAYERS` of the longest name that covers ``name`` (None: unassigned)."""
    best, best_len = None, -1
    for i, (_, names) in enumerate(LAYERS):
        for n in names:
            covers = name == n or (n != "samllava" and name.startswith(n + "."))
            if covers and len(n) > best_len:
                best, best_len = i, len(n)
    return best


def _resolve(target: str, modules: dict[str, Module]) -> str | None:
    while target and target not in modules:
        target = target.rpartition(".")[0]
    return target or None


def _import_targets(node: ast.AST, mod: Module) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        base = mod.name.split(".") if mod.is_package else mod.name.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    return [target] + [f"{target}.{a.name}" for a in node.names]


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def scan(root: Path, max_module: int, max_function: int) -> tuple[dict[str, Module], list[str]]:
    """Every module of the package under ``root`` with its imports, and the findings about its code."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        name, is_pkg = module_name(path, root)
        modules[name] = Module(name, path, is_pkg)
    findings = []
    for mod in modules.values():
        findings += _read_module(mod, modules, max_module, max_function)
    return modules, findings


def _read_module(mod: Module, modules: dict[str, Module], max_module: int, max_function: int) -> list[str]:
    """Fill ``mod.imports``; return its size findings and those about imports written inside functions."""
    src = mod.path.read_text()
    lines = src.splitlines()
    tree = ast.parse(src)
    findings = [f"module over {max_module} lines: {mod.path} ({len(lines)})"] if len(lines) > max_module else []
    in_function = set()
    for fn in _functions(tree):
        n = fn.end_lineno - fn.lineno + 1
        if n > max_function:
            findings.append(f"function over {max_function} lines: {mod.path}:{fn.lineno} {fn.name} ({n})")
        in_function |= {id(x) for x in ast.walk(fn) if isinstance(x, (ast.Import, ast.ImportFrom))}
    for node in ast.walk(tree):
        targets = _import_targets(node, mod)
        inner = {_resolve(t, modules) for t in targets} - {None}
        inner = {t for t in inner if not mod.name.startswith(t + ".")}  # not its own ancestor packages
        if targets and id(node) in in_function:
            findings += _inner_import_finding(mod, node, inner, targets[0], lines)
        for t in inner:  # importing a.b.c runs the __init__ of a.b too
            parts = t.split(".")
            for k in range(2, len(parts) + 1):
                mod.imports.setdefault(".".join(parts[:k]), node.lineno)
    for t in list(mod.imports):
        if t == mod.name or mod.name.startswith(t + "."):
            del mod.imports[t]  # the module itself or an ancestor package (always run first)
    return findings


def _inner_import_finding(mod: Module, node: ast.AST, inner: set[str], target: str, lines: list[str]) -> list[str]:
    where = f"{mod.path}:{node.lineno}"
    if inner:
        return [f"import of {', '.join(sorted(inner))} inside a function: {where}"]
    if not any("#" in line for line in lines[node.lineno - 2:node.end_lineno]):  # the reason, above or beside
        return [f"import of {target} inside a function without a comment giving the reason: {where}"]
    return []


def layer_findings(modules: dict[str, Module]) -> list[str]:
    findings = []
    for mod in modules.values():
        mine = layer_of(mod.name)
        if mine is None:
            findings.append(f"module in no layer: {mod.name} ({mod.path}); add it to LAYERS in {Path(__file__).name}")
            continue
        for t, line in sorted(mod.imports.items()):
            theirs = layer_of(t)
            if theirs is not None and theirs > mine:
                findings.append(f"upward import: {mod.name} ({LAYERS[mine][0]}) imports {t} ({LAYERS[theirs][0]}) "
                                f"at {mod.path}:{line}")
    return findings


def cycles(modules: dict[str, Module]) -> list[list[str]]:
    """Strongly connected components of more than one module (iterative Tarjan)."""
    graph = {m: [t for t in mod.imports if t in modules] for m, mod in modules.items()}
    index, low, on, stack, out, counter = {}, {}, set(), [], [], 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        x = stack.pop()
                        on.discard(x)
                        comp.append(x)
                        if x == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
            elif w not in index:
                index[w] = low[w] = counter
                counter += 1
                stack.append(w)
                on.add(w)
                work.append((w, iter(graph[w])))
            elif w in on:
                low[v] = min(low[v], index[w])
    return out


def readme_table() -> str:
    """The README's map of the layers, bottom to top (tests/test_readme.py checks the README quotes it)."""
    rows = ["| layer | folders | what |", "|---|---|---|"]
    for name, members in LAYERS:
        shown = [m.removeprefix("samllava.") for m in members if m != "samllava"]
        folders = ", ".join(f"`{m}/`" if not m.startswith("__") else f"`{m}.py`" for m in shown)
        rows.append(f"| {name} | {folders} | {LAYER_ROLES[name]} |")
    return "\n".join(rows)


def folder_of(name: str) -> str:
    """The package's top-level folder (or loose module) a module belongs to: ``samllava.sam.cascade`` -> ``sam``."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def folder_findings(modules: dict[str, Module], root: Path) -> list[str]:
    """Too many loose modules; import loops between folders (each pair once)."""
    loose = sorted(m.path.name for m in modules.values() if m.path.parent == root)
    findings = [f"loose modules: {len(loose)} in {root} ({', '.join(loose)}), at most {MAX_LOOSE}"] \
        if len(loose) > MAX_LOOSE else []
    edges: dict[str, set[str]] = {}
    for mod in modules.values():
        for t in mod.imports:
            if folder_of(t) != folder_of(mod.name):
                edges.setdefault(folder_of(mod.name), set()).add(folder_of(t))

    def reaches(a: str, b: str) -> bool:
        seen, todo = set(), [a]
        while todo:
            x = todo.pop()
            if x == b:
                return True
            if x not in seen:
                seen.add(x)
                todo += edges.get(x, ())
        return False

    folders = {p.name for p in root.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    loops = sorted({tuple(sorted((a, b))) for a in edges for b in edges[a] if (a in folders or b in folders)
                    and reaches(b, a)})
    return findings + [f"import loop between folders: {a} <-> {b}" for a, b in loops]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("package", nargs="?", default="samllava")
    p.add_argument("--max-module", type=int, default=400)
    p.add_argument("--max-function", type=int, default=60)
    p.add_argument("--table", action="store_true", help="print the layer table and exit")
    p.add_argument("--readme", action="store_true", help="print the README's layer map (Markdown) and exit")
    args = p.parse_args(argv)
    if args.table:
        for i, (name, members) in enumerate(LAYERS):
            print(f"{i} {name}: {', '.join(members)}")
        return 0
    if args.readme:
        print(readme_table())
        return 0
    modules, findings = scan(Path(args.package), args.max_module, args.max_function)
    findings += layer_findings(modules)
    findings += folder_findings(modules, Path(args.package))
    found_cycles = cycles(modules)
    findings += [f"import cycle of {len(c)} modules: {', '.join(c)}" for c in found_cycles]
    for f in findings:
        print(f)
    kinds = {k: sum(f.startswith(k) for f in findings) for k in ("import cycle", "upward import", "module in no layer",
                                                                   "import of", "module over", "function over",
                                                                   "loose modules", "import loop between folders")}
    print(f"{len(modules)} modules in {len(LAYERS)} layers: {kinds['import cycle']} import cycles, "
          f"{kinds['upward import']} upward imports, {kinds['module in no layer']} modules in no layer, "
          f"{kinds['import of']} imports inside functions to fix, {kinds['module over']} modules over "
          f"{args.max_module} lines, {kinds['function over']} functions over {args.max_function} lines, "
          f"{kinds['import loop between folders']} import loops between folders")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
