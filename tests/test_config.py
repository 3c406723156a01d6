from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.config import Params, load_params, parse_params
from pipeline.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_repository_params_file_is_valid() -> None:
    params = load_params(REPO / "params.yaml")
    assert params.sample.size == 10_000


def test_missing_file_means_defaults(tmp_path: Path) -> None:
    assert load_params(tmp_path / "none.yaml") == Params()


@pytest.mark.parametrize(
    "raw,fragment",
    [
        ({"sample": {"size": -5}}, "sample.size = -5: Input should be greater than 0"),
        ({"sample": {"size": "many"}}, "sample.size = 'many'"),
        ({"sample": {"sizee": 10}}, "sample.sizee: unknown key"),
        ({"nonsense": {}}, "nonsense: unknown key"),
    ],
)
def test_bad_values_name_the_key_the_value_and_the_rule(raw: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_params(raw, "params.yaml")
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_invalid_yaml_is_one_clear_line(tmp_path: Path) -> None:
    p = tmp_path / "params.yaml"
    p.write_text("sample: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(p)


def test_every_dvc_param_key_exists_in_the_schema() -> None:
    """dvc.yaml must name only keys the schema knows (else DVC silently tracks nothing)."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    params = load_params(REPO / "params.yaml").model_dump()
    for name, stage in stages.items():
        for key in stage.get("params", []):
            node = params
            for part in key.split("."):
                assert isinstance(node, dict) and part in node, f"stage {name}: unknown param {key}"
                node = node[part]
