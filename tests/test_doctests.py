"""The docstring examples run: every `>>>` line in the project's modules is a doctest."""

import doctest
import importlib
import os
import re

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("data_prep", "models", "training")


def modules_with_examples():
    found = []
    for package in PACKAGES:
        for dirpath, _, names in os.walk(os.path.join(REPO, package)):
            for name in sorted(names):
                path = os.path.join(dirpath, name)
                if name.endswith(".py") and ">>> " in open(path, encoding="utf-8").read():
                    relative = os.path.relpath(path, REPO)[:-3]
                    found.append(relative.replace(os.sep, ".").removesuffix(".__init__"))
    return sorted(found)


class ShapeAsTupleChecker(doctest.OutputChecker):
    """Reads `TensorShape([2, 8])` as `(2, 8)`: the examples print shapes the way Keras's own
    docstrings do, as tuples, which is what every backend but TensorFlow returns."""

    def check_output(self, want, got, optionflags):
        got = re.sub(r"TensorShape\(\[([^\]]*)\]\)",
                     lambda match: f"({match.group(1)}{',' if ',' not in match.group(1) else ''})",
                     got)
        return super().check_output(want, got, optionflags)


def test_the_modules_with_examples_are_found():
    assert {"training.metrics", "data_prep.sampling"} <= set(modules_with_examples())


@pytest.mark.parametrize("name", modules_with_examples())
def test_docstring_examples_run(name, monkeypatch):
    monkeypatch.chdir(REPO)  # examples name repository files such as configs/demo.yaml
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(checker=ShapeAsTupleChecker(),
                                   optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = finder.find(module, name, extraglobs={"np": np})
    for test in tests:
        runner.run(test)
    results = runner.summarize(verbose=False)
    assert results.attempted > 0
    assert results.failed == 0, f"{results.failed} of {results.attempted} examples failed"
