"""FinalValidation: after a stock workflow, each client validates the final model and saves its adapter."""

from typing import Optional

from nvflare.app_common.app_constant import AppConstants

from fedbip_nvflare.constants import FedBipKeys as K
from fedbip_nvflare.server.targeted import TargetedTasksController


class FinalValidation(TargetedTasksController):
    """Sends the persisted global model to every client in a validate task and writes ``fedbip/results.json``.

    Runs after NVFlare's ``FedAvg`` in the FedAvg baseline, so its results have the same schema as FedBip's
    (the sites report their round-0 accuracy and history themselves). After a workflow with FedBip dropped
    in (``fedbip_aggregator`` set), each client instead gets its own final θ̄_i from that aggregator, with its run key.

    Args:
        method: Method name written to the results.
        num_rounds: Rounds the preceding workflow ran (for the results).
        persistor_id: Component id of the persistor holding the final global model.
        validate_timeout: Seconds for the validate task (0: no limit).
        validate_task_name: Name of the validate task.
        fedbip_aggregator: The ``aggregator_name`` of a FedBipModelAggregator in this job: send each client its
            personalized model instead of the global one (None: the persisted global model).
        min_clients: Least number of clients that must produce a final result (written to the results).
    """

    def __init__(
        self,
        method: str = "fedavg",
        num_rounds: int = 1,
        persistor_id: str = AppConstants.DEFAULT_PERSISTOR_ID,
        validate_timeout: int = 0,
        validate_task_name: str = K.VALIDATE_TASK,
        fedbip_aggregator: Optional[str] = None,
        min_clients: int = 1,
    ):
        super().__init__(persistor_id=persistor_id, ignore_result_error=True)
        self.method = method
        self.num_rounds = num_rounds
        self.persistor_id = persistor_id
        self.validate_timeout = validate_timeout
        self.validate_task_name = validate_task_name
        self.fedbip_aggregator = fedbip_aggregator
        self.min_clients = min_clients

    def run(self):
        clients = self.sample_clients()
        if self.fedbip_aggregator:
            from fedbip_nvflare.server.personalization import find_aggregator

            aggregator = find_aggregator(self.fedbip_aggregator)
            if aggregator is None:
                self.system_panic(f"no FedBipModelAggregator named {self.fedbip_aggregator!r} in this job", self.fl_ctx)
                return
            payloads = aggregator.final_models(clients)
            options = {"workflow": "nvflare workflow + FedBip drop-in", **aggregator.options()}
            run_key = aggregator.run_key
        else:
            model = self.load_model()
            if model is None:
                return
            payloads = {c: dict(model.params) for c in clients}
            options = {"workflow": "nvflare FedAvg"}
            run_key = None
        validated = self.send_to_each(
            self.validate_task_name, self.num_rounds, payloads, self.validate_timeout, None, run_key
        )
        self.write_results(self.method, self.num_rounds, options, {}, validated, clients, self.min_clients)
