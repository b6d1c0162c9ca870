"""The import graph: arrows point one way, and there are no cycles.

Read with `ast` (nothing is imported), counting imports inside functions
too: a lazy import is still an arrow. `shrewd_tf` is the library;
`pipeline` (Beam jobs, the runner) and `serving` sit on top of it, and only
the command line (`shrewd_tf.cli`) reaches up to them.
"""

import ast
import os

from tests.paths import REPO_ROOT

PACKAGES = ("shrewd_tf", "pipeline", "serving")
ENTRY_POINT = "shrewd_tf.cli"


def _modules():
    """{dotted name: path} of every module of `PACKAGES`."""
    modules = {}
    for package in PACKAGES:
        for directory, _, files in os.walk(os.path.join(REPO_ROOT, package)):
            for file in files:
                if not file.endswith(".py"):
                    continue
                path = os.path.join(directory, file)
                name = os.path.relpath(path, REPO_ROOT)[:-3]
                name = name.replace(os.sep, ".").removesuffix(".__init__")
                modules[name] = path
    return modules


def _import_graph():
    """{module: set of first-party modules it imports}."""
    modules = _modules()

    def resolve(name):
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for module, path in modules.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), filename=path)
        targets = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets.update(resolve(a.name) for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                # `from package import module` imports the module.
                targets.update(
                    resolve(f"{node.module}.{a.name}") for a in node.names
                )
        graph[module] = {t for t in targets if t and t != module}
    return graph


def _cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def _arrows(graph, source, targets, exempt=()):
    return sorted(
        f"{module} -> {target}"
        for module, imported in graph.items()
        if module.split(".")[0] == source and module not in exempt
        for target in imported
        if target.split(".")[0] in targets
    )


def test_the_library_imports_neither_pipeline_nor_serving():
    graph = _import_graph()
    assert _arrows(graph, "shrewd_tf", ("pipeline", "serving"),
                   exempt=(ENTRY_POINT,)) == []


def test_pipeline_and_serving_do_not_import_each_other():
    graph = _import_graph()
    assert _arrows(graph, "pipeline", ("serving",)) == []
    assert _arrows(graph, "serving", ("pipeline",)) == []


def test_there_are_no_import_cycles():
    assert _cycles(_import_graph()) == []


def test_the_checks_see_an_arrow_and_a_cycle():
    graph = {"shrewd_tf.a": {"pipeline.b"}, "pipeline.b": {"shrewd_tf.a"}}
    assert _arrows(graph, "shrewd_tf", ("pipeline",)) == [
        "shrewd_tf.a -> pipeline.b"]
    assert _cycles(graph) == [["pipeline.b", "shrewd_tf.a"]]
    assert "shrewd_tf.cli" in _import_graph()
