"""Vast JSON to models: renames, coercions, unknown fields, and readable error paths."""

from __future__ import annotations

from typing import Any

import cattrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests._support.api_factories import instance_json, offer_json
from vastkit.api._converter import make_converter, structure, structure_list
from vastkit.api.models import (
    Charge,
    CreatedInstance,
    InstanceInfo,
    InstanceState,
    Offer,
    PortBinding,
    User,
)
from vastkit.errors import ResponseValidationError


def test_make_converter_returns_a_cattrs_converter() -> None:
    converter = make_converter()
    assert isinstance(converter, cattrs.Converter)
    assert converter.structure(offer_json(5), Offer).id == 5


def test_offer_renames_and_units() -> None:
    (offer,) = structure_list([offer_json(7)], Offer, path="$.offers")
    assert offer.id == 7
    assert offer.gpu_ram_mb == 24564.0
    assert offer.gpu_total_ram_mb == 49128.0
    assert offer.cpu_ram_mb == 257000.0
    assert offer.disk_space_gb == 512.5
    assert offer.disk_bw_mb_s == 2800.0
    assert offer.inet_up_mbps == 850.2
    assert offer.inet_down_mbps == 920.7
    assert offer.inet_up_cost_per_gb == 0.005
    assert offer.inet_down_cost_per_gb == 0.003
    assert offer.storage_cost_per_gb_month == 0.15
    assert offer.reliability == 0.9931  # reliability2 preferred
    assert offer.verified
    assert offer.country_code == "US"
    assert offer.storage_dph(720) == pytest.approx(0.15)


def test_reliability_falls_back_when_reliability2_is_missing() -> None:
    raw = offer_json(1, reliability2=None)
    assert structure(raw, Offer).reliability == 0.9912
    assert structure_list([raw], Offer)[0].reliability == 0.9912


def test_string_numerics_and_bools_are_coerced() -> None:
    raw = offer_json(
        12,
        id="12",
        num_gpus="4",
        dph_total="1.25",
        dph_base=1,
        rentable="false",
        rented=0,
        static_ip="True",
        compute_cap=860.0,
        public_ipaddr="  198.51.100.4\n",
    )
    for offer in (structure(raw, Offer), structure_list([raw], Offer)[0]):
        assert offer.id == 12
        assert offer.num_gpus == 4
        assert offer.dph_total == 1.25
        assert offer.dph_base == 1.0
        assert isinstance(offer.dph_base, float)
        assert offer.rentable is False
        assert offer.rented is False
        assert offer.static_ip is True
        assert offer.compute_cap == 860
        assert offer.public_ipaddr == "198.51.100.4"


def test_null_in_a_field_with_a_default_gives_the_default() -> None:
    raw = offer_json(1, gpu_ram=None, inet_up_cost=None, storage_cost=None, rentable=None)
    for offer in (structure(raw, Offer), structure_list([raw], Offer)[0]):
        assert offer.gpu_ram_mb == 0.0
        assert offer.inet_up_cost_per_gb == 0.0
        assert offer.storage_cost_per_gb_month == 0.0
        assert offer.rentable is True


def test_instance_env_ports_image_and_ip() -> None:
    raw = instance_json(42)
    for inst in (structure(raw, InstanceInfo), structure_list([raw], InstanceInfo)[0]):
        assert inst.image == "pytorch/pytorch:latest"
        assert inst.env == {"DOG": "CAT", "-p 8080:8080": "1"}
        assert inst.ports["22/tcp"] == (
            PortBinding(host_ip="0.0.0.0", host_port=20000),
            PortBinding(host_ip="::", host_port=20000),
        )
        assert inst.ports["8080/tcp"][0].host_port == 20001
        assert inst.public_ipaddr == "203.0.113.7"
        assert inst.reliability == 0.991
        assert inst.gpu_ram_mb == 24564.0
        assert inst.disk_space_gb == 32.0
        assert inst.state is InstanceState.RUNNING
        assert inst.ssh_command == "ssh -p 20000 root@203.0.113.7"


def test_instance_without_ports_or_env() -> None:
    raw = instance_json(
        1, ports=None, extra_env=None, public_ipaddr=None, actual_status=None, is_bid=None
    )
    for inst in (structure(raw, InstanceInfo), structure_list([raw], InstanceInfo)[0]):
        assert inst.ports == {}
        assert inst.env == {}
        assert inst.public_ipaddr is None
        assert inst.is_bid is False
        assert inst.state is InstanceState.PROVISIONING


def test_outbid_instance_state() -> None:
    raw = instance_json(
        3,
        is_bid=True,
        actual_status="stopped",
        cur_state="stopped",
        intended_status="stopped",
        next_state="stopped",
    )
    assert structure(raw, InstanceInfo).state is InstanceState.OUTBID


def test_created_user_and_charges() -> None:
    created = structure(
        {"success": True, "new_contract": 1234, "instance_api_key": "inst-key"}, CreatedInstance
    )
    assert created.id == 1234
    assert "inst-key" not in repr(created)
    user = structure({"id": "9", "email": "a@b.c", "credit": "25.5", "extra": [1]}, User)
    assert (user.id, user.credit) == (9, 25.5)
    charge = structure(
        {
            "start": 1767225600,
            "end": 1767312000,
            "type": "instance",
            "source": "instance-12345678",
            "description": "Instance 12345678 Charges - 1 day",
            "amount": "2.345",
            "metadata": {"label": "x"},
            "items": [
                {"type": "gpu", "description": "24.000 hours at $0.089/hour", "amount": 2.136},
                {"type": "disk", "amount": "0.209"},
            ],
        },
        Charge,
    )
    assert charge.instance_id == 12345678
    assert charge.amount == 2.345
    assert [item.type for item in charge.items] == ["gpu", "disk"]
    assert charge.items[1].amount == 0.209


@pytest.mark.parametrize(
    ("overrides", "path"),
    [
        ({"dph_total": "cheap"}, "$.offers[2].dph_total"),
        ({"dph_total": None}, "$.offers[2].dph_total"),
        ({"id": [1]}, "$.offers[2].id"),
        ({"gpu_ram": "lots"}, "$.offers[2].gpu_ram"),
        ({"rentable": "maybe"}, "$.offers[2].rentable"),
        ({"num_gpus": 1.5}, "$.offers[2].num_gpus"),
    ],
)
def test_garbled_offer_names_the_path(overrides: dict[str, Any], path: str) -> None:
    items = [offer_json(1), offer_json(2), offer_json(3, **overrides)]
    with pytest.raises(ResponseValidationError) as info:
        structure_list(items, Offer, path="$.offers")
    assert any(error.endswith(f"@ {path}") for error in info.value.errors), info.value.errors
    assert path in str(info.value)
    assert info.value.body is items


def test_missing_required_field_is_named() -> None:
    broken = offer_json(4)
    del broken["gpu_name"]
    with pytest.raises(ResponseValidationError, match=r"required field missing @ \$.offers\[0\]"):
        structure_list([broken], Offer, path="$.offers")


def test_a_non_object_item_and_a_non_list() -> None:
    with pytest.raises(ResponseValidationError, match=r"\$.offers\[1\]"):
        structure_list([offer_json(1), "nope"], Offer, path="$.offers")
    with pytest.raises(ResponseValidationError, match=r"expected an array.*\$.offers"):
        structure_list({"id": 1}, Offer, path="$.offers")


@pytest.mark.parametrize(
    ("overrides", "path"),
    [
        ({"ports": {"22/tcp": [{"HostIp": "0.0.0.0", "HostPort": "x"}]}}, "$.instances[0].ports"),
        ({"extra_env": [["A"]]}, "$.instances[0].extra_env"),
        ({"image_uuid": ["a"]}, "$.instances[0].image_uuid"),
    ],
)
def test_garbled_instance_names_the_wire_field(overrides: dict[str, Any], path: str) -> None:
    with pytest.raises(ResponseValidationError) as info:
        structure_list([instance_json(1, **overrides)], InstanceInfo, path="$.instances")
    assert any(error.endswith(f"@ {path}") for error in info.value.errors), info.value.errors


def test_created_instance_error_uses_the_wire_name() -> None:
    with pytest.raises(ResponseValidationError, match=r"@ \$.new_contract"):
        structure({"success": True, "new_contract": "soon"}, CreatedInstance)


# --- hypothesis ------------------------------------------------------------------------------

_KNOWN = set(offer_json()) | set(instance_json())
_unknown_keys = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12).filter(
    lambda key: key not in _KNOWN
)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)


_PLAIN_OFFER = structure_list([offer_json(1)], Offer)[0]
_PLAIN_INSTANCE = structure_list([instance_json(1)], InstanceInfo)[0]
_CONVERTER = make_converter()


@settings(max_examples=60)
@given(st.dictionaries(_unknown_keys, _json, max_size=6))
def test_unknown_fields_are_ignored(extra: dict[str, Any]) -> None:
    plain_offer, plain_instance = _PLAIN_OFFER, _PLAIN_INSTANCE
    assert structure_list([{**offer_json(1), **extra}], Offer)[0] == plain_offer
    assert structure({**offer_json(1), **extra}, Offer) == plain_offer
    assert structure_list([{**instance_json(1), **extra}], InstanceInfo)[0] == plain_instance


_REQUIRED_NUMERIC = ["id", "machine_id", "num_gpus", "dph_base", "dph_total"]
_garbage = st.one_of(
    st.text(alphabet="xyz!?", min_size=1, max_size=5),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
    st.none(),
)


@given(
    index=st.integers(0, 5),
    field=st.sampled_from(_REQUIRED_NUMERIC),
    garbage=_garbage,
)
def test_a_garbled_response_names_its_path(index: int, field: str, garbage: Any) -> None:
    items = [offer_json(i + 1) for i in range(6)]
    items[index][field] = garbage
    with pytest.raises(ResponseValidationError) as info:
        structure_list(items, Offer, path="$.offers")
    assert f"$.offers[{index}].{field}" in str(info.value)


@settings(max_examples=60)
@given(
    st.fixed_dictionaries(
        {
            "num_gpus": st.integers(1, 16) | st.integers(1, 16).map(str),
            "dph_total": st.floats(0, 100) | st.floats(0, 100).map(repr),
            "rentable": st.booleans() | st.sampled_from(["true", "false", 0, 1]),
            "gpu_ram": st.none() | st.integers(0, 200_000),
        }
    )
)
def test_fast_path_and_cattrs_agree(fields: dict[str, Any]) -> None:
    raw = offer_json(9, **fields)
    assert structure_list([raw], Offer)[0] == _CONVERTER.structure(raw, Offer)
