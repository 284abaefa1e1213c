"""The commands of the README's "Set up" and "Using it" sections, each as documented (how:
tests/cli/test_readme_commands.py); the other sections' are tests/cli/test_readme_sweeps.py's."""

from __future__ import annotations

import pytest

from tests.helpers.readme_commands import (
    Command,
    Workspace,
    command_ids,
    run_documented,
    usage_commands,
)

COMMANDS = usage_commands()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("readme"), COMMANDS)


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS, ids=command_ids(COMMANDS))
def test_readme_command(command: Command, workspace: Workspace, tmp_path):
    run_documented(command, workspace, tmp_path)
