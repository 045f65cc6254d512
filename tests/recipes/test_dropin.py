"""add_fedbip_personalization on NVFlare jobs and recipes (construction and export; the runs are integration tests)."""

import json
import os

import pytest
from nvflare.app_common.aggregators.intime_accumulate_model_aggregator import InTimeAccumulateWeightedAggregator
from nvflare.app_common.aggregators.model_aggregator import ModelAggregator
from nvflare.app_common.workflows.fedavg import FedAvg
from nvflare.app_common.workflows.scatter_and_gather import ScatterAndGather
from nvflare.fuel.utils.constants import FrameworkType
from nvflare.job_config.api import FedJob
from nvflare.recipe.fedavg import FedAvgRecipe

from fedbip_nvflare import add_fedbip_personalization
from fedbip_nvflare.recipes.fedbip import CLIENT_SCRIPT, ShipsClientScript
from fedbip_nvflare.server.persistor import AdapterPersistor
from fedbip_nvflare.server.personalization import FedBipModelAggregator

FILTER = "fedbip_nvflare.server.personalization.FedBipPersonalizationFilter"
AGGREGATOR = "fedbip_nvflare.server.personalization.FedBipModelAggregator"


def _recipe(recipe_class=FedAvgRecipe, **kwargs) -> FedAvgRecipe:
    return recipe_class(
        name="dropin",
        min_clients=2,
        num_rounds=2,
        train_script=CLIENT_SCRIPT,
        framework=FrameworkType.RAW,
        model_persistor=AdapterPersistor(model="sentence-transformers/all-MiniLM-L6-v2"),
        **kwargs,
    )


def _server_config(job_dir: str, app: str = "app") -> dict:
    with open(os.path.join(job_dir, app, "config", "config_fed_server.json")) as f:
        return json.load(f)


def test_fedavg_recipe_gets_the_aggregator_and_the_filter(tmp_path):
    recipe = _recipe()
    aggregator = add_fedbip_personalization(recipe, final_validation=True, layerwise=True, negative="keep")
    rule = aggregator.rule
    assert isinstance(aggregator, FedBipModelAggregator) and rule.layerwise and rule.negative == "keep"
    recipe.export(str(tmp_path))
    config = _server_config(os.path.join(str(tmp_path), "dropin"))
    fedavg = next(w for w in config["workflows"] if w["path"].endswith("fedavg.FedAvg"))
    assert fedavg["args"]["aggregator"]["path"] == AGGREGATOR
    assert fedavg["args"]["aggregator"]["args"]["rule"]["args"] == {"layerwise": True, "negative": "keep"}
    assert [w["id"] for w in config["workflows"]][-1] == "fedbip_final_validation"
    filters = config["task_data_filters"]
    assert filters == [{"tasks": ["train"], "filters": [{"path": FILTER, "args": {"task_names": ["train"]}}]}]


@pytest.mark.parametrize("external", [False, True], ids=["in-process", "external-process"])
def test_a_fedavg_recipe_that_ships_its_script_names_it_relative_to_the_app(tmp_path, external):
    class Recipe(ShipsClientScript, FedAvgRecipe):
        pass

    recipe = _recipe(Recipe, train_args="--model m", launch_external_process=external)
    add_fedbip_personalization(recipe)  # the package is installed on the sites, not custom code
    recipe.export(str(tmp_path))
    app = os.path.join(str(tmp_path), "dropin", "app")
    assert os.listdir(os.path.join(app, "custom")) == ["fedbip_client.py"], "the script travels at the top"
    with open(os.path.join(app, "config", "config_fed_client.json")) as f:
        text = f.read()
    assert os.path.dirname(CLIENT_SCRIPT) not in text, "no path of this machine"
    executor = json.loads(text)["executors"][0]["executor"]["args"]
    if external:
        assert executor["command"][-3:] == ["custom/fedbip_client.py", "--model", "m"], executor["command"]
    else:
        assert executor["task_script_path"] == "fedbip_client.py" and executor["task_script_args"] == "--model m"


def test_scatter_and_gather_default_aggregator_is_replaced(tmp_path):
    job = FedJob(name="sag", min_clients=2)
    job.to_server(InTimeAccumulateWeightedAggregator(expected_data_kind="WEIGHTS"), id="aggregator")
    job.to_server(ScatterAndGather(min_clients=2, num_rounds=2, aggregator_id="aggregator", train_task_name="fit"))
    add_fedbip_personalization(job)
    job.export_job(str(tmp_path))
    config = _server_config(os.path.join(str(tmp_path), "sag"), app="app_server")  # a server-only job
    components = {c["id"]: c["path"] for c in config["components"]}
    assert components["aggregator"] == AGGREGATOR
    assert config["task_data_filters"][0]["tasks"] == ["fit"]


class _MyAggregator(ModelAggregator):
    def accept_model(self, model):
        pass

    def aggregate_model(self):
        pass

    def reset_stats(self):
        pass


def test_errors_name_what_is_wrong():
    job = FedJob(name="custom", min_clients=2)
    job.to_server(FedAvg(num_clients=2, num_rounds=1, aggregator=_MyAggregator()))
    with pytest.raises(ValueError, match="already aggregates with _MyAggregator"):
        add_fedbip_personalization(job)
    with pytest.raises(ValueError, match="was given aggregator InTimeAccumulateWeightedAggregator"):
        add_fedbip_personalization(_recipe(aggregator=InTimeAccumulateWeightedAggregator(expected_data_kind="WEIGHTS")))
    with pytest.raises(ValueError, match="unknown FedBip option"):
        add_fedbip_personalization(_recipe(), sharpness=2)
    with pytest.raises(ValueError, match="negative must be one of"):
        add_fedbip_personalization(_recipe(), negative="absolute")
    with pytest.raises(ValueError, match="no FedAvg or ScatterAndGather workflow"):
        bare = FedJob(name="bare", min_clients=1)
        bare.to_server(InTimeAccumulateWeightedAggregator(), id="aggregator")
        add_fedbip_personalization(bare)
    with pytest.raises(TypeError, match="FedJob or a recipe"):
        add_fedbip_personalization({"workflows": []})


@pytest.mark.parametrize("option", [{"federate_head": True}, {"num_labels": 4}, {"label_spaces": {"site-1": "a"}}])
def test_heads_per_label_space_are_refused_at_construction_naming_fedbip_recipe(option):
    recipe = _recipe()
    with pytest.raises(ValueError, match=r"heads per label space are not supported.*FedBipRecipe\(federate_head=True"):
        add_fedbip_personalization(recipe, **option)
    controller = recipe._job._deploy_map["server"].app_config.workflows[0].controller
    assert controller.aggregator is None, "the refused call left the job as it was"


def test_adapter_module_carries_theta0_for_nvflares_pytorch_persistor(tmp_path, minilm_path):
    import torch
    from nvflare.app_opt.pt.recipes.fedavg import FedAvgRecipe as PTFedAvgRecipe
    from nvflare.client.config import ExchangeFormat

    from fedbip_nvflare.models import AdapterModule, LoraSettings, default_targets, initial_adapter

    module = AdapterModule(model=minilm_path, seed=3)
    theta0 = initial_adapter(minilm_path, LoraSettings(8, 16, 0.05, tuple(default_targets("text"))), seed=3)
    state = module.state_dict()
    assert list(state) == list(theta0) and all(torch.equal(state[n], theta0[n]) for n in theta0)

    adapter = {"path": "fedbip_nvflare.models.AdapterModule", "args": {"model": minilm_path}}
    recipe = PTFedAvgRecipe(
        name="pt",
        min_clients=2,
        train_script=CLIENT_SCRIPT,
        model=adapter,
        server_expected_format=ExchangeFormat.PYTORCH,
    )
    add_fedbip_personalization(recipe)
    recipe.export(str(tmp_path))
    server = _server_config(str(tmp_path / "pt"))
    persistor = next(c for c in server["components"] if c["id"] == "persistor")
    assert persistor["path"].endswith("PTFileModelPersistor") and persistor["args"]["model"]["path"] == adapter["path"]
    assert persistor["args"]["allow_numpy_conversion"] is False
    assert server["workflows"][0]["args"]["aggregator"]["path"] == AGGREGATOR
