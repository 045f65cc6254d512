"""Names shared by the server, the clients and the tools that read their outputs."""


class FedBipKeys:
    """Metric, metadata and file names exchanged between FedBip components."""

    # metrics a site reports
    ACCURACY_RECEIVED = "accuracy_received"  # received personalized model, before local training
    ACCURACY_LOCAL = "accuracy_local"  # after the first local training, before any aggregation
    ACCURACY = "accuracy"  # final personalized model (validate task)
    TRAIN_LOSS = "train_loss"
    N_EXAMPLES = "n_examples"
    EXAMPLES_PER_S = "examples_per_s"
    TRAIN_SECONDS = "seconds"

    # metadata a site reports
    TASK = "task"
    N_TRAIN = "n_train"
    N_TEST = "n_test"
    ADAPTER_DIR = "adapter_dir"
    LABEL_NAMES = "label_names"
    LABEL_SPACE = "label_space"  # fingerprint of the label names: heads are combined only within one
    SITE_ERROR = "fedbip_site_error"  # header of a failed task's reply: the site's one-line reason

    # metadata the server sends with each task
    RUN_KEY = "fedbip_run_key"  # one run's id, the same in a job resumed from its state: sites key snapshots by it

    # results.json
    ERROR = "error"  # a client entry's reason it has no final result
    MIN_CLIENTS = "min_clients"  # the run's least number of clients that must produce results

    # task names
    TRAIN_TASK = "train"
    VALIDATE_TASK = "validate"

    # files and folders
    STATE_DIR = "fedbip"
    SITE_STATE_DIR = "fedbip_state"  # a site's snapshots of its private state, in its workspace, outside any job
    RESULTS_FILE = "results.json"
    ROUNDS_FILE = "rounds.jsonl"
    ADAPTER_FOLDER = "personalized_adapter"
