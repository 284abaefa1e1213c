"""The commands of the README's sections after "Using it" (sweeps, clusters, searches,
loggers, comparisons, reproducing the papers), each as documented (how:
tests/cli/test_readme_commands.py); the first two sections' are tests/cli/test_readme_usage.py's."""

from __future__ import annotations

import pytest

from tests.helpers.readme_commands import (
    Command,
    Workspace,
    command_ids,
    run_documented,
    sweep_commands,
)

COMMANDS = sweep_commands()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("readme"), COMMANDS)


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS, ids=command_ids(COMMANDS))
def test_readme_command(command: Command, workspace: Workspace, tmp_path):
    run_documented(command, workspace, tmp_path)
