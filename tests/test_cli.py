"""Tests for core.cli: the one UserError-to-exit-2 handler of every command line."""

import doctest

import pytest

import core.cli
from core.cli import report_user_errors
from core.errors import UserError


def test_a_user_error_is_one_line_and_exit_2(capsys):
    @report_user_errors
    def main(argv=None):
        raise UserError("list.txt:3: Expected rows `path label`.\n  Received:   `a b c`")

    assert main() == 2
    out, err = capsys.readouterr()
    assert out == "" and err == "error: list.txt:3: Expected rows `path label`. Received: `a b c`\n"


def test_the_exit_code_and_arguments_pass_through():
    @report_user_errors
    def main(argv=None, *, extra=0):
        return len(argv) + extra

    assert main(["a", "b"], extra=1) == 3 and main.__name__ == "main"


@pytest.mark.parametrize("exception", [KeyboardInterrupt, RuntimeError, SystemExit])
def test_other_exceptions_are_not_taken_for_user_errors(exception):
    @report_user_errors
    def main():
        raise exception()

    with pytest.raises(exception):
        main()


def test_the_docstring_example_runs():
    assert doctest.testmod(core.cli).failed == 0
