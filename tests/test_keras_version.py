import os

import keras
import pytest

from core.errors import UserError
from training.keras_version import SUPPORTED_KERAS_VERSION, require_supported_keras


def test_installed_keras_is_the_supported_version():
    assert keras.__version__ == SUPPORTED_KERAS_VERSION
    require_supported_keras("multi-worker training")


def test_requirements_pin_the_supported_version():
    with open(os.path.join(os.path.dirname(__file__), "..", "requirements.txt")) as file:
        assert f"keras=={SUPPORTED_KERAS_VERSION}\n" in file.read()


@pytest.mark.parametrize("installed", ["3.15.0", "3.16.0", "4.0.0"])
def test_other_versions_fail_with_one_line_naming_the_supported_one(installed):
    with pytest.raises(UserError, match=r"Expected keras==3\.15\.1 for multi-worker training") \
            as raised:
        require_supported_keras("multi-worker training", installed=installed)
    assert "\n" not in str(raised.value)
    assert f"Received: keras.__version__={installed!r}" in str(raised.value)
