#!/usr/bin/env python3
"""The one-way layer check: no module of the core crate (src/) imports from a layer above it.

    python3 tools/layers.py              check src/ (exit 1 and list each upward import)
    python3 tools/layers.py --self-test  prove the checker catches an injected upward import
    python3 tools/layers.py --graph      print every module's layer and what it imports

Layers, leaf first, are declared in LAYERS below (ARCHITECTURE.md explains them). A module is a
file under src/ (src/a/b.rs and src/a/b/mod.rs are `a::b`); it belongs to the layer of the
longest declared prefix of its path. Every `crate::...` path in a module's code (in `use`
trees, braces expanded, and inline paths) and every `super::...` path is resolved to the module
that defines the name, following `pub use` re-exports, and must belong to the same layer or a
lower one. Test code (files and inline modules under `#[cfg(test)]`) may reach any layer.
The filter (filter/) and CLI (cli/) crates are the top layer: Cargo already stops the core
from naming them, and they depend only on `aigate_core`.

Python standard library only; run by `make lint` (and so by `make test`).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"

# Leaf first. Each entry: (layer name, module path prefixes in it).
LAYERS: list[tuple[str, list[str]]] = [
    # Wire formats and the client-facing shapes built from them: JSON views and edits (json,
    # json_view, and pipeline::in_place, the request's texts found and edited in place), SSE
    # framing, content encodings, byte search, errors, usage, the client API surface,
    # secret redaction, metric names, and the cost of an answer from its usage and prices.
    ("wire", ["json", "json_view", "pipeline::in_place", "sse", "encoding", "find", "error", "usage", "api",
              "secrets", "metrics", "cost"]),
    # The one trait between the pipeline and Envoy, and hosts for tests and benches.
    ("host", ["host", "counting_host"]),
    # The config model (serde types of the public contract) and its validation types
    # (config::validate); `config` itself only declares its modules and re-exports (names
    # resolve to where they are defined).
    ("config", ["config::model", "config::validate", "config"]),
    # The stage contract: what a stage is given and returns; names no concrete stage.
    ("stage", ["pipeline::stage"]),
    # The stages, the providers and the client APIs (one module per API behind `ClientApi`).
    ("stages", ["guards", "shaping", "transform", "limits", "providers", "client_api"]),
    # The plan: the only module that knows every stage; compiles the config into each route's
    # ordered stage lists.
    ("plan", ["plan"]),
    # The flow: one request's state machine, route matching, stream processing.
    ("flow", ["pipeline"]),
    # The crate root only declares modules.
    ("root", [""]),
]

# Upward imports tolerated, as (importer, imported module). Empty: the layers run one way
# (issue 13). Nothing may be added here: fix the import instead.
ALLOWED: set[tuple[str, str]] = set()

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
CFG_TEST = re.compile(r"#\[cfg\(test\)\]\s*(?:#\[[^\]]*\]\s*)*(?:pub(?:\([^)]*\))?\s+)?mod\s+(" + IDENT + r")\s*([;{])")


def strip_comments_and_strings(text: str) -> str:
    """Blanks comments and string/char literals (keeping newlines and braces' positions)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and not re.match(r"[A-Za-z0-9_]", text[i - 1] if i else " ") or (
            c == "r" and re.match(r'r#*"', text[i:i + 10]) and text[i - 1:i] == "b"
            and not re.match(r"[A-Za-z0-9_]", text[i - 2] if i > 1 else " ")  # a raw byte string, br"..."
        ):
            hashes = re.match(r"r(#*)\"", text[i:]).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            j = n if end < 0 else end + 1 + len(hashes)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(re.sub(r"[^\n]", " ", text[i:j + 1]))
            i = j + 1
        elif c == "'" and re.match(r"'(\\.|[^\\'])'|'\\u\{[0-9a-fA-F]+\}'|'\\x[0-9a-fA-F]{2}'", text[i:i + 12]):
            m = re.match(r"'(\\.|[^\\'])'|'\\u\{[0-9a-fA-F]+\}'|'\\x[0-9a-fA-F]{2}'", text[i:i + 12])
            out.append(" " * len(m.group(0)))
            i += len(m.group(0))
        else:
            out.append(c)
            i += 1
    return "".join(out)


def matching_brace(code: str, open_at: int) -> int:
    depth = 0
    for j in range(open_at, len(code)):
        if code[j] == "{":
            depth += 1
        elif code[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    return len(code)


def module_of(rel: Path) -> str:
    parts = list(rel.with_suffix("").parts)
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    return "::".join(parts)


def expand_use_tree(tree: str, with_names: bool = False) -> list:
    """`a::{b, c::{d as e, self}}` -> ["a::b", "a::c::d", "a::c"]; with_names, (path, bound name)."""
    tree = re.sub(r"\s+as\s+", "@as@", tree)
    tree = re.sub(r"\s+", "", tree)
    results: list[str] = []

    def walk(prefix: str, s: str) -> None:
        # split s at top-level commas
        items, depth, start = [], 0, 0
        for k, ch in enumerate(s):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            elif ch == "," and depth == 0:
                items.append(s[start:k])
                start = k + 1
        items.append(s[start:])
        for item in items:
            item = item.strip()
            if not item:
                continue
            item, _, alias = item.partition("@as@")
            brace = item.find("{")
            if brace >= 0:
                head = item[:brace].rstrip(":")
                walk(join(prefix, head), item[brace + 1:item.rfind("}")])
            elif item == "self":
                results.append((prefix, alias or prefix.split("::")[-1]))
            else:
                path = join(prefix, item)
                results.append((path, alias or path.split("::")[-1]))

    walk("", tree)
    return results if with_names else [path for path, _ in results]


def join(a: str, b: str) -> str:
    return b if not a else (a if not b else f"{a}::{b}")


class Crate:
    def __init__(self, files: dict[str, str]):
        # files: path relative to src/ -> text
        self.code: dict[str, str] = {}
        self.test_files: set[str] = set()
        for rel, text in files.items():
            self.code[module_of(Path(rel))] = strip_comments_and_strings(text)
        self.modules = set(self.code)
        # Files declared `#[cfg(test)] mod x;` (and what they declare) are test code.
        for mod, code in self.code.items():
            for m in CFG_TEST.finditer(code):
                if m.group(2) == ";":
                    self.test_files.add(join(mod, m.group(1)))
        # `#[path = "x_tests.rs"] mod tests;` inside a.rs: the file x_tests.rs is a::tests.
        self.aliases: dict[str, str] = {}
        for rel, text in files.items():
            mod = module_of(Path(rel))
            for m in re.finditer(r"#\[path\s*=\s*\"([^\"]+)\"\]\s*(?:#\[[^\]]*\]\s*)*mod\s+(" + IDENT + ")", text):
                target = module_of(Path(rel).parent / m.group(1))
                self.aliases[target] = join(mod, m.group(2))
        for target, real in self.aliases.items():
            if target in self.code:
                self.code[real] = self.code.pop(target)
                self.modules.discard(target)
                self.modules.add(real)
        self.reexports = self._reexports()

    def _reexports(self) -> dict[str, dict[str, str]]:
        result: dict[str, dict[str, str]] = {}
        for mod, code in self.code.items():
            names: dict[str, str] = {}
            for m in re.finditer(r"\bpub(?:\([^)]*\))?\s+use\s+([^;]+);", code):
                for path in expand_use_tree(m.group(1)):
                    absolute = self.absolute(mod, path)
                    if absolute is not None:
                        names[absolute.split("::")[-1]] = absolute
            result[mod] = names
        return result

    def absolute(self, mod: str, path: str) -> str | None:
        """A path as written in `mod` -> a crate-absolute path, or None if external."""
        segs = path.split("::")
        if segs[0] == "crate":
            return "::".join(segs[1:])
        if segs[0] in ("super", "self"):
            base = mod.split("::") if mod else []
            while segs and segs[0] in ("super", "self"):
                if segs[0] == "super":
                    base = base[:-1]
                segs = segs[1:]
            return "::".join(base + segs)
        # A bare path in a `use` names a child module of `mod` (2018 edition: or an extern crate).
        child = join(mod, segs[0])
        if child in self.modules:
            return join(mod, path)
        return None

    def resolve(self, path: str, depth: int = 0) -> str:
        """The module that defines `path` (a crate-absolute path), through re-exports."""
        segs = path.split("::") if path else []
        k = len(segs)
        while k > 0 and "::".join(segs[:k]) not in self.modules:
            k -= 1
        mod = "::".join(segs[:k])
        if k < len(segs) and depth < 8:
            target = self.reexports.get(mod, {}).get(segs[k])
            if target is not None and target != path:
                return self.resolve("::".join(target.split("::") + segs[k + 1:]), depth + 1)
        return mod

    def imports(self, mod: str) -> set[str]:
        """Crate-absolute paths that non-test code of `mod` names."""
        code = self.code[mod]
        # Blank inline `#[cfg(test)] mod x { ... }` blocks.
        for m in list(CFG_TEST.finditer(code)):
            if m.group(2) == "{":
                end = matching_brace(code, m.end() - 1)
                code = code[:m.start()] + re.sub(r"[^\n]", " ", code[m.start():end + 1]) + code[end + 1:]
        paths: set[str] = set()
        bound: dict[str, str] = {}  # a name a `use` binds to a module -> that module's path
        for m in re.finditer(r"\buse\s+([^;]+);", code):
            for path, name in expand_use_tree(m.group(1), with_names=True):
                absolute = self.absolute(mod, path)
                if absolute is not None:
                    paths.add(absolute)
                    if absolute in self.modules:
                        bound[name] = absolute
        # Paths through a bound module name (`use crate::config::{self}` ... `config::Plan`).
        for name, absolute in bound.items():
            for m in re.finditer(r"(?<![A-Za-z0-9_:])" + name + r"((?:::" + IDENT + r")+)", code):
                paths.add(absolute + m.group(1))
        for m in re.finditer(r"(?<![A-Za-z0-9_:])((?:crate|super)(?:::" + IDENT + r")+)", code):
            absolute = self.absolute(mod, m.group(1))
            if absolute is not None:
                paths.add(absolute)
        return paths


def layer_of(mod: str) -> int:
    best, best_len = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (mod == prefix or mod.startswith(prefix + "::") or prefix == "") and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    if best is None:
        raise SystemExit(f"layers: module `{mod}` is in no declared layer: add it to LAYERS in tools/layers.py")
    return best


def check(files: dict[str, str], allowed: set[tuple[str, str]]) -> tuple[list[str], set[tuple[str, str]]]:
    """(upward imports not allowed, as messages; the pairs that are upward, allowed or not)."""
    crate = Crate(files)
    problems: list[str] = []
    upward: set[tuple[str, str]] = set()
    for mod in sorted(crate.modules):
        if mod in crate.test_files or any(mod.startswith(t + "::") for t in crate.test_files):
            continue
        own = layer_of(mod)
        for path in sorted(crate.imports(mod)):
            target = crate.resolve(path)
            if target == mod:
                continue
            theirs = layer_of(target)
            if theirs > own:
                upward.add((mod, target))
                if (mod, target) not in allowed:
                    problems.append(
                        f"{mod} ({LAYERS[own][0]}) imports {path} from {target} ({LAYERS[theirs][0]})"
                    )
    return sorted(set(problems)), upward


def read_src() -> dict[str, str]:
    return {str(p.relative_to(SRC)): p.read_text(encoding="utf-8") for p in sorted(SRC.rglob("*.rs"))}


def graph() -> int:
    crate = Crate(read_src())
    for mod in sorted(crate.modules):
        targets = sorted({crate.resolve(p) for p in crate.imports(mod)} - {mod})
        tag = " (test)" if mod in crate.test_files else ""
        print(f"{mod or '<root>'} [{LAYERS[layer_of(mod)][0]}]{tag}: {', '.join(t or '<root>' for t in targets)}")
    return 0


def self_test() -> int:
    files = read_src()
    baseline, _ = check(files, ALLOWED)
    failures = []
    # An injected upward import (wire -> flow) in each spelling the checker reads must fail.
    injections = {
        "use crate::pipeline::Flow;": "pipeline",
        "use crate::{json_view, pipeline::{self, Flow}};": "pipeline",
        "fn _f(_: &crate::guards::GuardPlan) {}": "guards",
        "use crate::config::Auth;": "config::validate",  # through config's `pub use`
        "use crate::plan::Plan;": "plan",
        "use crate::limits::Ticket;": "pipeline::stage",  # through a stage's `pub use` of the contract
    }
    for line, target in injections.items():
        injected = dict(files)
        injected["json.rs"] = files["json.rs"] + "\n" + line + "\n"
        problems, _ = check(injected, ALLOWED)
        new = [p for p in problems if p not in baseline]
        if not any(p.startswith("json (wire)") and p.endswith(f"from {target} ({LAYERS[layer_of(target)][0]})") for p in new):
            failures.append(f"not caught: `{line}` in src/json.rs (got {new})")
    # `super::` from a stage up into the flow must fail too.
    injected = dict(files)
    injected["guards/text.rs"] = files["guards/text.rs"] + "\nuse super::super::pipeline::Flow;\n"
    new = [p for p in check(injected, ALLOWED)[0] if p not in baseline]
    if not any(p.startswith("guards::text (stages)") and "from pipeline (flow)" in p for p in new):
        failures.append(f"not caught: `use super::super::pipeline::Flow;` in src/guards/text.rs (got {new})")
    # The same import in test code is allowed; a downward import is allowed; comments and strings are not code.
    for rel, line in {
        "json.rs": '#[cfg(test)]\nmod injected_tests {\n    use crate::pipeline::Flow;\n}\n',
        "pipeline/mod.rs": "use crate::json_view::JsonView;\n",
        "sse.rs": '// use crate::pipeline::Flow;\nconst _S: &str = "crate::pipeline::Flow";\n',
    }.items():
        injected = dict(files)
        injected[rel] = files[rel] + "\n" + line
        new = [p for p in check(injected, ALLOWED)[0] if p not in baseline]
        if new:
            failures.append(f"wrongly flagged `{line.strip()}` in src/{rel}: {new}")
    # Without its allowlist, today's tree must fail (the allowlist hides real imports).
    if ALLOWED and not check(files, set())[0]:
        failures.append("the allowlist is not needed: empty it")
    for failure in failures:
        print(f"layers self-test: FAIL: {failure}", file=sys.stderr)
    if not failures:
        print("layers self-test: ok (injected upward imports are caught; test code, downward imports, comments pass)")
    return 1 if failures else 0


def main(argv: list[str]) -> int:
    if "--self-test" in argv:
        return self_test()
    if "--graph" in argv:
        return graph()
    problems, upward = check(read_src(), ALLOWED)
    for problem in problems:
        print(f"layers: upward import: {problem}", file=sys.stderr)
    stale = sorted(ALLOWED - upward)
    for mod, target in stale:
        print(f"layers: note: allowlisted {mod} -> {target} no longer imports upward: delete the entry")
    if problems:
        print(
            f"layers: {len(problems)} upward import(s); the order, leaf first, is "
            + " < ".join(name for name, _ in LAYERS)
            + " (tools/layers.py, ARCHITECTURE.md)",
            file=sys.stderr,
        )
        return 1
    print(f"layers: ok ({len(ALLOWED) - len(stale)} allowlisted upward imports left)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
