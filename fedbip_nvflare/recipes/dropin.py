"""``add_fedbip_personalization``: FedBip dropped into a FedAvg or ScatterAndGather job or recipe."""

from typing import Any, List

from nvflare.app_common.aggregators.intime_accumulate_model_aggregator import InTimeAccumulateWeightedAggregator
from nvflare.app_common.workflows.fedavg import FedAvg
from nvflare.app_common.workflows.scatter_and_gather import ScatterAndGather
from nvflare.job_config.api import FedJob
from nvflare.job_config.defs import FilterType
from nvflare.recipe.spec import Recipe

from fedbip_nvflare.recipes.fedbip import PACKAGE
from fedbip_nvflare.server.final_validation import FinalValidation
from fedbip_nvflare.server.personalization import FedBipModelAggregator, FedBipPersonalizationFilter
from fedbip_nvflare.server.rule import AggregationRule
from fedbip_nvflare.server.rules import RULES, make_rule

AGGREGATOR_OPTIONS = ("min_clients", "resume_from", "log_updates", "aggregator_name")
HEAD_OPTIONS = ("federate_head", "num_labels", "label_spaces")


def _server_config(job: FedJob):
    server = job._deploy_map.get("server")  # FedJob keeps its apps here; there is no public accessor
    if server is None:
        raise ValueError("the job has no server app yet: add its FedAvg or ScatterAndGather workflow first")
    return server.app_config


def add_fedbip_personalization(
    job_or_recipe: Any, final_validation: bool = False, **fedbip_options: Any
) -> FedBipModelAggregator:
    """Turns a FedAvg or ScatterAndGather job (or NVFlare recipe) into FedBip: one personalized model per client.

    Puts a :class:`FedBipModelAggregator` where the workflow aggregates (``FedAvg.aggregator``, or the component
    ScatterAndGather's ``aggregator_id`` names) and adds :class:`FedBipPersonalizationFilter` as a server
    TASK_DATA filter on the workflow's train task. Works with numpy or torch exchange and FULL or DIFF results.
    The job uses the installed ``fedbip_nvflare`` package on the server and the sites (it is added to the job's
    app packages, so it is not copied in as custom code); sites that restrict components allow-list it
    (``fedbip allow-list <workspace>``).

    Example::

        recipe = FedAvgRecipe(name="my_job", min_clients=3, num_rounds=5, train_script="train.py", ...)
        add_fedbip_personalization(recipe, layerwise=True)
        recipe.execute(SimEnv(num_clients=3))

    Args:
        job_or_recipe: A ``FedJob`` or an NVFlare recipe, with its server workflow added.
        final_validation: After the workflow, send each client its own final θ̄_i in a ``validate`` task and
            write ``<run dir>/fedbip/results.json`` (the clients must handle the validate task, as FedBip's
            executor and Client API script do).
        **fedbip_options: ``FedBipModelAggregator`` options (min_clients, resume_from, log_updates,
            aggregator_name); ``rule``, an ``AggregationRule`` or a registered rule name (default "fedbip"); and,
            without a rule object, the rule's options (FedBip's layerwise, negative, similarity_on,
            center_similarity, norm_bound, streaming, share_lora_a).

    Returns:
        The aggregator placed in the job.

    Raises:
        TypeError: Not a FedJob or a recipe.
        ValueError: Unknown FedBip options; heads per label space asked for (``federate_head``, ``num_labels``,
            ``label_spaces``: the drop-in does not support them, FedBipRecipe does); no FedAvg/ScatterAndGather
            workflow; the workflow already has
            a custom aggregator (FedBip would replace it); or the recipe was given an aggregator that
            NVFlare ignored (it falls back to plain averaging for non-ModelAggregator aggregators).
    """
    job = job_or_recipe._job if isinstance(job_or_recipe, Recipe) else job_or_recipe
    if not isinstance(job, FedJob):
        raise TypeError(f"expected an NVFlare FedJob or a recipe holding one, got {type(job_or_recipe).__name__}")
    ignored = getattr(job_or_recipe, "aggregator", None)
    if ignored is not None and not isinstance(ignored, FedBipModelAggregator):
        raise ValueError(
            f"the recipe was given aggregator {type(ignored).__name__}; FedBip replaces the aggregation, so build "
            "the recipe without an aggregator and pass FedBip's options to add_fedbip_personalization"
        )
    aggregator = FedBipModelAggregator(**_aggregator_arguments(dict(fedbip_options)))
    config = _server_config(job)
    tasks: List[str] = []
    found = []
    rounds, min_clients = 1, 1
    for workflow in config.workflows:
        controller = workflow.controller
        found.append(type(controller).__name__)
        if isinstance(controller, FedAvg):
            current = controller.aggregator
            if current is not None and not isinstance(current, FedBipModelAggregator):
                raise ValueError(
                    f"workflow {workflow.id!r} already aggregates with {type(current).__name__}; FedBip replaces "
                    "the aggregation, so build it without a custom aggregator"
                )
            controller.aggregator = aggregator
            tasks.append(controller.task_name)
            rounds, min_clients = controller.num_rounds, controller.num_clients
        elif isinstance(controller, ScatterAndGather):
            current = config.components.get(controller.aggregator_id)
            if current is not None and not isinstance(
                current, (InTimeAccumulateWeightedAggregator, FedBipModelAggregator)
            ):
                raise ValueError(
                    f"component {controller.aggregator_id!r} is a custom {type(current).__name__}; FedBip replaces "
                    "the aggregation, so use NVFlare's default aggregator there or none"
                )
            if current is not None:
                config.components.pop(controller.aggregator_id)
                config.handlers.remove(current)
            config.add_component(controller.aggregator_id, aggregator)
            tasks.append(controller.train_task_name)
            rounds = controller._num_rounds
            min_clients = controller._min_clients
    if not tasks:
        raise ValueError(
            f"no FedAvg or ScatterAndGather workflow in the job's server app (found {found or 'none'}): FedBip's "
            "drop-in needs one; for a new job use FedBipRecipe"
        )
    task_names = sorted(set(tasks))
    job.to_server(
        FedBipPersonalizationFilter(task_names=task_names, aggregator_name=aggregator.aggregator_name),
        filter_type=FilterType.TASK_DATA,
        tasks=task_names,
    )
    # sites run the installed package: its modules are not copied into the job as custom code
    job.set_app_packages(sorted(set(job.job.app_packages) | {PACKAGE}))
    if final_validation:
        job.to_server(
            FinalValidation(
                method="fedbip-dropin",
                num_rounds=rounds,
                fedbip_aggregator=aggregator.aggregator_name,
                min_clients=min_clients,
            ),
            id="fedbip_final_validation",
        )
    return aggregator


def _aggregator_arguments(options: dict) -> dict:
    """``FedBipModelAggregator``'s arguments: its own options, and the rule built from the rest."""
    heads = sorted(k for k in HEAD_OPTIONS if k in options)
    if heads:
        raise ValueError(
            f"{heads}: heads per label space are not supported by FedBip's drop-in (the workflow broadcasts one "
            "model, so a head in it is one head for every client). Use FedBipRecipe(federate_head=True, "
            "num_labels=...) for federated heads combined per label space, or keep heads private on the sites."
        )
    rule = options.pop("rule", "fedbip")
    own = {k: options.pop(k) for k in AGGREGATOR_OPTIONS if k in options}
    if isinstance(rule, AggregationRule):
        if options:
            raise ValueError(f"unknown FedBip option(s) {sorted(options)}: with a rule object, set them on the rule")
        return {"rule": rule, **own}
    takes = RULES[rule].option_names() if rule in RULES else []
    unknown = sorted(set(options) - set(takes))
    if rule in RULES and unknown:
        raise ValueError(
            f"unknown FedBip option(s) {unknown}: the aggregator takes {list(AGGREGATOR_OPTIONS)} and rule "
            f"{rule!r} takes {takes}"
        )
    return {"rule": make_rule(rule, **options), **own}
