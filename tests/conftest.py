"""Shared pytest setup: quiet TensorFlow's start-up logs and turn oneDNN on (as every entry
point does) before anything imports it, and
the tiny trained run that the evaluate, export and predict tests share."""

import os

import pytest

from core.tensorflow_env import configure_tensorflow

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
configure_tensorflow()


@pytest.fixture(scope="session")
def run_path(tmp_path_factory):
    """A finished tiny run (`run_fixtures.tiny_run`), trained once per session."""
    # Imported here, not at the top: conftest must set TF_CPP_MIN_LOG_LEVEL before
    # TensorFlow loads.
    from run_fixtures import tiny_run

    return tiny_run(tmp_path_factory)


@pytest.fixture(scope="session")
def multi_label_run_path(tmp_path_factory):
    """A finished tiny multi-label run (`run_fixtures.tiny_multi_label_run`)."""
    from run_fixtures import tiny_multi_label_run

    return tiny_multi_label_run(tmp_path_factory)
