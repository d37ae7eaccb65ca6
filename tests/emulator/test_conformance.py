"""Conformance: CLI-shaped raw requests, answers checked against the reference's shapes.

Every test runs twice: over the in-process transport and over real loopback HTTP.
"""

from __future__ import annotations

import json
import logging
from urllib.parse import quote_plus

import pytest

from tests.emulator.conftest import CLI

OFFER_FIELDS = {
    "id",
    "ask_contract_id",
    "bundle_id",
    "machine_id",
    "host_id",
    "num_gpus",
    "gpu_name",
    "gpu_ram",
    "gpu_total_ram",
    "gpu_frac",
    "gpu_arch",
    "gpu_ids",
    "compute_cap",
    "cuda_max_good",
    "driver_version",
    "driver_vers",
    "cpu_name",
    "cpu_arch",
    "cpu_cores",
    "cpu_cores_effective",
    "cpu_ghz",
    "cpu_ram",
    "has_avx",
    "disk_space",
    "disk_bw",
    "disk_name",
    "inet_up",
    "inet_down",
    "inet_up_cost",
    "inet_down_cost",
    "internet_up_cost_per_tb",
    "internet_down_cost_per_tb",
    "direct_port_count",
    "pci_gen",
    "pcie_bw",
    "mobo_name",
    "os_version",
    "dph_base",
    "dph_total",
    "dph_total_adj",
    "storage_cost",
    "storage_total_cost",
    "vram_costperhour",
    "min_bid",
    "is_bid",
    "credit_discount_max",
    "discount_rate",
    "discounted_hourly",
    "discounted_dph_total",
    "search",
    "instance",
    "platform_fee",
    "dlperf",
    "dlperf_per_dphtotal",
    "flops_per_dphtotal",
    "total_flops",
    "score",
    "reliability",
    "reliability2",
    "reliability_mult",
    "expected_reliability",
    "rentable",
    "rented",
    "verification",
    "vericode",
    "external",
    "hosting_type",
    "public_ipaddr",
    "static_ip",
    "geolocation",
    "geolocode",
    "start_date",
    "end_date",
    "duration",
    "time_remaining",
    "time_remaining_isbid",
    "vms_enabled",
    "is_vm_deverified",
    "resource_type",
    "cluster_id",
}

INSTANCE_FIELDS = {
    "id",
    "machine_id",
    "host_id",
    "actual_status",
    "intended_status",
    "cur_state",
    "next_state",
    "status_msg",
    "label",
    "image_uuid",
    "image_runtype",
    "extra_env",
    "onstart",
    "public_ipaddr",
    "ssh_host",
    "ssh_port",
    "ports",
    "geolocation",
    "num_gpus",
    "gpu_name",
    "gpu_ram",
    "gpu_totalram",
    "disk_space",
    "is_bid",
    "min_bid",
    "dph_base",
    "dph_total",
    "storage_cost",
    "storage_total_cost",
    "inet_up_cost",
    "inet_down_cost",
    "reliability2",
    "start_date",
    "end_date",
    "duration",
    "uptime_mins",
    "search",
    "instance",
    "direct_port_start",
    "direct_port_end",
    "inet_up_billed",
    "inet_down_billed",
}


def test_search_answers_offers_with_every_documented_field(cli: CLI) -> None:
    answer = cli.search(num_gpus={"gte": "1"}, limit=5)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/json")
    offers = answer.json()["offers"]
    assert len(offers) == 5
    for offer in offers:
        assert set(offer) >= OFFER_FIELDS, OFFER_FIELDS - set(offer)
        assert offer["verification"] == "verified"
        assert offer["rentable"] is True
        assert isinstance(offer["id"], int)
        assert (
            abs(offer["dph_total"] - (offer["dph_base"] + 5.0 * offer["storage_cost"] / 720)) < 1e-5
        )
        assert set(offer["search"]) == {
            "gpuCostPerHour",
            "diskHour",
            "totalHour",
            "discountTotalHour",
            "discountedTotalPerHour",
        }
    scores = [o["score"] for o in offers]
    assert scores == sorted(scores, reverse=True)


def test_search_works_without_a_key_and_refuses_a_bad_one(cli: CLI) -> None:
    anonymous = cli.http.post("/api/v0/bundles/", content=b'{"limit": 2}')
    assert anonymous.status_code == 200
    assert len(anonymous.json()["offers"]) == 2
    bad = cli.http.post(
        "/api/v0/bundles/", content=b'{"limit": 2}', headers={"Authorization": "Bearer nope"}
    )
    assert bad.status_code == 404  # search and show answer a bad key 404 (reference 9.1)
    assert bad.json() == {"success": False, "error": "auth_error", "msg": "Invalid user key"}


def test_search_by_get_with_q_and_put_search_asks(cli: CLI) -> None:
    q = quote_plus(json.dumps({"num_gpus": {"eq": "8"}, "limit": 3}))
    by_get = cli.request("GET", f"/api/v0/bundles/?q={q}")
    assert by_get.status_code == 200
    assert {o["num_gpus"] for o in by_get.json()["offers"]} == {8}
    by_put = cli.request(
        "PUT",
        "/api/v0/search/asks/",
        {"select_cols": ["*"], "q": {"num_gpus": {"eq": 8}, "limit": 3}},
    )
    assert [o["id"] for o in by_put.json()["offers"]] == [o["id"] for o in by_get.json()["offers"]]


def test_create_answers_success_new_contract_and_instance_key(cli: CLI) -> None:
    offer = cli.search(order=[["dph_total", "asc"]], limit=1).json()["offers"][0]
    answer = cli.create(offer["id"], label="vastkit/run/1", env={"A": "1", "-p 8080:8080": "1"})
    assert answer.status_code == 200
    body = answer.json()
    assert body["success"] is True
    assert isinstance(body["new_contract"], int)
    assert isinstance(body["instance_api_key"], str)
    assert len(body["instance_api_key"]) >= 32
    inst = cli.instance(body["new_contract"])
    assert set(inst) >= INSTANCE_FIELDS, INSTANCE_FIELDS - set(inst)
    assert inst["machine_id"] == offer["machine_id"]
    assert inst["label"] == "vastkit/run/1"
    assert inst["extra_env"] == [["A", "1"], ["-p 8080:8080", "1"]]
    assert inst["actual_status"] is None
    assert (inst["intended_status"], inst["cur_state"], inst["next_state"]) == (
        "running",
        "running",
        "running",
    )
    assert inst["ports"] is None


def test_create_validation_errors(cli: CLI) -> None:
    offer_id = cli.search(limit=1).json()["offers"][0]["id"]
    cases = [
        ({"image": None}, "invalid_args"),
        ({"env": "-e A=1"}, "invalid_args"),
        ({"disk": 4}, "invalid_args"),
        ({"price": 0.0001}, "invalid_price"),
        ({"price": 200}, "invalid_price"),
        ({"label": "x" * 300}, "invalid_args"),
        ({"onstart": "x" * 5000}, "invalid_args"),
    ]
    for fields, code in cases:
        answer = cli.create(offer_id, **fields)
        assert answer.status_code == 400, fields
        body = answer.json()
        assert body["success"] is False
        assert body["error"] == code
        assert body["msg"].startswith("error 400/3467: Invalid args:")
        assert body["ask_id"] == offer_id
    assert "env must be a dict" in cli.create(offer_id, env="-e A=1").json()["msg"]


def test_create_on_unknown_offer_is_404_no_such_ask(cli: CLI) -> None:
    answer = cli.create(1)
    assert answer.status_code == 404
    body = answer.json()
    assert body["success"] is False
    assert "no_such_ask" in body["msg"]
    assert body["ask_id"] == 1


def test_rented_offer_is_gone_from_search_and_404_on_create(cli: CLI) -> None:
    offer = cli.search(order=[["dph_total", "asc"]], limit=1).json()["offers"][0]
    cli.rent(offer_id=offer["id"])
    ids = [o["id"] for o in cli.search(limit=1000).json()["offers"]]
    machines = [o["machine_id"] for o in cli.search(limit=1000).json()["offers"]]
    assert offer["id"] not in ids
    assert offer["machine_id"] not in machines
    assert cli.create(offer["id"]).status_code == 404


def test_list_v1_envelope_paging_and_label_filter(cli: CLI) -> None:
    offers = cli.search(order=[["dph_total", "asc"]], limit=30).json()["offers"]
    ids = [
        cli.rent(offer_id=o["id"], label="mine" if i % 2 else None) for i, o in enumerate(offers)
    ]
    first = cli.list(limit="25")
    assert first.status_code == 200
    page = first.json()
    assert set(page) == {
        "success",
        "instances_found",
        "total_instances",
        "label_counts",
        "next_token",
        "instances",
    }
    assert page["success"] is True
    assert page["instances_found"] == 25
    assert page["total_instances"] == 30
    assert page["label_counts"] == {"mine": 15, "": 15}
    assert page["next_token"]
    second = cli.list(after_token=page["next_token"]).json()
    assert second["instances_found"] == 5
    assert second["next_token"] is None
    listed = [i["id"] for i in page["instances"] + second["instances"]]
    assert listed == sorted(ids)
    mine = cli.list({"label": {"eq": "mine"}}).json()
    assert mine["total_instances"] == 15
    assert {i["label"] for i in mine["instances"]} == {"mine"}
    unlabelled = cli.list({"label": {"in": [None]}}).json()
    assert unlabelled["total_instances"] == 15
    desc = cli.list(order_by=json.dumps([{"col": "id", "dir": "desc"}])).json()
    assert [i["id"] for i in desc["instances"]] == sorted(ids, reverse=True)[:25]
    cols = cli.list(select_cols=json.dumps(["id", "label", "nonsense"])).json()
    assert set(cols["instances"][0]) == {"id", "label", "nonsense"}
    assert cols["instances"][0]["nonsense"] is None


def test_list_v1_rejects_computed_columns_and_bad_tokens(cli: CLI) -> None:
    answer = cli.list({"dph_total": {"lt": 1}})
    assert answer.status_code == 400
    assert answer.json() == {
        "success": False,
        "error": "invalid_request",
        "msg": "Error in query parameters: dph_total is not a valid search key",
    }
    assert cli.list({"num_gpus": {"eq": 1}}).status_code == 400
    bad = cli.list(after_token="not-a-token")
    assert bad.status_code == 400
    assert bad.json()["error"] == "invalid_token"


def test_v0_list_is_gone(cli: CLI) -> None:
    answer = cli.request("GET", "/api/v0/instances/?owner=me")
    assert answer.status_code == 410
    assert answer.json()["error"] == "deprecated_endpoint"


def test_show_unknown_is_null(cli: CLI) -> None:
    answer = cli.show(12345)
    assert answer.status_code == 200
    assert answer.json() == {"instances": None}


def test_stop_start_label_and_double_destroy(cli: CLI) -> None:
    instance_id = cli.rent()
    assert cli.set_state(instance_id, "stopped").json() == {"success": True}
    inst = cli.instance(instance_id)
    assert (inst["intended_status"], inst["cur_state"]) == ("stopped", "stopped")
    assert cli.set_state(instance_id, "running").json()["success"] is True
    assert cli.instance(instance_id)["intended_status"] == "running"
    labelled = cli.request("PUT", f"/api/v0/instances/{instance_id}/", {"label": "renamed"})
    assert labelled.json() == {"success": True}
    assert cli.instance(instance_id)["label"] == "renamed"
    too_long = cli.request("PUT", f"/api/v0/instances/{instance_id}/", {"label": "x" * 2000})
    assert too_long.status_code == 400
    assert too_long.json()["error"] == "label_too_long"
    first = cli.destroy(instance_id)
    assert first.status_code == 200
    assert first.json()["success"] is True
    second = cli.destroy(instance_id)
    assert second.status_code == 404
    assert second.json()["error"] == "no_such_instance"
    assert cli.show(instance_id).json() == {"instances": None}


def test_paths_without_trailing_slash_and_api_key_query(cli: CLI) -> None:
    no_slash = cli.request("GET", "/api/v0/users/current")
    slash = cli.request("GET", "/api/v0/users/current/")
    assert no_slash.status_code == slash.status_code == 200
    by_query = cli.http.get(f"/api/v0/users/current?api_key={cli.api_key}")
    assert by_query.status_code == 200
    assert by_query.json()["email"] == no_slash.json()["email"]
    bad = cli.http.get("/api/v0/users/current", headers={"Authorization": "Bearer wrong"})
    assert bad.status_code == 401
    assert bad.json() == {"success": False, "error": "auth_error", "msg": "Invalid user key"}
    missing = cli.http.get("/api/v1/instances/")
    assert missing.status_code == 401


def test_user_current_fields(cli: CLI) -> None:
    user = cli.request("GET", "/api/v0/users/current").json()
    for name in ("id", "email", "credit", "balance", "total_spend", "ssh_key", "username"):
        assert name in user
    assert user["credit"] == 100.0
    assert user["total_spend"] == 0.0
    assert "api_key" not in user


def test_bid_price_reboot_and_request_logs_shapes(cli: CLI) -> None:
    offer = cli.search(type="bid", order=[["dph_total", "asc"]], limit=1).json()["offers"][0]
    instance_id = cli.rent(offer_id=offer["id"], price=round(offer["min_bid"] + 0.01, 4))
    changed = cli.request(
        "PUT",
        f"/api/v0/instances/bid_price/{instance_id}/",
        {"client_id": "me", "price": round(offer["min_bid"] + 0.05, 4)},
    )
    assert changed.json() == {"success": True}
    assert cli.instance(instance_id)["dph_base"] == round(offer["min_bid"] + 0.05, 4)
    too_low = cli.request(
        "PUT", f"/api/v0/instances/bid_price/{instance_id}/", {"client_id": "me", "price": 0.0001}
    )
    assert too_low.status_code == 400
    assert too_low.json()["msg"] == "Please set a bid price >= 0.001."
    cli.clock.advance(60)
    assert cli.request("PUT", f"/api/v0/instances/reboot/{instance_id}/").json() == {
        "success": True
    }
    assert cli.instance(instance_id)["actual_status"] == "rebooting"
    logs = cli.request("PUT", f"/api/v0/instances/request_logs/{instance_id}/", {"tail": "1000"})
    assert logs.status_code == 200
    body = logs.json()
    assert body["success"] is True
    url = body["result_url"]
    assert url.startswith("http")
    early = cli.http.get(url)
    assert early.status_code == 404
    cli.clock.advance(2)
    late = cli.http.get(url)
    assert late.status_code == 200
    assert f"container C.{instance_id} started" in late.text
    unknown = cli.request("PUT", "/api/v0/instances/request_logs/1/", {})
    assert unknown.status_code == 404
    assert unknown.json()["error"] == "invalid_id"


def test_charges_requires_a_day_range_and_itemises(cli: CLI) -> None:
    missing = cli.request("GET", "/api/v0/charges/")
    assert missing.status_code == 400
    assert missing.json()["msg"] == (
        "Must provide both 'day' gte and lte filters for instance charges"
    )
    instance_id = cli.rent()
    cli.clock.advance(3600)
    start = cli.clock.now() - 7 * 86400
    filters = quote_plus(json.dumps({"day": {"gte": int(start), "lte": int(cli.clock.now())}}))
    answer = cli.request("GET", f"/api/v0/charges/?select_filters={filters}&limit=100")
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {"success", "count", "total", "next_token", "results"}
    (result,) = body["results"]
    assert result["source"] == f"instance-{instance_id}"
    assert result["type"] == "instance"
    assert [i["type"] for i in result["items"]] == ["gpu", "disk", "bwu", "bwd"]
    assert result["items"][0]["description"].endswith("/hour")


def test_unknown_endpoint_and_method(cli: CLI) -> None:
    assert cli.request("GET", "/api/v0/nothing/").status_code == 404
    assert cli.request("PATCH", "/api/v0/users/current").status_code == 405


def test_the_api_key_never_reaches_the_logs(cli: CLI, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="vastkit.emulator"):
        assert cli.http.get(f"/api/v0/users/current?api_key={cli.api_key}").status_code == 200
        cli.rent()
    assert cli.api_key not in caplog.text
