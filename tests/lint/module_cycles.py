#!/usr/bin/env python3
"""Fails when a module inside a crate imports one that imports it back.

For every crate under crates/, walks the module tree from src/lib.rs or
src/main.rs (file modules declared with `mod name;`), collects the paths each
module names (`use crate::...`, `use super::...`, inline `crate::a::b`
paths, `use` trees with braces), resolves each to the module it lands in, and
reports every strongly connected component of more than one module, with one
import per edge as evidence.

What counts as a module: every file module. What does not: the crate root
(lib.rs or main.rs, whose `mod` and `pub use` lines name everything; a path
through a root re-export is followed to the module that defines the item),
test-only modules (declared under `#[cfg(test)]`), and inline modules (their
code counts as their file's). A child naming its parent (`super::x`) and
the parent naming that child is a cycle like any other.

Usage: module_cycles.py [WORKSPACE_DIR]   (exit 1 when a cycle is found)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def strip_comments_and_strings(text: str) -> str:
    """Source with comments, string and char literals blanked out."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and (
            i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")
        ):
            hashes = re.match(r'r(#*)"', text[i:]).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            i = n if end < 0 else end + 1 + len(hashes)
            out.append('""')
        elif c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
            out.append('""')
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i:i + 4]):
            i += len(re.match(r"'(\\[^']*|[^\\'])'", text[i:i + 12]).group(0))
        else:
            out.append(c)
            i += 1
    return "".join(out)


def drop_test_blocks(code: str) -> str:
    """Removes `#[cfg(test)] mod name { ... }` bodies (inline test modules)."""
    while True:
        m = re.search(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+" + IDENT + r"\s*\{", code)
        if not m:
            return code
        depth, i = 1, m.end()
        while i < len(code) and depth:
            depth += {"{": 1, "}": -1}.get(code[i], 0)
            i += 1
        code = code[: m.start()] + code[i:]


def expand_use_tree(tree: str) -> list[str]:
    """`a::{b, c::{d, e}}` -> ["a::b", "a::c::d", "a::c::e"]."""
    tree = re.sub(r"\s+as\s+" + IDENT, "", tree)
    tree = re.sub(r"\s+", "", tree)
    brace = tree.find("{")
    if brace < 0:
        return [tree] if tree else []
    prefix, body = tree[:brace], tree[brace + 1 : tree.rfind("}")]
    parts, depth, start = [], 0, 0
    for i, c in enumerate(body):
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(body[start:i])
            start = i + 1
    parts.append(body[start:])
    out = []
    for part in parts:
        for path in expand_use_tree(part):
            out.append(prefix + path if path != "self" else prefix.rstrip(":"))
    return out


class Crate:
    def __init__(self, root_file: Path):
        self.root_file = root_file
        self.files: dict[tuple[str, ...], Path] = {}
        self.test_only: set[tuple[str, ...]] = set()
        self.reexports: dict[str, tuple[str, ...]] = {}
        self._walk((), root_file, test_only=False)

    def _walk(self, path: tuple[str, ...], file: Path, test_only: bool) -> None:
        self.files[path] = file
        if test_only:
            self.test_only.add(path)
        code = strip_comments_and_strings(file.read_text(encoding="utf-8"))
        if file.name in ("lib.rs", "main.rs", "mod.rs"):
            directory = file.parent
        else:
            directory = file.parent / file.stem
        for m in re.finditer(
            r"((?:#\[[^\]]*\]\s*)*)(?:pub(?:\([^)]*\))?\s+)?mod\s+(" + IDENT + r")\s*;", code
        ):
            attrs, name = m.group(1), m.group(2)
            explicit = re.search(r'#\[path\s*=\s*""\]', attrs)
            if explicit:
                continue
            for candidate in (directory / f"{name}.rs", directory / name / "mod.rs"):
                if candidate.exists():
                    is_test = test_only or "cfg(test)" in attrs
                    self._walk(path + (name,), candidate, is_test)
                    break
        if path == ():
            for m in re.finditer(r"\bpub\s+use\s+([^;]+);", code):
                for full in expand_use_tree(m.group(1)):
                    segs = [s for s in full.split("::") if s]
                    if segs and segs[0] == "crate":
                        segs = segs[1:]
                    if len(segs) >= 2:
                        self.reexports[segs[-1]] = tuple(segs[:-1])

    def resolve(self, segs: list[str]) -> tuple[str, ...] | None:
        """The module a crate-absolute path lands in (longest known prefix)."""
        best: tuple[str, ...] = ()
        for i in range(1, len(segs) + 1):
            if tuple(segs[:i]) in self.files:
                best = tuple(segs[:i])
            else:
                break
        if best == () and segs and segs[0] in self.reexports:
            target = self.reexports[segs[0]]
            return target if target in self.files else None
        return best or None

    def edges(self) -> dict[tuple[str, ...], dict[tuple[str, ...], str]]:
        graph: dict[tuple[str, ...], dict[tuple[str, ...], str]] = {}
        for path, file in self.files.items():
            if path == () or path in self.test_only:
                continue
            code = drop_test_blocks(strip_comments_and_strings(file.read_text(encoding="utf-8")))
            names: list[str] = []
            for m in re.finditer(r"\buse\s+([^;]+);", code):
                names.extend(expand_use_tree(m.group(1)))
            code_without_use = re.sub(r"\buse\s+[^;]+;", " ", code)
            names.extend(
                m.group(0)
                for m in re.finditer(
                    r"\b(?:crate|super|self)(?:::" + IDENT + ")+", code_without_use
                )
            )
            children = [p[-1] for p in self.files if len(p) == len(path) + 1 and p[:-1] == path]
            for child in children:
                for m in re.finditer(r"(?<![:\w])" + child + r"(?:::" + IDENT + ")+", code):
                    names.append("self::" + m.group(0))
            targets = graph.setdefault(path, {})
            for name in names:
                segs = [s for s in name.split("::") if s and s != "*"]
                if not segs:
                    continue
                if segs[0] == "crate":
                    absolute = segs[1:]
                elif segs[0] in ("super", "self"):
                    base = list(path)
                    while segs and segs[0] in ("super", "self"):
                        if segs[0] == "super":
                            base = base[:-1]
                        segs = segs[1:]
                    absolute = base + segs
                else:
                    continue
                target = self.resolve(absolute)
                if target is None or target == path or target == ():
                    continue
                if target in self.test_only:
                    continue
                # A module naming its own descendant is not an import of another module
                # that could name it back unless the descendant does; keep the edge.
                targets.setdefault(target, name)
        return graph


def strongly_connected(graph):
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            out.append(component)

    sys.setrecursionlimit(10000)
    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def main() -> int:
    workspace = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    found = 0
    checked = 0
    for manifest in sorted(workspace.glob("crates/*/Cargo.toml")):
        src = manifest.parent / "src"
        roots = [p for p in (src / "lib.rs", src / "main.rs") if p.exists()]
        for root in roots:
            crate = Crate(root)
            graph = crate.edges()
            checked += len(graph)
            for component in strongly_connected(graph):
                if len(component) < 2:
                    continue
                found += 1
                members = sorted("::".join(p) for p in component)
                print(f"{manifest.parent.name}: modules import each other: {', '.join(members)}")
                inside = set(component)
                for a in sorted(component):
                    for b, evidence in sorted(graph.get(a, {}).items()):
                        if b in inside:
                            print(f"    {'::'.join(a)} -> {'::'.join(b)}  (names {evidence})")
    if found:
        print(f"{found} import cycle(s) between modules; break them (a leaf module for shared pieces).")
        return 1
    print(f"no import cycles among {checked} modules")
    return 0


if __name__ == "__main__":
    sys.exit(main())
