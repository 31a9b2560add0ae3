"""Every module path and symbol docs/architecture.md names exists, so the map a newcomer reads is the code.

Read from the document: file paths (`trainer.py`, `checkpoint/meta.py`, `data/{a,b}.py` in the
diagram), `module.symbol` names (`export.load_pretrained`), config keys (`checkpoint.init_from`),
class names (`CheckpointMeta`, `ModelConfig.RUNTIME_FIELDS`) and called names (`train_step()`).
"""
from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "janus_pretrain"
DOC = REPO / "docs" / "architecture.md"


def _definitions() -> tuple[dict[str, set[str]], set[str]]:
    """{module stem and dotted path: names it defines}, and every name defined anywhere (classes,
    functions, methods, assignments, class attributes)."""
    modules: dict[str, set[str]] = {}
    everywhere: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Assign):
                names.update(t.id for t in node.targets if isinstance(t, ast.Name))
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
            elif isinstance(node, ast.ImportFrom):  # a re-export counts as defined by the importing module
                names.update(a.asname or a.name for a in node.names)
        relative = path.relative_to(PACKAGE).with_suffix("")
        parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
        for key in {".".join(parts), parts[-1] if parts else "janus_pretrain"}:
            modules.setdefault(key, set()).update(names)
        everywhere |= names
    return modules, everywhere


def _paths(text: str) -> set[str]:
    found = set()
    for match in re.finditer(r"([\w./]*)\{([\w,]+)\}\.py", text):  # data/{genomes,fasta_cache}.py
        found.update(f"{match.group(1)}{name}.py" for name in match.group(2).split(","))
    text = re.sub(r"[\w./]*\{[\w,]+\}\.py", "", text)
    found.update(re.findall(r"(?<![\w/.])((?:[\w]+/)*[\w]+\.py)\b", text))
    found.update(m for m in re.findall(r"`((?:[\w]+/)+)`", text))  # `commands/`
    return found


def _exists(path: str) -> bool:
    """A path from the repository root or the package, or (as the doc abbreviates) the tail of one."""
    if (REPO / path).exists() or (PACKAGE / path).exists():
        return True
    tail = Path(path.rstrip("/")).parts
    return any(p.parts[-len(tail):] == tail for p in PACKAGE.rglob(tail[-1]))


def test_every_path_in_the_architecture_doc_exists():
    missing = sorted(p for p in _paths(DOC.read_text()) if not _exists(p))
    assert not missing, f"docs/architecture.md names files that do not exist: {missing}"


def test_every_symbol_in_the_architecture_doc_exists():
    from janus_pretrain.config import RunConfig

    modules, everywhere = _definitions()
    sections = {f.name: f.type for f in dataclasses.fields(RunConfig)}
    config = RunConfig()
    problems = []
    for token in re.findall(r"`([^`\n]+)`", DOC.read_text()):
        token = token.strip()
        if token.endswith(".py") or token.endswith("/") or " " in token or "=" in token:
            continue
        called = token.endswith("()")
        token = token.removesuffix("()")
        if not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*", token):
            continue
        first, _, rest = token.partition(".")
        parts = token.split(".")
        module = next((".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in modules), None)
        if module == token:  # a module: engine.run, checkpoint.convert
            continue
        if first in sections and rest and (module is None or module == first):  # a config key: section.key
            if not hasattr(getattr(config, first), rest.split(".")[0]):
                problems.append(f"{token}: no key {rest!r} in the {first} section")
        elif module is not None and rest:  # module.symbol
            symbol = token[len(module) + 1:].split(".")[0]
            if symbol not in modules[module]:
                problems.append(f"{token}: {module} defines no {symbol}")
        elif first[0].isupper() or called:  # a class, constant or a function named alone
            if first not in everywhere:
                problems.append(f"{token}: defined nowhere in janus_pretrain")
            elif rest and rest.split(".")[0] not in everywhere:
                problems.append(f"{token}: no {rest} in janus_pretrain")
    assert not problems, "docs/architecture.md names what does not exist:\n" + "\n".join(problems)


def test_the_checker_sees_a_wrong_name():
    assert "downstream/metrics.py" in _paths("the one metrics module (`downstream/metrics.py`)")
    assert not _exists("downstream/metrics.py") and _exists("downstream/task_metrics.py")
    assert {"janus_pretrain/data/genomes.py", "janus_pretrain/data/prepare.py"} <= _paths(
        "janus_pretrain/data/{genomes,prepare}.py")
