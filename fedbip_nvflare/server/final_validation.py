"""FinalValidation: after a stock workflow, each client validates the final model and saves its adapter."""

from nvflare.app_common.app_constant import AppConstants

from fedbip_nvflare.constants import FedBipKeys as K
from fedbip_nvflare.server.targeted import TargetedTasksController


class FinalValidation(TargetedTasksController):
    """Sends the persisted global model to every client in a validate task and writes ``fedbip/results.json``.

    Runs after NVFlare's ``FedAvg`` in the FedAvg baseline, so its results have the same schema as FedBip's
    (the sites report their round-0 accuracy and history themselves).

    Args:
        method: Method name written to the results.
        num_rounds: Rounds the preceding workflow ran (for the results).
        persistor_id: Component id of the persistor holding the final global model.
        validate_timeout: Seconds for the validate task (0: no limit).
        validate_task_name: Name of the validate task.
    """

    def __init__(
        self,
        method: str = "fedavg",
        num_rounds: int = 1,
        persistor_id: str = AppConstants.DEFAULT_PERSISTOR_ID,
        validate_timeout: int = 0,
        validate_task_name: str = K.VALIDATE_TASK,
    ):
        super().__init__(persistor_id=persistor_id, ignore_result_error=True)
        self.method = method
        self.num_rounds = num_rounds
        self.persistor_id = persistor_id
        self.validate_timeout = validate_timeout
        self.validate_task_name = validate_task_name

    def run(self):
        model = self.load_model()
        if model is None:
            return
        clients = self.sample_clients()
        payload = {n: v for n, v in model.params.items()}
        validated = self.send_to_each(
            self.validate_task_name, self.num_rounds, {c: payload for c in clients}, self.validate_timeout, None
        )
        self.write_results(self.method, self.num_rounds, {"workflow": "nvflare FedAvg"}, {}, validated, clients)
