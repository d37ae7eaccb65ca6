"""Behaviour over (virtual) time: the state machine, billing, bids, hosts, faults, keys."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.emulator.conftest import CLI, CLI_HEADERS, FAST
from vastkit.clock import ManualClock
from vastkit.emulator import Emulator

# ------------------------------------------------------------------ state machine


def test_state_machine_phases_ports_and_ssh(api: CLI, clock: ManualClock) -> None:
    instance_id = api.rent(env={"-p 8080:8080": "1", "FOO": "bar"}, runtype="ssh_direc ssh_proxy")
    inst = api.instance(instance_id)
    assert inst["actual_status"] is None
    assert inst["ports"] is None
    clock.advance(FAST.provision_s)
    inst = api.instance(instance_id)
    assert inst["actual_status"] == "loading"
    assert inst["ssh_host"] is None
    clock.advance(FAST.loading_s)
    inst = api.instance(instance_id)
    assert inst["actual_status"] == "running"
    assert inst["status_msg"].startswith("success, running pytorch/pytorch:latest")
    assert set(inst["ports"]) == {"22/tcp", "8080/tcp"}
    assert isinstance(inst["ports"]["22/tcp"][0]["HostPort"], str)
    assert inst["ssh_host"].endswith(".vast.ai")
    assert isinstance(inst["ssh_port"], int)
    assert inst["start_date"] == clock.now()
    api.set_state(instance_id, "stopped")
    inst = api.instance(instance_id)
    assert inst["actual_status"] == "stopped"
    assert inst["ports"] is None
    api.set_state(instance_id, "running")
    assert api.instance(instance_id)["actual_status"] == "loading"
    clock.advance(FAST.loading_s)
    assert api.instance(instance_id)["actual_status"] == "running"
    api.request("PUT", f"/api/v0/instances/recycle/{instance_id}/")
    assert api.instance(instance_id)["actual_status"] == "recycling"
    clock.advance(FAST.recycle_s + FAST.loading_s)
    assert api.instance(instance_id)["actual_status"] == "running"


def test_stopped_on_demand_waits_for_its_gpus(api: CLI, emu: Emulator) -> None:
    offer = api.search(order=[["dph_total", "asc"]], limit=1).json()["offers"][0]
    instance_id = api.rent(offer_id=offer["id"])
    api.set_state(instance_id, "stopped")
    emu.add_competitor(offer["machine_id"], price=None)  # someone rents it on demand
    api.set_state(instance_id, "running")
    inst = api.instance(instance_id)
    assert (inst["intended_status"], inst["cur_state"]) == ("running", "stopped")
    assert "scheduling" in inst["status_msg"]


def test_timings_are_configurable() -> None:
    from vastkit.emulator import Timings

    clock = ManualClock()
    with Emulator(
        0, offers=50, clock=clock, rate_limits=False, timings=Timings(provision_s=1, loading_s=2)
    ) as emu:
        offer = emu.search({"limit": 1})[0]
        with emu.client() as client:
            created = client.put(f"/api/v0/asks/{offer['id']}/", json={"image": "x"}).json()
        clock.advance(3)
        assert emu.instance(created["new_contract"]).actual_status == "running"


# ------------------------------------------------------------------ billing


def test_billing_second_by_second(api: CLI, emu: Emulator, clock: ManualClock) -> None:
    offer = api.search(order=[["dph_total", "asc"]], limit=1).json()["offers"][0]
    instance_id = api.rent(offer_id=offer["id"], disk=40)
    storage_per_h = 40 * offer["storage_cost"] / 720
    clock.advance(FAST.provision_s + FAST.loading_s)  # 25 s not GPU-billed
    clock.advance(7200)  # two running hours
    api.set_state(instance_id, "stopped")
    clock.advance(3600)  # one stopped hour: storage only
    view = emu.instance(instance_id)
    assert view.gpu_cost == pytest.approx(2 * offer["dph_base"], rel=1e-9)
    hours = (25 + 7200 + 3600) / 3600
    assert view.disk_cost == pytest.approx(hours * storage_per_h, rel=1e-9)
    user = api.request("GET", "/api/v0/users/current").json()
    assert user["total_spend"] == pytest.approx(view.total_cost, abs=1e-6)
    assert user["credit"] == pytest.approx(100.0 - view.total_cost, abs=1e-6)
    inst = api.instance(instance_id)
    assert inst["instance"]["gpuCostPerHour"] == 0.0
    assert inst["search"]["gpuCostPerHour"] == pytest.approx(offer["dph_base"], abs=1e-6)
    assert inst["dph_total"] == pytest.approx(offer["dph_base"] + storage_per_h, abs=1e-6)
    api.destroy(instance_id)
    clock.advance(3600)
    assert emu.user.total_spend == pytest.approx(view.total_cost, rel=1e-9)
    (charge,) = emu.charges(0, clock.now())
    items = {i["type"]: i["amount"] for i in charge["items"]}
    assert items["gpu"] == pytest.approx(view.gpu_cost, abs=1e-6)
    assert items["disk"] == pytest.approx(view.disk_cost, abs=1e-6)
    # A window covering only the stopped hour holds storage and no GPU.
    t_stop = clock.now() - 3600 - 3600
    (window,) = emu.charges(t_stop + 1, t_stop + 3600)
    assert window["items"][0]["amount"] == 0


def test_bandwidth_is_billed_as_bwu_and_bwd(api: CLI, emu: Emulator) -> None:
    instance_id = api.rent()
    emu.add_traffic(instance_id, up_gb=10, down_gb=20)
    view = emu.instance(instance_id)
    inst = api.instance(instance_id)
    expected = 10 * inst["inet_up_cost"] + 20 * inst["inet_down_cost"]
    assert view.bandwidth_cost == pytest.approx(expected)
    assert inst["inet_up_billed"] > 0
    (charge,) = emu.charges(0, emu.clock.now())
    items = {i["type"]: i["amount"] for i in charge["items"]}
    assert items["bwu"] == pytest.approx(10 * inst["inet_up_cost"], abs=1e-6)
    assert items["bwd"] == pytest.approx(20 * inst["inet_down_cost"], abs=1e-6)


def test_bid_instance_is_billed_at_its_bid(api: CLI, emu: Emulator, clock: ManualClock) -> None:
    offer = api.search(type="bid", order=[["dph_total", "asc"]], limit=1).json()["offers"][0]
    bid = round(offer["min_bid"] + 0.05, 4)
    instance_id = api.rent(offer_id=offer["id"], price=bid)
    clock.advance(FAST.provision_s + FAST.loading_s + 3600)
    assert emu.instance(instance_id).gpu_cost == pytest.approx(bid, rel=1e-9)
    assert api.instance(instance_id)["dph_base"] == bid


def test_offline_host_bills_nothing_and_comes_back(
    api: CLI, emu: Emulator, clock: ManualClock
) -> None:
    instance_id = api.rent()
    clock.advance(FAST.provision_s + FAST.loading_s)
    before = emu.instance(instance_id).total_cost
    emu.set_host_status("offline", instance_id=instance_id)
    clock.advance(3600)
    assert api.instance(instance_id)["actual_status"] == "offline"
    assert emu.instance(instance_id).total_cost == pytest.approx(before)
    emu.set_host_status("unknown", instance_id=instance_id)
    assert api.instance(instance_id)["actual_status"] == "unknown"
    emu.set_host_status("online", instance_id=instance_id)
    assert api.instance(instance_id)["actual_status"] == "running"


def test_zero_balance_stops_instances_at_the_right_second(
    api: CLI, emu: Emulator, clock: ManualClock
) -> None:
    offer = api.search(order=[["dph_total", "asc"]], limit=1).json()["offers"][0]
    instance_id = api.rent(offer_id=offer["id"])
    clock.advance(FAST.provision_s + FAST.loading_s)
    emu.set_credit(0.01)
    clock.advance(10 * 3600)
    view = emu.instance(instance_id)
    assert view.intended_status == "stopped"
    assert view.actual_status == "stopped"
    # GPU billing stopped when the credit hit zero; storage keeps billing (credit goes negative).
    assert emu.user.credit < 0
    assert 0 < view.gpu_cost <= 0.01 + 1e-9  # bounded by the credit that was left


# ------------------------------------------------------------------ bids


def _bid_rental(api: CLI, margin: float = 0.05) -> tuple[int, dict[str, object], float]:
    offer = api.search(type="bid", order=[["dph_total", "asc"]], limit=1).json()["offers"][0]
    bid = round(float(offer["min_bid"]) + margin, 4)
    return api.rent(offer_id=offer["id"], price=bid), offer, bid


def test_outbid_goes_to_the_stopped_triple_and_resumes(
    api: CLI, emu: Emulator, clock: ManualClock
) -> None:
    instance_id, _, _bid = _bid_rental(api)
    clock.advance(FAST.provision_s + FAST.loading_s)
    assert api.instance(instance_id)["actual_status"] == "running"
    competitor = emu.preempt(instance_id)
    inst = api.instance(instance_id)
    assert (inst["cur_state"], inst["intended_status"], inst["next_state"]) == (
        "stopped",
        "stopped",
        "stopped",
    )
    assert inst["actual_status"] == "stopped"
    assert inst["is_bid"] is True
    assert any(kind == "client:outbid" and i == instance_id for _, kind, i in emu.events)
    gpu_before = emu.instance(instance_id).gpu_cost
    clock.advance(3600)
    assert emu.instance(instance_id).gpu_cost == pytest.approx(gpu_before)
    assert emu.instance(instance_id).disk_cost > 0
    emu.remove_competitor(competitor)
    inst = api.instance(instance_id)
    assert inst["intended_status"] == "running"
    assert inst["actual_status"] == "loading"
    clock.advance(FAST.loading_s)
    assert api.instance(instance_id)["actual_status"] == "running"


def test_raising_the_bid_wins_the_machine_back(api: CLI, emu: Emulator, clock: ManualClock) -> None:
    instance_id, _, bid = _bid_rental(api)
    clock.advance(FAST.provision_s + FAST.loading_s)
    emu.preempt(instance_id, price=bid + 0.1)
    assert emu.instance(instance_id).outbid
    answer = api.request(
        "PUT",
        f"/api/v0/instances/bid_price/{instance_id}/",
        {"client_id": "me", "price": round(bid + 0.2, 4)},
    )
    assert answer.json() == {"success": True}
    assert not emu.instance(instance_id).outbid
    clock.advance(FAST.loading_s)
    assert api.instance(instance_id)["actual_status"] == "running"


def test_without_auto_resume_an_outbid_instance_stays_stopped(clock: ManualClock) -> None:
    with (
        Emulator(
            0, offers=100, clock=clock, rate_limits=False, timings=FAST, auto_resume=False
        ) as emu,
        httpx.Client(base_url=emu.url, transport=emu.transport, headers=CLI_HEADERS) as http,
    ):
        api = CLI(http, clock, emu.api_key)
        instance_id, _, _ = _bid_rental(api)
        clock.advance(30)
        competitor = emu.preempt(instance_id)
        emu.remove_competitor(competitor)
        assert emu.instance(instance_id).cur_state == "stopped"


def test_on_demand_rental_preempts_a_bid(api: CLI, emu: Emulator, clock: ManualClock) -> None:
    instance_id, _offer, _ = _bid_rental(api)
    clock.advance(30)
    current = emu.instance(instance_id).offer_id
    other = api.create(current, label="on-demand")
    assert other.status_code == 200, other.text
    assert emu.instance(instance_id).outbid
    assert emu.instance(other.json()["new_contract"]).cur_state == "running"


def test_insufficient_bid_creates_a_stopped_instance_with_an_error(api: CLI, emu: Emulator) -> None:
    _, offer, bid = _bid_rental(api)
    current = emu.instance(api.list().json()["instances"][0]["id"]).offer_id
    low = api.create(current, price=round(bid - 0.01, 4))
    assert low.status_code == 200
    body = low.json()
    assert body["success"] is False
    assert "new_contract" in body
    view = emu.instance(body["new_contract"])
    assert (view.cur_state, view.intended_status, view.next_state) == ("stopped",) * 3
    assert emu.instance(body["new_contract"]).disk_cost == 0  # billing starts now
    refused = api.create(current, price=round(bid - 0.01, 4), cancel_unavail=True)
    assert refused.status_code == 410
    assert refused.json()["error"] == "no_such_ask"
    assert offer["machine_id"] == view.machine_id


def test_random_preemptions_are_reproducible_from_the_seed() -> None:
    def history() -> list[tuple[float, str, int]]:
        clock = ManualClock()
        with Emulator(
            3,
            offers=100,
            clock=clock,
            rate_limits=False,
            timings=FAST,
            preemption_mtbp_s=1800,
            preemption_hold_s=600,
        ) as emu:
            offer = emu.search({"type": "bid", "order": [["dph_total", "asc"]], "limit": 1})[0]
            with emu.client() as client:
                client.put(
                    f"/api/v0/asks/{offer['id']}/",
                    json={"image": "x", "price": offer["min_bid"] + 0.01},
                )
            for _ in range(48):
                clock.advance(600)
                emu.tick()
            return emu.events

    first = history()
    assert any(kind == "client:outbid" for _, kind, _ in first)
    assert first == history()


def test_contract_end_stops_the_instance_for_good(
    api: CLI, emu: Emulator, clock: ManualClock
) -> None:
    instance_id = api.rent()
    end = api.instance(instance_id)["end_date"]
    clock.advance(end - clock.now() + 1)
    assert emu.instance(instance_id).cur_state == "stopped"
    answer = api.set_state(instance_id, "running")
    assert answer.status_code == 400


# ------------------------------------------------------------------ faults and limits


def test_documented_rate_limits_with_each_body_shape(clock: ManualClock) -> None:
    with (
        Emulator(0, offers=50, clock=clock, timings=FAST) as emu,
        httpx.Client(base_url=emu.url, transport=emu.transport, headers=CLI_HEADERS) as http,
    ):
        api = CLI(http, clock, emu.api_key)
        instance_id = api.rent()
        assert api.list().status_code == 200
        limited = api.list()
        assert limited.status_code == 429
        assert limited.json() == {"detail": "API requests too frequent endpoint threshold=1.0"}
        assert "retry-after" not in limited.headers
        clock.advance(1.0)
        assert api.list().status_code == 200
        assert api.show(instance_id).status_code == 200
        text = api.show(instance_id)
        assert text.status_code == 429
        assert text.text == "API requests too frequent: endpoint threshold=2.0"
        second_create = api.create(emu.search({"limit": 2})[1]["id"])
        assert second_create.status_code == 429
        assert second_create.json() == {
            "detail": "API requests too frequent endpoint threshold=4.5"
        }
        assert api.destroy(instance_id).status_code == 200
        again = api.destroy(instance_id)
        assert again.status_code == 429
        assert again.json() == {
            "success": False,
            "error": "rate_limit_exceeded",
            "msg": "API requests too frequent endpoint threshold=3.0",
        }
        for _ in range(10):
            clock.advance(0.1)
            api.search(limit=1)
        assert api.search(limit=1).status_code == 429


def test_rate_limits_are_configurable(clock: ManualClock) -> None:
    with (
        Emulator(
            0,
            offers=50,
            clock=clock,
            rate_limits={"list": 0, "show": 10},
            rate_limit_body="error",
            retry_after=True,
        ) as emu,
        emu.client() as http,
    ):
        assert all(http.get("/api/v1/instances/").status_code == 200 for _ in range(3))
        http.get("/api/v0/instances/1/")
        clock.advance(5)
        limited = http.get("/api/v0/instances/1/")
        assert limited.status_code == 429
        assert limited.json()["error"] == "rate_limit_exceeded"
        assert limited.headers["retry-after"] == "10"


def test_daily_search_quota(clock: ManualClock) -> None:
    with (
        Emulator(0, offers=50, clock=clock, rate_limits=False, search_quota=2) as emu,
        emu.client() as http,
    ):
        assert http.post("/api/v0/bundles/", json={}).status_code == 200
        assert http.post("/api/v0/bundles/", json={}).status_code == 200
        over = http.post("/api/v0/bundles/", json={})
        assert over.status_code == 429
        assert over.json()["error"] == "search_quota_exceeded"
        reset = int(over.headers["X-RateLimit-Reset"])
        assert reset % 86400 == 0
        assert reset > clock.now()
        clock.advance(reset - clock.now())
        assert http.post("/api/v0/bundles/", json={}).status_code == 200


def test_injected_5xx_drop_malformed_and_slow(emu: Emulator) -> None:
    with emu.client() as http:
        emu.inject("status", "user", status=502)
        bad = http.get("/api/v0/users/current")
        assert bad.status_code == 502
        assert bad.headers["content-type"].startswith("text/html")
        assert http.get("/api/v0/users/current").status_code == 200
        emu.inject("status", "user", status=500)
        assert http.get("/api/v0/users/current").json()["error"] == "internal_error"
        emu.inject("drop", "user")
        with pytest.raises(httpx.RemoteProtocolError):
            http.get("/api/v0/users/current")
        emu.inject("malformed", "user")
        with pytest.raises(json.JSONDecodeError):
            http.get("/api/v0/users/current").json()
        emu.inject("slow", "user", delay_s=5.0)
        with pytest.raises(httpx.ReadTimeout):
            http.get("/api/v0/users/current", timeout=0.5)
        emu.inject("rate_limit", "user", shape="text")
        assert http.get("/api/v0/users/current").text.startswith("API requests too frequent")


def test_processed_drop_on_create_still_creates(emu: Emulator) -> None:
    offer = emu.search({"limit": 1})[0]
    emu.inject("drop", "create", processed=True)
    with emu.client() as http:
        with pytest.raises(httpx.RemoteProtocolError):
            http.put(f"/api/v0/asks/{offer['id']}/", json={"image": "x", "label": "lost/1"})
    assert [i.label for i in emu.instances] == ["lost/1"]


def test_drop_over_loopback_http(emu: Emulator) -> None:
    emu.serve()
    emu.inject("drop", "user")
    headers = {"Authorization": f"Bearer {emu.api_key}"}
    with httpx.Client(base_url=emu.url, headers=headers, timeout=5) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            http.get("/api/v0/users/current")
        assert http.get("/api/v0/users/current").status_code == 200


def test_probabilistic_faults_are_reproducible() -> None:
    def statuses() -> list[int]:
        clock = ManualClock()
        with Emulator(5, offers=20, clock=clock, rate_limits=False) as emu, emu.client() as http:
            emu.inject("status", "user", count=None, probability=0.3)
            return [http.get("/api/v0/users/current").status_code for _ in range(40)]

    first = statuses()
    assert 503 in first
    assert 200 in first
    assert first == statuses()


def test_stuck_loading_and_oci_error(api: CLI, emu: Emulator, clock: ManualClock) -> None:
    emu.fail_next_instances("stuck_loading")
    emu.fail_next_instances("oci_error")
    offers = api.search(order=[["dph_total", "asc"]], limit=2).json()["offers"]
    stuck = api.rent(offer_id=offers[0]["id"])
    broken = api.rent(offer_id=offers[1]["id"])
    clock.advance(3600)
    assert api.instance(stuck)["actual_status"] == "loading"
    inst = api.instance(broken)
    assert inst["actual_status"] == "created"
    assert "OCI runtime create failed" in inst["status_msg"]
    assert emu.instance(broken).gpu_cost == 0


# ------------------------------------------------------------------ per-instance key


def test_instance_key_is_limited_to_its_instance(api: CLI, emu: Emulator) -> None:
    offers = api.search(order=[["dph_total", "asc"]], limit=2).json()["offers"]
    mine = api.create(offers[0]["id"]).json()
    other = api.rent(offer_id=offers[1]["id"])
    key = {"Authorization": f"Bearer {mine['instance_api_key']}"}
    own = mine["new_contract"]
    assert api.http.get(f"/api/v0/instances/{own}/", headers=key).json()["instances"]["id"] == own
    stop = api.http.put(f"/api/v0/instances/{own}/", json={"state": "stopped"}, headers=key)
    assert stop.json() == {"success": True}
    assert api.http.get(f"/api/v0/instances/{other}/", headers=key).status_code == 403
    assert (
        api.http.put(
            f"/api/v0/instances/{other}/", json={"state": "stopped"}, headers=key
        ).status_code
        == 403
    )
    assert api.http.get("/api/v0/users/current", headers=key).status_code == 403
    assert api.http.get("/api/v1/instances/", headers=key).status_code == 403
    label = api.http.put(f"/api/v0/instances/{own}/", json={"label": "x"}, headers=key)
    assert label.status_code == 403
    gone = api.http.request("DELETE", f"/api/v0/instances/{own}/", content=b"{}", headers=key)
    assert gone.json()["success"] is True
    assert [i.id for i in emu.instances] == [other]


# ------------------------------------------------------------------ bulk and clocks


def test_bulk_create_stop_and_destroy(api: CLI, emu: Emulator) -> None:
    offers = api.search(order=[["dph_total", "asc"]], limit=3).json()["offers"]
    created = api.request(
        "POST",
        "/api/v0/asks/bulk/",
        {"client_id": "me", "image": "x", "ids": [o["id"] for o in offers]},
    ).json()
    ids = [r["new_contract"] for r in created["results"]]
    assert len(ids) == 3
    assert api.request("PUT", "/api/v0/instances/", {"state": "stopped", "ids": ids}).json() == {
        "success": True
    }
    assert {i.intended_status for i in emu.instances} == {"stopped"}
    api.request("DELETE", "/api/v0/instances/", {"instance_ids": ids[:2]})
    assert [i.id for i in emu.instances] == ids[2:]


def test_accelerated_clock_drives_the_server_in_real_time() -> None:
    from tests._support.processes import HANG_S
    from tests._support.waiting import wait_until
    from vastkit.emulator import AcceleratedClock, serve

    clock = AcceleratedClock(1000.0)
    started = clock.now()
    with serve(0, offers=20, clock=clock, timings=FAST, rate_limits=False) as emu:
        headers = {"Authorization": f"Bearer {emu.api_key}"}
        with httpx.Client(base_url=emu.url, headers=headers, timeout=HANG_S) as http:
            offer = http.post("/api/v0/bundles/", json={"limit": 1}).json()["offers"][0]
            created = http.put(f"/api/v0/asks/{offer['id']}/", json={"image": "x"}).json()
            wait_until(
                lambda: emu.instance(created["new_contract"]).actual_status == "running",
                "the instance ran on the accelerated clock",
                poll=0.01,
            )
            assert clock.now() - started >= FAST.provision_s + FAST.loading_s
