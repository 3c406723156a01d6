from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from pipeline.augment import OPS
from pipeline.config import (
    CHILD,
    FAA_OPS,
    RECIPE_OF,
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
from pipeline.params_file import REGENERATE, main, rendered_files, stale_files

REPO = Path(__file__).resolve().parents[1]
# load_params("params.yaml").model_dump(mode="json") before the lr rule was explicit (lr_batch_size)
# and params.yaml was rendered from config.py: the same file must still mean the same settings.
BEFORE = json.loads((Path(__file__).parent / "params_before_lr_rule.json").read_text())


@pytest.fixture
def no_tracking_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in TRACKING_ENV.values():
        monkeypatch.delenv(var, raising=False)


def test_repository_params_file_is_valid() -> None:
    params = load_params(REPO / "params.yaml")
    assert params.sample.size == 10_000


def test_missing_file_means_defaults(tmp_path: Path) -> None:
    assert load_params(tmp_path / "none.yaml") == Params()


def test_params_yaml_and_its_reference_page_are_rendered_from_config() -> None:
    """config.py holds the defaults and their descriptions once; params.yaml and docs/params.md are
    their rendering, so a default or description changed in one place shows in both."""
    stale = stale_files(REPO)
    assert not stale, f"{', '.join(map(str, stale))} differ from pipeline/config.py's rendering: run `{REGENERATE}`"


def test_the_shipped_params_yaml_loads_as_the_code_defaults(no_tracking_env: None) -> None:
    """A key left out of a user's params file means what params.yaml says, not another value."""
    assert load_params(REPO / "params.yaml") == Params()


def _leaves(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_leaves(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


AIRBENCH_RECIPE = {"momentum": 0.85, "weight_decay": 0.00133, "bias_lr_scale": 64.0, "label_smoothing": 0.2,
                   "warmup": 0.23, "final_lr_fraction": 0.07, "flip": "alternating", "crop_padding": 2,
                   "crop_mode": "reflect", "lookahead": True}
# What changed on purpose since the file was rendered (issue 32): the candidates and the retrain
# train with airbench's recipe (the one recipe), the retrain at batch 512 with flip + translate
# TTA; the retrain's time is the model search's budget (max_retrain_minutes) instead of the
# relative training cost, 40 epochs; airbench_small joins the seed points; the default rule is most_accurate.
# Issue 34: a warm-started model search runs a quarter of its trials (the prior front, then new draws).
CHANGED_ON_PURPOSE = {
    "model_search.warm_budget": 0.25,
    "model_search.max_train_cost": None,
    "model_search.seed_points": ["airbench_small", "airbench_like", "resnet20"],
    "model_search.choose.rule": "most_accurate",
    "model_search.recipe.lr": 0.375,
    **{f"model_search.recipe.{k}": v for k, v in AIRBENCH_RECIPE.items()},
    "retrain.recipe.epochs": 40,
    "retrain.recipe.batch_size": 512,
    "retrain.recipe.lr": 0.375,
    "retrain.recipe.tta_translate": True,
    **{f"retrain.recipe.{k}": v for k, v in AIRBENCH_RECIPE.items()},
}


def test_the_shipped_params_mean_what_they_meant_before_the_file_was_rendered(no_tracking_env: None) -> None:
    # Every setting of the earlier params.yaml is unchanged but those changed on purpose, and so
    # is every dump (MLflow params, study identities and resume keys hash them): keys added since
    # are the only other difference.
    now = _leaves(load_params(REPO / "params.yaml").model_dump(mode="json"))
    differ = {key: now.get(key, "missing") for key, value in _leaves(BEFORE).items() if now.get(key) != value}
    assert differ == CHANGED_ON_PURPOSE


def test_every_recipe_trains_at_airbench_lr_per_image() -> None:
    params = load_params(REPO / "params.yaml")
    assert params.policy_search.child.peak_lr == 0.375  # airbench94's 1.5 per 1024 images, at 256
    assert params.model_search.recipe.peak_lr == pytest.approx(0.375 * 64 / 256)
    assert params.retrain.recipe.peak_lr == pytest.approx(0.375 * 512 / 256)
    for path in RECIPE_OF:
        section, key = path.split(".")
        recipe = getattr(getattr(params, section), key)
        assert recipe.peak_lr / recipe.batch_size == pytest.approx(BEFORE["policy_search"]["child"]["lr"] / 256)


def test_the_render_command_writes_what_the_check_accepts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--check", "--root", str(tmp_path)]) == 1
    assert REGENERATE in capsys.readouterr().err
    assert main(["--write", "--root", str(tmp_path)]) == 0
    assert main(["--check", "--root", str(tmp_path)]) == 0
    assert load_params(tmp_path / "params.yaml") == load_params(REPO / "params.yaml")


def _undescribed(model: type[BaseModel], path: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        out += [] if field.description else [f"{path}{name}"]
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            out += _undescribed(field.annotation, f"{path}{name}.")
    return out


def test_every_key_says_what_it_means() -> None:
    # the description is params.yaml's comment and the reference page's meaning: no key without one
    assert not _undescribed(Params), "give these Field(description=...) in pipeline/config.py"


def test_every_key_is_described_in_the_reference_page() -> None:
    reference = rendered_files()[Path("docs/params.md")]
    keys = [key for key in _leaves(Params().model_dump()) if not any(key.startswith(p + ".") for p in RECIPE_OF)]
    assert all(f"`{key}`" in reference for key in keys)
    assert all(f"| `{key}` |" in reference for key in TrainConfig.model_fields)


def test_a_partial_recipe_changes_only_its_keys_of_the_space_recipe() -> None:
    search = parse_params({"model_search": {"recipe": {"epochs": 2}}}).model_search.recipe
    assert search == ModelSearchConfig().recipe.model_copy(update={"epochs": 2})
    retrain = parse_params({"retrain": {"recipe": {"tta": False}}}).retrain.recipe
    assert retrain == RetrainConfig().recipe.model_copy(update={"tta": False})
    assert (retrain.epochs, retrain.batch_size, retrain.peak_lr) == (40, 512, 0.75)
    # the peak lr follows batch_size (0.375 per 256 images), as in the child recipe: lr is stated at lr_batch_size
    assert parse_params({"retrain": {"recipe": {"batch_size": 128}}}).retrain.recipe.peak_lr == pytest.approx(0.1875)
    search = parse_params({"model_search": {"recipe": {"batch_size": 8, "lr": 0.3}}}).model_search.recipe
    assert search.peak_lr == 0.3  # an lr given without lr_batch_size is the lr at the batch size used
    # ... so a dump (lr_batch_size left out where it equals batch_size) reads back as the same training
    own = {"batch_size": 512, "lr": 0.75, "lr_batch_size": 512}
    dumped = parse_params({"policy_search": {"child": own}}).policy_search.child.model_dump()
    assert "lr_batch_size" not in dumped
    assert parse_params({"policy_search": {"child": dumped}}).policy_search.child.peak_lr == 0.75
    stated_at_8 = {"batch_size": 8, "lr": 0.3, "lr_batch_size": 8}
    assert parse_params({"model_search": {"recipe": stated_at_8}}).model_search.recipe.peak_lr == 0.3
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
    recipe = airbench_recipe(256, epochs=10, crop_padding=4, tta=False, tta_translate=False, eval_every=1)
    assert recipe == CHILD.build()
    # the same training (a dump is what trains): the unlisted keys were TrainConfig defaults, but for
    # airbench's 3 epochs of whitening bias, which the recipe has and TrainConfig does not
    assert TrainConfig(**EXPLICIT_CHILD, whiten_bias_epochs=3).model_dump() == recipe.model_dump()
    assert load_params(REPO / "params.yaml").policy_search.child == recipe
    assert PolicySearchConfig().child == recipe
    assert parse_params({"policy_search": {"child": EXPLICIT_CHILD}}).policy_search.child.model_dump() == \
        recipe.model_dump()


@pytest.mark.parametrize("batch_size", [64, 100, 256, 512, 768, 1024])
def test_airbench_recipe_keeps_airbench94s_lr_per_1024_images(batch_size: int) -> None:
    assert airbench_recipe(batch_size).peak_lr == 1.5 * batch_size / 1024


def test_a_dump_names_lr_batch_size_only_where_it_scales_the_lr() -> None:
    at_reference = TrainConfig(batch_size=256, lr=0.2, lr_batch_size=256)
    assert "lr_batch_size" not in at_reference.model_dump()
    assert at_reference.model_dump() == TrainConfig(batch_size=256, lr=0.2).model_dump()
    scaled = TrainConfig(batch_size=512, lr=0.2, lr_batch_size=256)
    assert scaled.model_dump()["lr_batch_size"] == 256
    assert TrainConfig(**scaled.model_dump()).peak_lr == scaled.peak_lr == pytest.approx(0.4)


def test_a_partial_child_section_changes_only_its_keys_of_the_recipe() -> None:
    child = parse_params({"policy_search": {"child": {"epochs": 3}}}).policy_search.child
    assert child == CHILD.build(epochs=3)
    # The learning rate follows the batch size (airbench's rule): lr is stated at lr_batch_size (256).
    assert parse_params({"policy_search": {"child": {"batch_size": 512}}}).policy_search.child.peak_lr == 0.75
    given = parse_params({"policy_search": {"child": {"batch_size": 512, "lr": 0.1}}}).policy_search.child
    assert given.peak_lr == 0.1  # as before lr_batch_size existed: an lr given is the lr used
    stated = {"batch_size": 512, "lr": 0.1, "lr_batch_size": 512}
    assert parse_params({"policy_search": {"child": stated}}).policy_search.child.peak_lr == 0.1


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
