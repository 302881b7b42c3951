"""The guide's hardware (issue 12): its consumer cards with their real memory, and its cloud
options with the price ranges it gives, used by the cost estimate."""

from __future__ import annotations

import json

import pytest

from ftwiz.cli.main import main
from ftwiz.core.cost import GPU_PRICES, GPU_SPECS, GUIDE_PRICE_RANGES, estimate_time_cost, find_gpu_spec
from ftwiz.core.hardware import known_gpu

MIB = 2**20


@pytest.fixture(autouse=True)
def no_user_prices(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


# The cards the guide names for QLoRA, with the memory NVML reports for them (not the guide's
# grouping: its "RTX 3080 / 4080 (16 GB)" line gives a 10 GB card 16 GB).
@pytest.mark.parametrize(("name", "nvml", "mib"), [
    ("RTX 3070", "NVIDIA GeForce RTX 3070", 8192), ("RTX 3080", "NVIDIA GeForce RTX 3080", 10240),
    ("RTX 3090", "NVIDIA GeForce RTX 3090", 24576), ("RTX 4080", "NVIDIA GeForce RTX 4080", 16376),
    ("RTX 4090", "NVIDIA GeForce RTX 4090", 24564),
])
def test_guides_consumer_cards_are_known_with_their_real_memory(name, nvml, mib):
    assert known_gpu(name).memory_total_bytes == mib * MIB
    assert find_gpu_spec(nvml).name == name and GPU_SPECS[name].bf16
    assert name in GPU_PRICES


def test_ti_cards_are_not_taken_for_the_plain_ones():
    assert find_gpu_spec("NVIDIA GeForce RTX 3080 Ti") is None


# The guide's cloud options: "A100 40GB ($1-2/hr)", "A100 80GB ($2-4/hr)", "H100 80GB ($3-5/hr)".
GUIDE_CLOUD = {"A100 40GB": (1, 2), "A100 80GB": (2, 4), "H100 80GB SXM": (3, 5)}


@pytest.mark.parametrize("name", sorted(GUIDE_CLOUD))
def test_cloud_options_cost_at_the_guides_price_range(name):
    assert GUIDE_PRICE_RANGES[name] == GUIDE_CLOUD[name]
    low, high = GUIDE_CLOUD[name]
    est = estimate_time_cost(params=8e9, tokens=5e7, gpu=name)
    assert low <= est.price_per_gpu_hour <= high
    assert est.cost_range_usd == pytest.approx((est.hours * low, est.hours * high))
    assert f"the guide gives ${low:g}-{high:g}/h" in est.assumptions[-1]
    assert estimate_time_cost(params=8e9, tokens=5e7, gpu=name, price_per_hour=9).cost_range_usd is None


def test_plan_on_a_guide_card_and_its_cost_range(capsys):
    assert main(["plan", "--model", "llama-3.2-3b", "--gpu", "RTX 3070", "--examples", "500", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["gpu"]["total_gib"] == 8.0 and plan["method"] == "qlora"  # the guide: 3070 for QLoRA up to 3B
    assert main(["plan", "--model", "llama-3.1-8b", "--gpu", "H100", "--examples", "2000", "--json"]) == 0
    cost = json.loads(capsys.readouterr().out)["cost"]
    low, high = cost["guide_range_usd"]
    assert low < cost["usd"] < high
