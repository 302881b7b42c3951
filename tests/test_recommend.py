"""The guide's hyperparameter table and the fit of a batch layout to 24, 80 and 141 GB GPUs."""

from __future__ import annotations

import pytest

from ftwiz.core.errors import UserError
from ftwiz.core.hardware import known_gpu
from ftwiz.core.models import load_model_info
from ftwiz.core.recommend import fit_to_gpu, recommend_hyperparams, relative_step_time, usable_bytes

QKVO = ["q_proj", "k_proj", "v_proj", "o_proj"]
GIB = 2**30


@pytest.fixture(scope="module")
def llama8b():
    return load_model_info("llama-3.1-8b")


# The guide's "Hyperparameter Guidelines" table, copied from docs (GUIDE.md) as printed:
# (learning rate, epochs, batch size, LoRA rank, warmup ratio) per dataset-size column.
GUIDE_TABLE = {
    "under 1K": ("1e-4", "3-5", "8-16", "8-16", "0.05"),
    "1K to 10K": ("2e-4", "2-3", "16-32", "16-32", "0.03"),
    "over 10K": ("2e-4 to 5e-4", "1-2", "32-64", "16-64", "0.03"),
}
FIELDS = ("learning_rate", "num_train_epochs", "effective_batch_size", "r", "warmup_ratio")


def _within(value: float, guide: str) -> bool:
    """A value inside the guide's text: "1e-4", "3-5" or "2e-4 to 5e-4"."""
    ends = guide.split(" to ") if " to " in guide else [guide] if "e-" in guide else guide.split("-")
    return float(ends[0]) <= value <= float(ends[-1])


@pytest.mark.parametrize("n,band", [(500, "under 1K"), (999, "under 1K"), (1000, "1K to 10K"),
                                    (10_000, "1K to 10K"), (10_001, "over 10K")])
def test_bands_follow_the_guides_table(n, band):
    hp = recommend_hyperparams(n, "lora", bf16_ok=True)
    assert hp.band == band
    table = hp.to_dict()
    for name, guide in zip(FIELDS, GUIDE_TABLE[band]):
        assert table[name]["guide"] == guide, name  # the guide's figure, as printed
        assert _within(hp[name], guide), (name, hp[name], guide)  # ftwiz's pick lies inside it
        assert guide in table[name]["reason"] or guide in hp.items[name].reason
    assert hp["lora_alpha"] == 2 * hp["r"] and hp["lora_dropout"] == 0.0  # not the guide's 0.05: dropout_reason
    assert hp.items["lora_dropout"].guide == "0.05" and "not the guide's 0.05" in hp.items["lora_dropout"].reason
    assert hp["lr_scheduler_type"] == "cosine" and hp["weight_decay"] == 0.01
    assert all(r.reason and "\n" not in r.reason for r in hp.items.values())
    assert "examples" in hp.items["learning_rate"].reason  # the band is named in the reason


def test_small_data_gets_the_guides_lower_rate_and_longer_warmup():
    """The guide's first column, not the old misquote (2e-4, warmup 0.1)."""
    small = recommend_hyperparams(500, "lora", bf16_ok=True)
    assert small["learning_rate"] == 1e-4 and small["warmup_ratio"] == 0.05
    assert recommend_hyperparams(5000, "lora", bf16_ok=True)["learning_rate"] == 2e-4


def test_full_fine_tuning_rate_follows_model_size_with_its_source():
    small, large = (recommend_hyperparams(5000, "full", True, params=p) for p in (1.2e9, 70e9))
    assert small["learning_rate"] > large["learning_rate"]
    lora = recommend_hyperparams(5000, "lora", True)
    assert small["learning_rate"] == pytest.approx(lora["learning_rate"] / 10)  # LoRA Without Regret's ~10x
    reason = small.items["learning_rate"].reason
    assert "LoRA Without Regret" in reason and "not the guide's" in reason


def test_defaults_by_method_and_gpu():
    assert recommend_hyperparams(5000, "qlora", True)["optim"] == "paged_adamw_8bit"
    assert recommend_hyperparams(5000, "lora", True)["optim"] == "adamw_torch"
    assert recommend_hyperparams(5000, "lora", True)["precision"] == "bf16"
    assert recommend_hyperparams(5000, "lora", False)["precision"] == "fp16"
    assert recommend_hyperparams(5000, "lora", False, cpu_only=True)["precision"] == "fp32"
    full = recommend_hyperparams(5000, "full", True)
    assert "r" not in full.items and full["learning_rate"] < 1e-4
    assert set(full.to_dict()["learning_rate"]) == {"value", "reason", "guide"}
    assert recommend_hyperparams(5000, "lora", True).to_dict()["optim"]["guide"] == "paged_adamw_8bit"


def test_bad_dataset_size_or_method():
    with pytest.raises(UserError, match="--examples"):
        recommend_hyperparams(0, "lora", True)
    with pytest.raises(UserError, match="--method"):
        recommend_hyperparams(10, "dora", True)


def test_checkpointing_and_small_batches_are_slower():
    assert relative_step_time("lora", 4, 512, True) > relative_step_time("lora", 4, 512, False)
    assert relative_step_time("lora", 1, 512, False) > relative_step_time("lora", 8, 512, False)


def fit(info, gpu, method="lora", seqs=(2048, 1024), **kw):
    return fit_to_gpu(info, method, known_gpu(gpu).memory_total_bytes, 16, seqs, 16, QKVO, **kw)


def test_fit_on_24_80_141_gb(llama8b):
    small, mid, big = fit(llama8b, "RTX 4090"), fit(llama8b, "A100 80GB"), fit(llama8b, "H200")
    for f in (small, mid, big):
        assert f.fits and f.estimate.required_bytes <= f.usable_bytes
        assert f.micro_batch * f.grad_accum == 16  # the effective batch is kept
    # 24 GB: only with checkpointing, micro-batch 1 and a shorter max_length
    assert small.grad_ckpt and small.micro_batch == 1 and small.max_length == 1024
    # 80 and 141 GB: no checkpointing (faster), full length, bigger micro-batch on the bigger GPU
    assert not mid.grad_ckpt and not big.grad_ckpt
    assert mid.max_length == big.max_length == 2048
    assert big.micro_batch > mid.micro_batch


def test_fit_prefers_no_checkpointing_when_it_fits(llama8b):
    f = fit(llama8b, "H200", seqs=(512,))
    assert not f.grad_ckpt and f.micro_batch == 16
    assert any("off" in r for r in f.reasons)


def test_user_choices_are_kept(llama8b):
    f = fit(llama8b, "H200", micro_batch=4, grad_ckpt=True, seqs=(512,))
    assert (f.micro_batch, f.grad_accum, f.grad_ckpt) == (4, 4, True)


def test_qlora_fits_where_lora_does_not(llama8b):
    lora = fit_to_gpu(llama8b, "lora", 16 * GIB, 16, (512,), 16, QKVO)
    qlora = fit_to_gpu(llama8b, "qlora", 16 * GIB, 16, (512,), 16, QKVO)
    assert not lora.fits and "QLoRA" in lora.suggestion
    assert qlora.fits


def test_nothing_fits_says_what_would(llama8b):
    f = fit_to_gpu(llama8b, "qlora", 10 * GIB, 16, (4096,), 16, QKVO)  # context measured 1.35 GiB
    assert not f.fits and "max_length" in f.suggestion
    hopeless = fit_to_gpu(llama8b, "qlora", 4 * GIB, 16, (512,), 16, QKVO)
    assert not hopeless.fits and "smaller model" in hopeless.suggestion


def test_full_fine_tuning_falls_back_to_8bit_adam(llama8b):
    f = fit(llama8b, "H200", method="full", seqs=(512,))
    assert f.fits and f.optim == "adamw_8bit"


def test_margin_is_ten_percent_plus_one_gib():
    assert usable_bytes(100 * GIB) == 89 * GIB


def test_gpu_plans_pack_with_varlen_attention_and_cite_the_real_data_run(monkeypatch):
    from ftwiz.core import recommend

    a = recommend.measured_attention()  # from bench/results via measured.json (test_bench checks that link)
    assert a["varlen_tokens_per_s"] > a["sdpa_tokens_per_s"]
    monkeypatch.setattr(recommend, "liger_available", lambda: True)
    monkeypatch.setattr(recommend, "varlen_available", lambda: True)
    hp = recommend_hyperparams(5000, "lora", bf16_ok=True)
    assert hp["packing"] is True and hp["use_liger_kernel"] is True and hp["attn_implementation"] == "varlen"
    reason = hp.items["attn_implementation"].reason
    assert f"{a['varlen_tokens_per_s']:,.0f}" in reason and a["source"] in reason
    monkeypatch.setattr(recommend, "varlen_available", lambda: False)
    assert recommend_hyperparams(5000, "lora", bf16_ok=True)["attn_implementation"] == "sdpa"


def test_liger_only_when_importable_and_never_on_cpu(monkeypatch):
    from ftwiz.core import recommend

    monkeypatch.setattr(recommend, "liger_available", lambda: False)
    without = recommend_hyperparams(5000, "qlora", bf16_ok=True)
    assert without["use_liger_kernel"] is False and "not installed" in without.items["use_liger_kernel"].reason
    assert without["packing"] is True
    monkeypatch.setattr(recommend, "liger_available", lambda: True)
    cpu = recommend_hyperparams(5000, "lora", bf16_ok=False, cpu_only=True)
    assert cpu["use_liger_kernel"] is False and cpu["packing"] is False


def test_liger_is_found_without_importing_torch():
    import subprocess
    import sys

    code = ("import sys; from ftwiz.core.recommend import recommend_hyperparams; "
            "recommend_hyperparams(5000, 'lora', True); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_liger_lets_a_bigger_layout_fit(llama8b):
    """The fused cross-entropy drops the logits (12 B x vocab per token): more fits in 80 GB."""
    plain = fit(llama8b, "A100 80GB", seqs=(2048,))
    liger = fit(llama8b, "A100 80GB", seqs=(2048,), liger=True)
    assert liger.micro_batch > plain.micro_batch or (plain.grad_ckpt and not liger.grad_ckpt)
