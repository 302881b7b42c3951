"""Time and cost from FLOPs: the formula, the H200 calibration, prices and their overrides."""

from __future__ import annotations

import pytest

from ftwiz.core import cost
from ftwiz.core.cost import (
    GPU_PRICES,
    GPU_SPECS,
    compare_scenarios,
    estimate_time_cost,
    find_gpu_spec,
    flops_per_token,
    load_prices,
)
from ftwiz.core.errors import UserError

N8B = 8.03e9


@pytest.fixture(autouse=True)
def no_user_prices(tmp_path, monkeypatch):
    """Tests never read the developer's own ~/.config/ftwiz/prices.yaml."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


def test_tables_cover_the_issue_gpus():
    wanted = {"RTX 3090", "RTX 4090", "L4", "A10", "A100 40GB", "A100 80GB", "H100 80GB SXM", "H200"}
    assert wanted <= set(GPU_SPECS) and set(GPU_PRICES) == set(GPU_SPECS)
    assert GPU_SPECS["H200"].peak_tflops == 989 and GPU_SPECS["A100 80GB"].memory_gib == 80


@pytest.mark.parametrize(
    ("method", "ckpt", "factor"),
    [("full", False, 6), ("full", True, 8), ("lora", False, 4), ("lora", True, 6), ("qlora", True, 6)],
)
def test_flops_per_token(method, ckpt, factor):
    assert flops_per_token(1e9, method, ckpt) == factor * 1e9


def _real_chat_arms() -> dict:
    import json
    from pathlib import Path

    doc = json.loads((Path(__file__).resolve().parent.parent / "bench/results/real-chat-h200.json").read_text())
    return doc["arms"]


@pytest.mark.parametrize("arm,method", [("ftwiz_plan", "lora"), ("ftwiz_qlora", "qlora")])
def test_h200_time_model_reproduces_ftwiz_train_on_real_chat_data(arm, method):
    """The defaults give what `ftwiz train` measured on real chat data (bench/results), within 10%."""
    measured = _real_chat_arms()[arm]
    assert measured["config"]["gradient_checkpointing"] is False
    est = estimate_time_cost(params=N8B, tokens=1e6, gpu="H200", method=method, grad_ckpt=False)
    assert est.tokens_per_second == pytest.approx(measured["steady_tokens_per_s"], rel=0.10)


def test_time_and_cost_arithmetic():
    est = estimate_time_cost(params=1e9, tokens=1e9, gpu="A100 80GB", method="full", grad_ckpt=False,
                             efficiency=0.5, price_per_hour=2.0)
    assert est.total_flops == 6e18
    assert est.seconds == pytest.approx(6e18 / (312e12 * 0.5))
    assert est.cost_usd == pytest.approx(est.hours * 2.0)
    assert est.price_source == "--price"
    data = est.to_dict()
    assert data["cost_usd"] == est.cost_usd and isinstance(data["assumptions"], list)


def test_assumptions_are_stated():
    est = estimate_time_cost(params=N8B, tokens=1e6, gpu="4090", method="qlora", num_gpus=4)
    text = "\n".join(est.assumptions)
    from ftwiz.core.cost import DEFAULT_EFFICIENCY, QLORA_SLOWDOWN

    assert f"efficiency {DEFAULT_EFFICIENCY:.0%}" in text and "165.2 TFLOP/s" in text
    assert "real-chat-h200.json" in text and f"QLoRA at {QLORA_SLOWDOWN:g}x" in text
    assert "90% scaling per doubling" in text
    assert "$0.4/GPU-hour" in text


def test_multi_gpu_scaling():
    one = estimate_time_cost(params=N8B, tokens=1e8, gpu="H100", num_gpus=1)
    four = estimate_time_cost(params=N8B, tokens=1e8, gpu="H100", num_gpus=4)
    assert four.tokens_per_second == pytest.approx(one.tokens_per_second * 4 * 0.81)
    assert four.cost_usd == pytest.approx(one.cost_usd / 0.81)  # more GPUs: faster, slightly dearer


def test_compare_scenarios_single_qlora_and_multi_lora():
    rows = compare_scenarios(params=N8B, tokens=1e7, gpu="A100 80GB", num_gpus=1, method="full")
    assert [(r.method, r.num_gpus) for r in rows] == [("qlora", 1), ("lora", 1), ("lora", 2), ("full", 2)]
    assert rows[0].seconds >= rows[1].seconds > rows[2].seconds  # QLoRA measured as fast as LoRA on real data


def test_user_price_file_overrides_table(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    (tmp_path / "ftwiz").mkdir()
    (tmp_path / "ftwiz" / "prices.yaml").write_text("h200: 2.25\nNVIDIA GeForce RTX 4090: 0.3\n")
    prices, source = load_prices()
    assert prices["H200"] == 2.25 and prices["RTX 4090"] == 0.3 and prices["L4"] == GPU_PRICES["L4"]
    est = estimate_time_cost(params=N8B, tokens=1e7, gpu="H200")
    assert est.price_per_gpu_hour == 2.25 and est.price_source.endswith("prices.yaml")
    assert estimate_time_cost(params=N8B, tokens=1e7, gpu="H200", price_per_hour=9).price_per_gpu_hour == 9


def test_prices_path_falls_back_to_home(monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cost.prices_path() == tmp_path / ".config" / "ftwiz" / "prices.yaml"


@pytest.mark.parametrize(
    ("content", "message"),
    [("h200: [1\n", r"prices.yaml:\d+: not valid YAML"), ("- 1\n", "expected a mapping"),
     ("x100: 1\n", "x100: unknown GPU"), ("h200: -1\n", "h200: price must be a number >= 0"),
     ("h200: cheap\n", "price must be a number")],
)
def test_bad_price_file_is_a_user_error(tmp_path, monkeypatch, content, message):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    (tmp_path / "ftwiz").mkdir()
    (tmp_path / "ftwiz" / "prices.yaml").write_text(content)
    with pytest.raises(UserError, match=message):
        load_prices()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"params": 0}, "--params"), ({"tokens": -5}, "--tokens"), ({"num_gpus": 0}, "--num-gpus"),
     ({"method": "dora"}, "--method: unknown method 'dora'"), ({"gpu": "x100"}, "--gpu: unknown GPU"),
     ({"efficiency": 1.5}, "--efficiency"), ({"price_per_hour": -1}, "--price")],
)
def test_bad_input_is_a_user_error(kwargs, message):
    with pytest.raises(UserError, match=message):
        estimate_time_cost(**{"params": N8B, "tokens": 1e6, **kwargs})


def test_bare_a100_is_told_apart_by_memory():
    assert find_gpu_spec("NVIDIA A100") is None
    assert find_gpu_spec("NVIDIA A100", 81920 * 2**20).name == "A100 80GB"
    assert find_gpu_spec("NVIDIA A100", 40960 * 2**20).name == "A100 40GB"


def test_gpu_may_be_a_detected_gpu():
    from ftwiz.core.hardware import GPU

    bare = GPU(index=0, name="NVIDIA A100", uuid="", memory_total_bytes=40960 * 2**20)
    assert estimate_time_cost(params=N8B, tokens=1e6, gpu=bare).gpu == "A100 40GB"
