"""config_schema.py: defaults filled, one-line violations naming the key path and what is allowed, and a schema that
agrees with the code (training defaults, schedule names, budget modes) and with the shipped configs."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from fomoflux.config_schema import load_schema, typed_overrides, validate_config
from fomoflux.errors import ConfigError
from fomoflux.pipeline.plan import BUDGET_MODES, TRAINING_DEFAULTS, build_plan
from fomoflux.train.schedule import available_schedules

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = ROOT / "config" / "schema" / "config.schema.yaml"
CONFIGS = sorted((ROOT / "config").glob("*.yaml"))


@pytest.fixture(scope="module")
def schema() -> dict:
    return load_schema(SCHEMA_PATH)


def default_config() -> dict:
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def violation(schema, edit) -> str:
    config = default_config()
    edit(config)
    with pytest.raises(ConfigError) as caught:
        validate_config(config, schema)
    return str(caught.value)


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda c: c["training"].update(learning_rate=0.1),
         "config key 'training.learning_rate': unknown key (allowed: augmentation, batch_size, budget, buffer, "),
        (lambda c: c.update(resuts="out"), "config key 'resuts': unknown key (allowed: benchmark, budget, cluster, "
                                           "data_root, datasets, evaluation, "),
        (lambda c: c["runs"]["finetune"].update(methd="finetune"),
         "config key 'runs.finetune.methd': unknown key (allowed: method, method_options, seed, stream, training)"),
        (lambda c: c["training"].update(budget="cheap"),
         "config key 'training.budget': 'cheap' is not allowed (allowed: maf, flops, fixed, table)"),
        (lambda c: c["runs"]["lora"].update(training={"schedule": "cosin"}),
         "config key 'runs.lora.training.schedule': 'cosin' is not allowed (allowed: constant, cosine, "),
        (lambda c: c["training"].update(lr="fast"),
         "config key 'training.lr': 'fast' has the wrong type (allowed: number)"),
        (lambda c: c["benchmark"].update(seed=0.5),
         "config key 'benchmark.seed': 0.5 has the wrong type (allowed: integer)"),
        (lambda c: c["training"].update(warmup_fraction=1.5),
         "config key 'training.warmup_fraction': 1.5 is out of range (allowed: number >= 0 and <= 1)"),
        (lambda c: c["model"].pop("arch"), "config key 'model.arch': missing (required: name, arch, pretrained)"),
        # A value that fits none of a oneOf's alternatives: every alternative is named, not the one best_match picked.
        (lambda c: c["training"].update(data_workers="many"),
         "config key 'training.data_workers': 'many' is not allowed (allowed: integer >= 0; auto)"),
        (lambda c: c["benchmark"].update(datasets=["pool", 3]),
         "config key 'benchmark.datasets[1]': 3 has the wrong type (allowed: string)"),
        (lambda c: c["runs"].update({"a/b": {"method": "finetune"}}),
         "config key 'runs': name 'a/b' is not allowed (allowed: names matching ^[A-Za-z0-9_.-]+$)"),
        (lambda c: c.update(datasets={"toy": {"kind": "classification", "role": "evaluation", "source": {}}}),
         "config key 'datasets.toy.source': give exactly one of generate, local, webdataset, download"),
    ],
    ids=["unknown-training-key", "unknown-top-key", "unknown-run-key", "enum", "schedule-enum", "type-number",
         "type-integer", "range", "required", "one-of", "list-item", "run-name", "one-source"],
)
def test_a_violation_is_one_line_naming_the_key_and_what_is_allowed(schema, edit, expected):
    message = violation(schema, edit)
    assert message.startswith(expected), message
    assert "\n" not in message and len(message) < 400


def test_defaults_are_filled_in_place(schema):
    config = default_config()
    validate_config(config, schema)
    assert config["benchmark"]["shard_size"] == 2000 and config["evaluation"]["subset"]["min_size"] == 300
    # The config's own values stay; the training defaults fill what it leaves out.
    assert config["training"]["lr"] == 0.001 and config["training"]["schedule"] == "cosine"
    assert config["training"]["resume"] == TRAINING_DEFAULTS["resume"]
    # A run's training holds only what the run overrides (the defaults are the config-level training's).
    assert "training" not in config["runs"]["finetune"]
    config["runs"]["lora"]["training"] = {"lr": 0.01}
    validate_config(config, schema)
    assert config["runs"]["lora"]["training"] == {"lr": 0.01}
    # Filled defaults are copies: editing one config never edits the schema or another config.
    config["training"]["resume"]["every_steps"] = 7
    other = default_config()
    validate_config(other, schema)
    assert other["training"]["resume"]["every_steps"] == 0


def test_schema_training_defaults_are_the_code_defaults(schema):
    documented = {key: prop["default"] for key, prop in schema["properties"]["training"]["properties"].items()}
    assert documented == TRAINING_DEFAULTS
    # Every training key is documented (a description) and has a default.
    keys = schema["$defs"]["training"]["properties"]
    assert set(keys) == set(TRAINING_DEFAULTS)
    assert [k for k, prop in keys.items() if not prop.get("description")] == []


def test_schema_enums_are_the_code_names(schema):
    training = schema["$defs"]["training"]["properties"]
    assert sorted(training["schedule"]["enum"]) == available_schedules()
    for name in available_schedules():
        assert name in training["schedule"]["description"]
    assert tuple(training["budget"]["enum"]) == BUDGET_MODES


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_validates(schema, path):
    validate_config(yaml.safe_load(path.read_text()), schema)


def test_the_filled_default_config_plans_as_before(schema, monkeypatch):
    """Filling the schema's training defaults at config level gives the same runs as the code's defaults alone."""
    monkeypatch.chdir(ROOT)
    config = default_config()
    validate_config(config, schema)
    filled = build_plan(config, check_against_model=False)
    bare = default_config()
    bare["benchmark"].setdefault("datasets", "all")
    bare.setdefault("evaluation", {}).setdefault("subset", {})
    plain = build_plan(bare, check_against_model=False)
    assert {n: r.training for n, r in filled.runs.items()} == {n: r.training for n, r in plain.runs.items()}


# ---- the mini presets share the default experiment's shards and base model -------------------------------------

SHARED_BLOCKS = ("benchmark", "datasets", "model", "evaluation", "validation", "pool")


def filled(path: Path, schema) -> dict:
    config = yaml.safe_load(path.read_text())
    validate_config(config, schema)
    return config


@pytest.mark.parametrize("preset", ["orderings", "mixtures", "schedules", "seeds", "merges"])
def test_presets_share_the_default_data_root_and_agree_on_what_it_holds(schema, preset):
    default = filled(ROOT / "config" / "config.yaml", schema)
    config = filled(ROOT / "config" / f"{preset}.yaml", schema)
    assert config["results"] != default["results"], "a preset keeps its own runs and figures"
    assert config["data_root"] == default.get("data_root", default["results"])
    for block in SHARED_BLOCKS:
        assert config.get(block) == default.get(block), f"{preset}.yaml: {block} differs from config.yaml's"


def test_the_seed_findings_preset_repeats_the_default_runs_on_seed_zero(schema):
    """config/seeds.yaml's seed-0 runs are the default experiment's (same stream, options and training), so its
    seed 0 is the default run's result; seeds 1 and 2 change only the stream's and the training draws' seed."""
    default = filled(ROOT / "config" / "config.yaml", schema)
    seeds = filled(ROOT / "config" / "seeds.yaml", schema)
    assert seeds["streams"]["random"] == default["streams"]["random"]
    assert seeds["training"] == default["training"] and seeds["mixtures"]["paper"] == default["mixtures"]["paper"]
    drawn = ("seed", "stream")
    for seed in (0, 1, 2):
        stream = "random" if seed == 0 else f"random_s{seed}"
        assert {**seeds["streams"][stream], "seed": 0} == default["streams"]["random"], stream
        for name in ("finetune", "lora", "bitfit", "ema_merge"):
            run = seeds["runs"][f"{name}_s{seed}"]
            assert (run["seed"], run["stream"]) == (seed, stream), name
            reference = {k: v for k, v in default["runs"][name].items() if k not in drawn}
            assert {k: v for k, v in run.items() if k not in drawn} == reference, name


# ---- --config values --------------------------------------------------------------------------------------------


def test_typed_overrides_types_nested_strings_like_a_config_file():
    # What Snakemake's --config parser gives for: results=out seed=3 'training={steps: 7, lr: 1e-3, compile: true,
    # mixture: paper}' 'benchmark={datasets: [pool, digits]}'
    given = {"results": "out", "seed": 3,
             "training": {"steps": "7", "lr": "1e-3", "compile": "true", "mixture": "paper",
                          "buffer": {"size": "null"}},
             "benchmark": {"datasets": ["pool", "digits"], "scale": "0.5"}}
    assert typed_overrides(given) == {
        "results": "out", "seed": 3,
        "training": {"steps": 7, "lr": 1e-3, "compile": True, "mixture": "paper", "buffer": {"size": None}},
        "benchmark": {"datasets": ["pool", "digits"], "scale": 0.5},
    }
    # A top-level string stays as Snakemake parsed it (a results folder named "1" is a folder).
    assert typed_overrides({"results": "1"}) == {"results": "1"}


def test_typed_overrides_pass_validation(schema):
    config = default_config()
    overrides = typed_overrides({"training": {"steps": "7", "lr": "1e-3"}})
    for key, value in overrides.items():
        config[key] = {**config.get(key, {}), **value}
    validate_config(config, schema)
    assert config["training"]["steps"] == 7
    untyped = copy.deepcopy(default_config())
    untyped["training"]["steps"] = "7"
    with pytest.raises(ConfigError, match="'training.steps': '7' has the wrong type"):
        validate_config(untyped, schema)
