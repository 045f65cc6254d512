"""check_data_config: a data configuration is checked when a recipe is built, before any site loads it."""

import pytest

from fedbip_nvflare.data import check_data_config


def test_a_suite_of_another_modality_names_the_modality_that_has_it():
    with pytest.raises(ValueError, match=r"'vision-domains' is not a text suite \(it is a vision suite: use modality"):
        check_data_config({"suite": "vision-domains"}, "text")
    with pytest.raises(ValueError, match=r"'text-tasks' is not a causal-lm suite \(it is a text suite"):
        check_data_config({"suite": "text-tasks"}, "causal-lm")


def test_an_unknown_suite_lists_the_modalitys_suites():
    with pytest.raises(ValueError, match=r"unknown vision suite 'nope'; vision suites: \['vision"):
        check_data_config({"suite": "nope"}, "vision")


def test_label_skew_needs_the_client_count():
    with pytest.raises(ValueError, match="'label-skew' splits one pool over all sites: .* needs 'num_clients'"):
        check_data_config({"suite": "label-skew", "alpha": 0.1}, "text")
    assert check_data_config({"suite": "label-skew", "num_clients": 4}, "text")["num_clients"] == 4


def test_files_and_good_suites_pass_as_copies():
    config = {"train_path": "/data/site.jsonl"}
    checked = check_data_config(config, "causal-lm")
    assert checked == config and checked is not config
    assert check_data_config({"suite": "instruct-tasks"}, "causal-lm") == {"suite": "instruct-tasks"}
    with pytest.raises(ValueError, match="unknown data config keys"):
        check_data_config({"suite": "text-tasks", "image_size": 32}, "text")
