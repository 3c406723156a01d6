from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.augment import OPS
from pipeline.config import (
    CHILD_OVERRIDES,
    FAA_OPS,
    TRACKING_ENV,
    ModelSearchConfig,
    Params,
    PolicySearchConfig,
    RetrainConfig,
    TrainConfig,
    airbench_recipe,
    load_params,
    parse_params,
)
from pipeline.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_repository_params_file_is_valid() -> None:
    params = load_params(REPO / "params.yaml")
    assert params.sample.size == 10_000


def test_missing_file_means_defaults(tmp_path: Path) -> None:
    assert load_params(tmp_path / "none.yaml") == Params()


def test_the_code_defaults_are_the_shipped_params_yaml(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key left out of a user's params file means what params.yaml says, not another value."""
    for var in TRACKING_ENV.values():
        monkeypatch.delenv(var, raising=False)
    shipped = load_params(REPO / "params.yaml").model_dump()
    defaults = Params().model_dump()
    differ = {f"{section}.{key}": (defaults[section][key], value)
              for section, keys in shipped.items() for key, value in keys.items() if defaults[section][key] != value}
    assert not differ, f"code default vs params.yaml: {differ}"


def test_a_partial_recipe_changes_only_its_keys_of_the_space_recipe() -> None:
    search = parse_params({"model_search": {"recipe": {"epochs": 2}}}).model_search.recipe
    assert search == ModelSearchConfig().recipe.model_copy(update={"epochs": 2})
    retrain = parse_params({"retrain": {"recipe": {"tta": False}}}).retrain.recipe
    assert retrain == RetrainConfig().recipe.model_copy(update={"tta": False})
    assert (retrain.epochs, retrain.batch_size, retrain.lr) == (30, 256, 0.2)
    # the lr follows batch_size (0.05 at 64) unless given, as in the child recipe
    assert parse_params({"retrain": {"recipe": {"batch_size": 128}}}).retrain.recipe.lr == pytest.approx(0.1)
    assert parse_params({"model_search": {"recipe": {"batch_size": 8, "lr": 0.3}}}).model_search.recipe.lr == 0.3
    with pytest.raises(ConfigError, match=r"retrain\.recipe\.batch_size = 0"):
        parse_params({"retrain": {"recipe": {"batch_size": 0}}})


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


# The child recipe params.yaml spelled out before it named airbench_recipe instead.
EXPLICIT_CHILD = {
    "epochs": 10, "batch_size": 256, "lr": 0.375, "momentum": 0.85, "weight_decay": 0.00133,
    "bias_lr_scale": 64, "label_smoothing": 0.2, "warmup": 0.23, "final_lr_fraction": 0.07,
    "flip": "alternating", "crop_padding": 4, "crop_mode": "reflect", "lookahead": True,
}


def test_the_child_recipe_is_airbench_and_equals_what_params_yaml_spelled_out() -> None:
    recipe = airbench_recipe(256, **CHILD_OVERRIDES)
    assert TrainConfig(**EXPLICIT_CHILD) == recipe  # the unlisted keys were TrainConfig defaults
    assert load_params(REPO / "params.yaml").policy_search.child == recipe
    assert PolicySearchConfig().child == recipe
    assert parse_params({"policy_search": {"child": EXPLICIT_CHILD}}).policy_search.child == recipe


def test_a_partial_child_section_changes_only_its_keys_of_the_recipe() -> None:
    child = parse_params({"policy_search": {"child": {"epochs": 3}}}).policy_search.child
    assert child == airbench_recipe(256, **{**CHILD_OVERRIDES, "epochs": 3})
    # The learning rate follows the batch size (airbench's rule) unless it is given.
    assert parse_params({"policy_search": {"child": {"batch_size": 512}}}).policy_search.child.lr == 0.75
    assert parse_params({"policy_search": {"child": {"batch_size": 512, "lr": 0.1}}}).policy_search.child.lr == 0.1


def test_a_bad_child_key_is_reported_with_its_path() -> None:
    with pytest.raises(ConfigError, match=r"policy_search\.child\.batch_size = -3"):
        parse_params({"policy_search": {"child": {"batch_size": -3}}})
    with pytest.raises(ConfigError, match=r"policy_search\.child\.epoch: unknown key"):
        parse_params({"policy_search": {"child": {"epoch": 3}}})


def test_the_searchable_ops_are_the_op_table_without_identity_in_its_order() -> None:
    # config.py writes the list out (reading params must not import torch); this keeps it true.
    assert tuple(name for name in OPS if name != "Identity") == FAA_OPS
    assert "Identity" in OPS
    assert PolicySearchConfig().ops == list(FAA_OPS)
    assert PolicySearchConfig(ops=["Identity", "Invert", "Rotate"]).ops == ["Identity", "Invert", "Rotate"]
    with pytest.raises(ValueError, match="unknown op 'Blur'"):
        PolicySearchConfig(ops=["Blur"])
