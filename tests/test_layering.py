"""The import graph is the architecture: every import of the project's own modules (at the top
of a file or inside a function) goes one way, and none closes a cycle.

Layers, lowest first (an arrow means "is imported by"):
`core` <- `data_prep` <- `models` <- `training` <- the CLIs (train.py, evaluate.py, predict.py, bench/)
<- tests. Inside `training/` the modules are ordered too (TRAINING_ORDER): a module imports
only modules before it, so only the CLIs import the trainer.
"""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Lowest first. A training module may import only the ones before it.
TRAINING_ORDER = (
    "training", "training.keras_version", "training.cli", "training.config_files",
    "training.config", "training.precision", "training.prepared_data", "training.config_docs",
    "training.schedules", "training.optimizers", "training.run_dir", "training.metrics",
    "training.visuals", "training.summaries", "training.input_pipeline", "training.views",
    "training.timeline",
    "training.distribution", "training.callbacks", "training.tensorboard_views",
    "training.scoring", "training.class_map", "training.stream", "training.export_runtime",
    "training.export_check",
    "training.export",
    "training.evaluation", "training.trainer",
)
LAYERS = {"core": 0, "data_prep": 1, "models": 2, "training": 3, "cli": 4, "tests": 5}
CLI_MODULES = ("train", "evaluate", "predict", "export")


def module_files(root=ROOT):
    """{module name: path} of every project .py file (package modules, CLIs, bench, tests)."""
    found = {}
    for package in ("core", "data_prep", "models", "training", "bench", "tests"):
        directory = os.path.join(root, package)
        for dirpath, _, names in os.walk(directory):
            for name in sorted(names):
                if not name.endswith(".py"):
                    continue
                relative = os.path.relpath(os.path.join(dirpath, name), root)
                parts = relative[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                found[".".join(parts)] = os.path.join(root, relative)
    for name in CLI_MODULES:
        path = os.path.join(root, f"{name}.py")
        if os.path.exists(path):
            found[name] = path
    return found


def layer_of(module):
    top = module.split(".")[0]
    if top in ("core", "data_prep", "models", "training", "tests"):
        return top
    return "cli"  # train, evaluate, predict, bench.*


def imports_of(path, module, known):
    """[(imported project module, line)] of every import statement in the file, at any depth.

    `from package import name` counts as importing `package.name` when that is a module.
    Modules of tests/ import each other by their bare file name (pytest puts tests/ on the
    path), so a bare name of a tests/ module resolves to it.
    """
    with open(path, encoding="utf-8") as file:
        tree = ast.parse(file.read(), filename=path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    found = []

    def resolve(name):
        if name in known:
            return name
        if layer_of(module) == "tests" and f"tests.{name}" in known:
            return f"tests.{name}"
        return None

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = resolve(alias.name)
                if target:
                    found.append((target, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module
            for alias in node.names:
                target = resolve(f"{source}.{alias.name}") or resolve(source)
                if target:
                    found.append((target, node.lineno))
    return found


def import_graph(root=ROOT):
    """{module: [(imported module, line)]} over the project's own modules."""
    files = module_files(root)
    return {module: [(target, line) for target, line in imports_of(path, module, files)
                     if target != module]
            for module, path in files.items()}


def upward_imports(graph):
    """Messages for every import against the layering (empty when it holds)."""
    problems = []
    for module, targets in sorted(graph.items()):
        for target, line in targets:
            mine, theirs = layer_of(module), layer_of(target)
            if LAYERS[theirs] > LAYERS[mine]:
                problems.append(f"{module}:{line} imports {target} ({theirs} is above {mine})")
            elif theirs == "tests" and target.split(".")[-1].startswith("test_"):
                problems.append(f"{module}:{line} imports the test module {target}")
            elif mine == theirs == "training" and target != "training":
                if module not in TRAINING_ORDER or target not in TRAINING_ORDER:
                    unknown = module if module not in TRAINING_ORDER else target
                    problems.append(f"{unknown} is not in TRAINING_ORDER: place it there")
                elif TRAINING_ORDER.index(target) > TRAINING_ORDER.index(module):
                    problems.append(f"{module}:{line} imports {target}, which comes after it "
                                    "in TRAINING_ORDER")
    return list(dict.fromkeys(problems))  # one line per import statement


def find_cycle(graph):
    """One import cycle as a list of modules (first == last), or None."""
    state = {}  # module -> "open" while on the DFS stack, "done" after
    stack = []

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for target, _ in graph.get(module, ()):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module)
            if cycle:
                return cycle
    return None


def test_every_project_module_is_found():
    graph = import_graph()
    for module in ("core.errors", "data_prep.shards", "models", "training.trainer", "train",
                   "tests.conftest"):
        assert module in graph
    assert set(TRAINING_ORDER) >= {m for m in graph if layer_of(m) == "training"}


def test_no_import_goes_up_a_layer_or_against_the_training_order():
    assert upward_imports(import_graph()) == []


def test_no_import_cycle():
    assert find_cycle(import_graph()) is None


def test_only_the_clis_and_tests_import_the_trainer():
    importers = {module for module, targets in import_graph().items()
                 if any(target == "training.trainer" for target, _ in targets)}
    assert {layer_of(module) for module in importers} <= {"cli", "tests"}


def write_tree(root, files):
    for relative, text in files.items():
        path = os.path.join(root, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as file:
            file.write(text)


@pytest.mark.parametrize("files, expected", [
    # The cycle of d6d0fe6: evaluation -> trainer -> export -> evaluation, all in functions.
    ({"training/evaluation.py": "def f():\n    from training.trainer import g\n",
      "training/trainer.py": "def g():\n    from training.export import h\n",
      "training/export.py": "def h():\n    from training.evaluation import f\n"},
     ["training.evaluation", "training.trainer", "training.export", "training.evaluation"]),
    ({"data_prep/a.py": "from . import b\n", "data_prep/b.py": "import data_prep.a\n"},
     ["data_prep.a", "data_prep.b", "data_prep.a"]),
    ({"data_prep/a.py": "import os\n", "models/m.py": "from data_prep import a\n"}, None),
])
def test_find_cycle_sees_function_level_and_relative_imports(tmp_path, files, expected):
    write_tree(tmp_path, files)
    assert find_cycle(import_graph(str(tmp_path))) == expected


@pytest.mark.parametrize("files, expected", [
    ({"data_prep/a.py": "def f():\n    import models.m\n", "models/m.py": ""},
     "data_prep.a:2 imports models.m (models is above data_prep)"),
    ({"models/m.py": "from training import config\n", "training/config.py": ""},
     "models.m:1 imports training.config (training is above models)"),
    ({"training/config.py": "def f():\n    from training.trainer import run\n",
      "training/trainer.py": ""},
     "training.config:2 imports training.trainer, which comes after it in TRAINING_ORDER"),
    ({"training/export.py": "import train\n", "train.py": ""},
     "training.export:1 imports train (cli is above training)"),
    ({"tests/conftest.py": "from test_x import fixture\n", "tests/test_x.py": ""},
     "tests.conftest:1 imports the test module tests.test_x"),
])
def test_upward_imports_are_reported_with_their_line(tmp_path, files, expected):
    write_tree(tmp_path, files)
    assert upward_imports(import_graph(str(tmp_path))) == [expected]
