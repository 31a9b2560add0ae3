"""Rewrite a CUDA package's setup.py to build for sm_90 (Hopper) alone, without -lineinfo.

    python bench/gpu/sm90_setup.py SETUP_PY [--check-only]

mamba-ssm's and causal-conv1d's setup.py ignore TORCH_CUDA_ARCH_LIST and append nine
`-gencode arch=compute_XX,code=sm_XX` pairs to their nvcc flags under CUDA 13, some inside
`if bare_metal_version >= ...:` blocks. This edits the syntax tree, not the text: every
`X.append("-gencode")` / `X.append("arch=compute_NN,...")` pair for another architecture is
dropped (an `if` block left empty gets `pass`, so the file still parses), and every "-lineinfo"
list item goes. Then the check, which also runs alone with --check-only, FAILS (exit 1, naming
the file) unless the result parses and names exactly one architecture, compute_90/sm_90, and no
-lineinfo. Exit 2 for a file that is missing or does not parse before the edit.
"""
from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

KEEP = "arch=compute_90,code=sm_90"
ARCH = re.compile(r"arch=compute_(\d+)|code=sm_(\d+)|compute_(\d+)|sm_(\d+)")


def _appended_string(stmt: ast.stmt) -> str | None:
    """The string of an `X.append("...")` expression statement, else None."""
    if (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)
            and isinstance(stmt.value.func, ast.Attribute) and stmt.value.func.attr == "append"
            and len(stmt.value.args) == 1 and isinstance(stmt.value.args[0], ast.Constant)
            and isinstance(stmt.value.args[0].value, str)):
        return stmt.value.args[0].value
    return None


def _drop_other_arches(body: list[ast.stmt]) -> tuple[list[ast.stmt], int]:
    kept, dropped, i = [], 0, 0
    while i < len(body):
        flag = _appended_string(body[i])
        arch = _appended_string(body[i + 1]) if i + 1 < len(body) else None
        if flag == "-gencode" and arch is not None and arch.startswith("arch=") and arch != KEEP:
            dropped += 1
            i += 2
            continue
        kept.append(body[i])
        i += 1
    return kept, dropped


class _Sm90Only(ast.NodeTransformer):
    def __init__(self):
        self.dropped = 0
        self.lineinfo = 0

    def generic_visit(self, node):
        super().generic_visit(node)
        for field in ("body", "orelse", "finalbody"):
            body = getattr(node, field, None)
            if isinstance(body, list) and body and isinstance(body[0], ast.stmt):
                body, n = _drop_other_arches(body)
                self.dropped += n
                if not body and field == "body":
                    body = [ast.Pass()]
                setattr(node, field, body)
        return node

    def visit_List(self, node):
        self.generic_visit(node)
        before = len(node.elts)
        node.elts = [e for e in node.elts if not (isinstance(e, ast.Constant) and e.value == "-lineinfo")]
        self.lineinfo += before - len(node.elts)
        return node


def problems(source: str) -> list[str]:
    """What keeps SOURCE from being an sm_90-only, -lineinfo-free setup.py (empty: none)."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        return [f"does not parse: {exc.msg} at line {exc.lineno}"]
    arches, found = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value == "-lineinfo":
                found.append("-lineinfo is still passed to nvcc")
            for match in ARCH.finditer(node.value):
                arches.add(next(g for g in match.groups() if g))
    if arches != {"90"}:
        found.append(f"architectures named: {sorted(arches, key=int) or 'none'}, expected only 90")
    return found


def rewrite(source: str) -> tuple[str, int, int]:
    tree = _Sm90Only()
    module = tree.visit(ast.parse(source))
    return ast.unparse(ast.fix_missing_locations(module)) + "\n", tree.dropped, tree.lineinfo


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("setup_py", type=Path)
    ap.add_argument("--check-only", action="store_true", help="only check, do not rewrite")
    args = ap.parse_args()
    try:
        source = args.setup_py.read_text()
        ast.parse(source)
    except (OSError, SyntaxError) as exc:
        print(f"error: {args.setup_py}: {exc}", file=sys.stderr)
        return 2
    if not args.check_only:
        source, dropped, lineinfo = rewrite(source)
        args.setup_py.write_text(source)
        print(f"{args.setup_py}: dropped {dropped} -gencode pairs and {lineinfo} -lineinfo")
    found = problems(source)
    for problem in found:
        print(f"error: {args.setup_py}: {problem}", file=sys.stderr)
    if not found:
        print(f"{args.setup_py}: sm_90 only, no -lineinfo, parses")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
