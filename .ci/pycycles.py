# Vendored from the project's shared tools (tools/pycycles.py), so that CI outside this machine (GitHub
# Actions checks out the repository alone) runs the same import-cycle check.
"""pycycles: import cycles among the modules of a Python package directory (static: every import statement, also
those inside functions, since a lazy import still ties two modules). Usage: python pycycles.py PKG_DIR DOTTED_NAME
Prints each cycle (strongly connected component of 2+ modules); last line: the count."""
import ast
import os
import sys

root, pkg = sys.argv[1], sys.argv[2]
mods = {}
for dp, _, fs in os.walk(root):
    for f in fs:
        if f.endswith(".py"):
            rel = os.path.relpath(os.path.join(dp, f), root)[:-3].replace(os.sep, ".")
            name = pkg + ("" if rel == "__init__" else "." + rel.removesuffix(".__init__"))
            mods[name] = os.path.join(dp, f)
edges = {m: set() for m in mods}
for m, path in mods.items():
    is_pkg = path.endswith("__init__.py")
    base = m if is_pkg else m.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(open(path).read())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                b = base.split(".")
                b = b[: len(b) - (node.level - 1)]
                mod = ".".join(b + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        for t in targets:
            while t and t not in mods:
                t = t.rsplit(".", 1)[0] if "." in t else ""
            if t and t != m and not m.startswith(t + ".") and t != pkg:
                edges[m].add(t)
# Tarjan
index, low, stack, on, sccs, i = {}, {}, [], set(), [], [0]
sys.setrecursionlimit(10000)


def strong(v):
    index[v] = low[v] = i[0]; i[0] += 1; stack.append(v); on.add(v)
    for w in edges[v]:
        if w not in index:
            strong(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v:
                break
        if len(comp) > 1:
            sccs.append(sorted(comp))


for v in mods:
    if v not in index:
        strong(v)
for c in sccs:
    print("cycle:", " <-> ".join(x.removeprefix(pkg + ".") for x in c))
print(len(sccs))
