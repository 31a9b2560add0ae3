"""Build step: put the Hugging Face entry points and the code they run into an export directory.

transformers' trust_remote_code imports modules that sit in the model directory and import each
other relatively (`from .janus import ...`). The code is not a second copy kept by hand: the
three entry modules of janus_pretrain/hf/ and every janus_pretrain module they import, found by
reading the imports (those inside functions too), are copied flat into the export with their
`from janus_pretrain.a.b import` lines rewritten to `from .b import`. Nothing else changes, so
`package_source(relative_source(text))` gives the package file back byte for byte
(tests/test_hf_export.py checks an export against the package). config.json records
flat file -> package module under "remote_code".

Imports neither torch nor transformers: exports are written where transformers is not installed.
"""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from janus_pretrain.export_layout import (AUTO_MAP, CONFIG_MODULE, HEAD_CLASS, MODEL_TYPE, MODELING_MODULE,
                                          TOKENIZER_CLASS, TOKENIZER_CONFIG_NAME, TOKENIZER_MODULE)
from janus_pretrain.tokenizer import TOKENIZER_VERSION

PACKAGE = "janus_pretrain"
PACKAGE_DIR = Path(__file__).resolve().parents[1]
# tokenizer_config.json's keys that make AutoTokenizer find the tokenizer in the export
TOKENIZER_ENTRY = {"tokenizer_class": TOKENIZER_CLASS, "auto_map": {"AutoTokenizer": AUTO_MAP["AutoTokenizer"]},
                   "tokenizer_version": TOKENIZER_VERSION}
ENTRY_MODULES = tuple(f"{PACKAGE}.hf.{name}" for name in (CONFIG_MODULE, MODELING_MODULE, TOKENIZER_MODULE))


class RemoteCodeError(RuntimeError):
    """The package's code cannot be flattened into an export (a bug in janus_pretrain, not user input)."""


def _module_path(dotted: str) -> Path:
    return PACKAGE_DIR.parent.joinpath(*dotted.split(".")).with_suffix(".py")


def package_imports(path: Path) -> list[ast.ImportFrom]:
    """Every `from janus_pretrain... import` in a file; other forms of importing the package are refused."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == PACKAGE for a in node.names):
            raise RemoteCodeError(f"{path}:{node.lineno}: `import {PACKAGE}...` cannot be made relative; "
                                  f"write `from {PACKAGE}.module import name`")
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == PACKAGE:
            if not _module_path(node.module).is_file():
                raise RemoteCodeError(f"{path}:{node.lineno}: `from {node.module} import` names a package, not a "
                                      f"module; import from the module that defines the name")
            found.append(node)
    return found


def module_closure() -> dict[str, str]:
    """Flat file name in the export -> the package module it copies, for the entry modules and
    everything they import from the package."""
    todo, seen = list(ENTRY_MODULES), {}
    while todo:
        dotted = todo.pop()
        if dotted in seen.values():
            continue
        flat = dotted.rpartition(".")[2] + ".py"
        if flat in seen:
            raise RemoteCodeError(f"{dotted} and {seen[flat]} would both be {flat} in an export; rename one")
        seen[flat] = dotted
        todo.extend(node.module for node in package_imports(_module_path(dotted)))
    return dict(sorted(seen.items()))


def relative_source(dotted: str) -> str:
    """The source of package module `dotted` with its package imports made relative."""
    path = _module_path(dotted)
    lines = path.read_text().splitlines(keepends=True)
    for node in package_imports(path):
        old, new = f"from {node.module} import", f"from .{node.module.rpartition('.')[2]} import"
        line = lines[node.lineno - 1]
        if line.count(old) != 1:
            raise RemoteCodeError(f"{path}:{node.lineno}: expected `{old}` once on the line; keep the import on one line")
        lines[node.lineno - 1] = line.replace(old, new)
    return "".join(lines)


def package_source(text: str, remote_code: dict[str, str]) -> str:
    """Inverse of relative_source: `from .b import` back to the package module b came from."""
    flat_to_dotted = {flat.removesuffix(".py"): dotted for flat, dotted in remote_code.items()}
    return re.sub(r"^(\s*)from \.(\w+) import", lambda m: f"{m.group(1)}from {flat_to_dotted[m.group(2)]} import",
                  text, flags=re.MULTILINE)


def write_remote_code(export_dir: str | Path, tokenizer_mode: str | None = None) -> dict:
    """Write the code files and tokenizer_config.json (or add the tokenizer entry to the one there)
    into `export_dir`; returns the keys config.json needs for transformers (model_type,
    architectures, auto_map, remote_code). tokenizer_mode: the model's model.tokenizer, recorded
    for AutoTokenizer (None keeps what tokenizer_config.json says, else the default)."""
    export_dir = Path(export_dir)
    closure = module_closure()
    for flat, dotted in closure.items():
        (export_dir / flat).write_text(relative_source(dotted))
    tokenizer_config = export_dir / TOKENIZER_CONFIG_NAME  # a tokenizer's save_pretrained may have written one
    settings = json.loads(tokenizer_config.read_text()) if tokenizer_config.is_file() else {}
    entry = dict(TOKENIZER_ENTRY, **({"mode": tokenizer_mode} if tokenizer_mode else {}))
    tokenizer_config.write_text(json.dumps({**settings, **entry}, indent=2, sort_keys=True) + "\n")
    return {"model_type": MODEL_TYPE, "architectures": [HEAD_CLASS], "auto_map": dict(AUTO_MAP),
            "remote_code": closure}
