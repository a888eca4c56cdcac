"""params.yaml is read as DVC reads it, so a value DVC writes with `-S` means the same to the stages."""

from __future__ import annotations

import pytest
from dvc.utils.serialize import parse_yaml as dvc_parse_yaml

from imrestore.errors import ImrestoreError
from imrestore.params import load_params

# What `dvc exp run -S key=value` writes back for values users type, and YAML 1.1/1.2 differences.
AMBIGUOUS = """\
lr_dvc_writes: 1e-07
lr_plain: 0.0000001
lr_dotted: 1.0e-3
exponent_int: 1e3
boolean_1_1: yes
boolean: true
octal_1_1: 010
nothing: null
sexagesimal: 1:30
"""


def test_params_are_parsed_exactly_as_dvc_parses_them(tmp_path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(AMBIGUOUS)
    ours = load_params(path)
    assert ours == dvc_parse_yaml(AMBIGUOUS, str(path))
    assert ours["lr_dvc_writes"] == pytest.approx(1e-7)  # PyYAML (YAML 1.1) reads the string '1e-07'
    assert ours["boolean_1_1"] == "yes"


def test_bad_params_files_are_named(tmp_path) -> None:
    with pytest.raises(ImrestoreError, match="not found"):
        load_params(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("train: [unclosed\n")
    with pytest.raises(ImrestoreError, match="bad.yaml is not valid YAML"):
        load_params(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ImrestoreError, match="expected a mapping at the top level, found list"):
        load_params(tmp_path / "list.yaml")
