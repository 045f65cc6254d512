"""layer_group / assign_groups: FedBip-L's default grouping (DESIGN.md §1) and custom groups."""

import pytest
from fedbip_reference import default_group

from fedbip_nvflare.core import assign_groups, layer_group

EXAMPLES = {
    "base_model.model.encoder.layer.3.attention.self.query.lora_A.weight": "base_model.model.encoder.layer.3.",
    "base_model.model.model.layers.3.self_attn.q_proj.lora_B.weight": "base_model.model.model.layers.3.",
    "model.layers.3.mlp.up_proj.weight": "model.layers.3.",
    "features.3.conv.weight": "features.3.",
    "encoder.layer.12.output.dense.lora_A.weight": "encoder.layer.12.",
    # only the first digit segment counts
    "blocks.2.attn.heads.7.w": "blocks.2.",
    # names without a `.<digits>.` segment are their own group
    "base_model.model.classifier.bias": "base_model.model.classifier.bias",
    "lm_head.weight": "lm_head.weight",
    "layer3.weight": "layer3.weight",
    "features.3": "features.3",  # digits at the end are not followed by a dot
    "3.weight": "3.weight",  # nor preceded by one
    "layer.3a.weight": "layer.3a.weight",
}


@pytest.mark.parametrize("name,group", list(EXAMPLES.items()))
def test_layer_group_examples(name, group):
    assert layer_group(name) == group
    assert default_group(name) == group  # the independent reference agrees


def test_same_layer_shares_a_group_and_different_layers_do_not():
    q = "base_model.model.encoder.layer.0.attention.self.query.lora_A.weight"
    v = "base_model.model.encoder.layer.0.attention.self.value.lora_B.weight"
    other = "base_model.model.encoder.layer.10.attention.self.query.lora_A.weight"
    assert layer_group(q) == layer_group(v) != layer_group(other)


def test_assign_groups_default_mapping_callable():
    names = ["enc.layer.0.a", "enc.layer.0.b", "enc.layer.1.a", "head.w"]
    assert assign_groups(names) == {
        "enc.layer.0.a": "enc.layer.0.",
        "enc.layer.0.b": "enc.layer.0.",
        "enc.layer.1.a": "enc.layer.1.",
        "head.w": "head.w",
    }
    assert list(assign_groups(names)) == names
    assert assign_groups(names, lambda n: n.split(".")[-1]) == {
        "enc.layer.0.a": "a",
        "enc.layer.0.b": "b",
        "enc.layer.1.a": "a",
        "head.w": "w",
    }
    mapping = {n: 7 for n in names}
    assert assign_groups(names, mapping) == {n: "7" for n in names}


def test_assign_groups_mapping_missing_a_name_raises():
    with pytest.raises(KeyError, match="head.w"):
        assign_groups(["enc.layer.0.a", "head.w"], {"enc.layer.0.a": "g"})


def test_assign_groups_default_is_the_layer_group():
    # resolve_groups (dead: layerwise=False gave None) is gone; its layer-wise case is assign_groups' default
    assert assign_groups(["a.0.w"]) == {"a.0.w": "a.0."}
