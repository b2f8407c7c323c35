"""README.md and README.ko.md describe the same project: the same files in their "what is here" tables,
the same command lines in their code blocks, and every file or link they point to exists."""

import re

import pytest
from conftest import ROOT

READMES = ["README.md", "README.ko.md"]


def files_table(text: str) -> list[str]:
    """The first column of the first table: the files the README presents."""
    table = text.split("\n|---|---|\n", 1)[1].split("\n\n", 1)[0]
    return [re.match(r"\| `([^`]+)` \|", row)[1] for row in table.splitlines()]


def code_lines(text: str) -> set[str]:
    blocks = re.findall(r"```bash\n(.*?)```", text, re.DOTALL)
    return {line.strip() for block in blocks for line in block.splitlines()}


def test_both_readmes_list_the_same_files_and_commands():
    english, korean = ((ROOT / name).read_text() for name in READMES)
    assert files_table(english) == files_table(korean)
    assert {"ppo_continuous.py", "bayrn_hopper.py", "tests/"} <= set(files_table(english))
    assert code_lines(english) == code_lines(korean) and code_lines(english)


@pytest.mark.parametrize("name", READMES)
def test_every_presented_file_and_relative_link_exists(name):
    text = (ROOT / name).read_text()
    for path in files_table(text):
        assert (ROOT / path).exists(), path
    for target in re.findall(r"\]\(([^)#]+)\)", text):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), target
    assert "{" + "S2R}" not in text  # no placeholder left
