"""Declared models: a spec file per model, found by name by training, the serving app and monitoring."""

from __future__ import annotations

import pytest
import yaml

from flows.monitor import retrain_params
from flows.train import TrainParams, plan_for
from serving.app import default_models
from tasks.ops import cli, specs
from tasks.settings import get_settings
from tasks.steps.monitor import Champion
from tests.unit.test_contract import demo_contract


def declare(folder, name: str, **fields) -> None:
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(fields))


@pytest.fixture
def models(tmp_path, monkeypatch):
    folder = tmp_path / "models"
    declare(folder, "customers", data_uri="c.csv", target="churned", families=["xgboost"], n_trials=7)
    declare(folder, "renamed", data_uri="p.csv", target="price", task_type="regression", model_name="prices")
    monkeypatch.setenv("TABLOOP_MODELS_DIR", str(folder))
    return folder


def test_a_declared_model_is_named_by_its_spec_else_by_its_file(models):
    settings = get_settings()
    assert specs.declared(settings) == {"customers": models / "customers.yaml", "prices": models / "renamed.yaml"}
    by_name = specs.load("customers", settings, {"n_trials": 3})
    assert (by_name.model_name, by_name.families, by_name.n_trials) == ("customers", ["xgboost"], 3)
    by_file = specs.load(str(models / "customers.yaml"), settings)
    assert by_file == by_name.model_copy(update={"n_trials": 7})
    # the file's name beats TABLOOP_MODEL_NAME and the dataset's name: the spec declares the model
    assert plan_for(by_file, get_settings(model_name="elsewhere")).model_name == "customers"
    assert plan_for(TrainParams(data_uri="data/c_2024.csv", target="y"), settings).model_name == "c_2024"


def test_an_unknown_name_a_bad_spec_and_two_specs_of_one_model_are_refused_by_file(models):
    settings = get_settings()
    with pytest.raises(ValueError, match=r"no model named 'nope' is declared in .*declared: \['customers', 'prices'\]"):
        specs.load("nope", settings)
    declare(models, "twin", data_uri="d.csv", target="y", model_name="customers")
    with pytest.raises(ValueError, match=r"customers.yaml and .*twin.yaml both declare the model 'customers'"):
        specs.declared(settings)
    (models / "twin.yaml").write_text("data_uri: d.csv\n")  # no target
    with pytest.raises(ValueError, match=r"twin.yaml: .*target is required with data_uri"):
        specs.declared(settings)


def test_the_shell_takes_a_declared_name_or_a_file_and_flags_win(models, capsys):
    def load(ref, flags):
        return specs.load(ref, get_settings(), flags)

    params = cli.parse(TrainParams, ["--spec", "customers", "--n-trials", "2"], load_spec=load)
    assert (params.model_name, params.n_trials, params.target) == ("customers", 2, "churned")
    with pytest.raises(SystemExit) as exit_info:
        cli.parse(TrainParams, ["--spec", "nope"], load_spec=load)
    assert exit_info.value.code == 2 and "no model named 'nope'" in capsys.readouterr().err


def test_the_server_serves_every_declared_model_unless_one_is_named(models, tmp_path):
    assert default_models(get_settings(model_name=None)) == ["customers", "prices"]
    declare(models, "customers-eu", data_uri="e.csv", target="churned")  # its file sorts before customers.yaml
    assert default_models(get_settings(model_name=None)) == ["customers", "customers-eu", "prices"]
    assert default_models(get_settings(model_name="solo")) == ["solo"]
    assert default_models(get_settings(model_name=None, models_dir=tmp_path / "none")) == ["churn"]  # the demo


def test_monitoring_retrains_with_the_declared_spec_and_the_champion_s_data_facts(models):
    champion = Champion("customers", "3", "run", demo_contract(positive_class=1), 0.8)
    declared = specs.find("customers", get_settings())
    retrain = retrain_params(champion, "s3://b/fresh.parquet", 4, declared)
    assert (retrain.families, retrain.n_trials, retrain.data_uri) == (["xgboost"], 4, "s3://b/fresh.parquet")
    assert (retrain.target, retrain.model_name, retrain.positive_class) == ("churned", "customers", 1)
    undeclared = retrain_params(champion, "fresh.csv", 4, None)
    assert undeclared.families == TrainParams().families and undeclared.dataset_name == "churn-demo"


def test_a_flow_started_from_the_shell_ends_on_an_input_error_with_its_message(capsys):
    from tasks.ops.shell import shell_run
    from tasks.store.features import FeatureError

    with pytest.raises(SystemExit) as exited, shell_run():
        raise FeatureError("no feature view 'nope' in the feature store; known: ['customer_activity']")
    assert exited.value.code == 1
    assert (
        capsys.readouterr().err == "error: no feature view 'nope' in the feature store; known: ['customer_activity']\n"
    )
    with pytest.raises(KeyError), shell_run():  # a defect keeps its traceback
        raise KeyError("bug")
