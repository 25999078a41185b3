"""``smoltui bench``: the numbers a user gets, on the scripted backend, the bundled GGUF and synthetic models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smoltui.backends.base import GenerationParams
from smoltui.backends.scripted import ScriptedBackend
from smoltui.benchmarking.measure import filler, prompt_of, run_bench
from smoltui.errors import ConfigError
from tests.test_cli import assert_one_line_error, run

SUMMARY_KEYS = {
    "backend",
    "model",
    "load_s",
    "ttft_s",
    "prefill_tok_s",
    "decode_tok_s",
    "prompt_tokens",
    "completion_tokens",
    "prompt_tokens_target",
    "new_tokens_target",
    "context_size",
    "rss_before_load_mb",
    "rss_after_load_mb",
    "rss_mb",
    "peak_rss_mb",
    "gpu_peak_mb",
    "runs",
    "warmup",
    "python",
    "machine",
}
RUN_KEYS = {
    "prompt_tokens",
    "cached_tokens",
    "completion_tokens",
    "ttft_s",
    "prefill_tok_s",
    "decode_tok_s",
    "total_s",
    "stop_reason",
}


def check_report(report: dict, *, runs: int, new_tokens: int) -> None:
    assert set(report) == SUMMARY_KEYS
    assert len(report["runs"]) == runs and all(
        set(r) == RUN_KEYS for r in [*report["runs"], report["warmup"]]
    )
    assert report["load_s"] >= 0 and report["ttft_s"] > 0
    assert report["prefill_tok_s"] > 0 and report["decode_tok_s"] > 0
    assert 1 < report["completion_tokens"] <= new_tokens
    assert report["peak_rss_mb"] >= report["rss_after_load_mb"] > 0


def test_filler_differs_per_seed_and_grows_by_appending() -> None:
    assert filler(30, 1) != filler(30, 2)
    assert filler(40, 1).startswith(filler(30, 1))


async def test_the_prompt_is_sized_in_the_backends_tokens() -> None:
    backend = ScriptedBackend()
    params = GenerationParams()
    for target in (50, 300, 1000):
        tokens = await backend.count_tokens(await prompt_of(backend, target, seed=3, params=params), params)
        assert target - max(2, target // 100) <= tokens <= target


async def test_run_bench_on_the_scripted_backend() -> None:
    reply = " ".join(f"word{i}" for i in range(40))
    report = await run_bench(
        ScriptedBackend([reply], delay_s=0.001), "scripted", prompt_tokens=200, new_tokens=20, runs=2
    )
    data = report.as_dict()
    check_report(data, runs=2, new_tokens=20)
    assert (data["backend"], data["model"], data["prompt_tokens_target"]) == ("scripted", "scripted", 200)
    assert all(r["stop_reason"] == "length" and r["completion_tokens"] == 20 for r in data["runs"])
    assert data["gpu_peak_mb"] is None  # torch was never imported for this backend
    table = report.table()
    assert "TTFT" in table and "decode" in table and "tok/s" in table and "peak" in table


async def test_a_prompt_that_does_not_fit_the_context_says_so() -> None:
    with pytest.raises(
        ConfigError, match=r"--prompt-tokens 4000 \+ --new-tokens 200 do not fit the context of 4096"
    ):
        await run_bench(ScriptedBackend(), "scripted", prompt_tokens=4000, new_tokens=200, runs=1)


def test_bench_command_on_the_scripted_model(cli_env: dict[str, str]) -> None:
    result = run(
        cli_env,
        "bench",
        "--model",
        "scripted",
        "--json",
        "--prompt-tokens",
        "64",
        "--new-tokens",
        "8",
        "--runs",
        "2",
    )
    assert result.returncode == 0, result.stderr
    check_report(json.loads(result.stdout), runs=2, new_tokens=8)
    result = run(
        cli_env, "bench", "-m", "scripted", "--runs", "1", "--prompt-tokens", "32", "--new-tokens", "4"
    )
    assert result.returncode == 0 and "scripted · scripted" in result.stdout and "TTFT" in result.stdout


def test_bench_argument_errors_are_one_line(cli_env: dict[str, str]) -> None:
    assert_one_line_error(
        run(cli_env, "bench", "-m", "scripted", "--runs", "0"), 2, "--runs: 0 is too small"
    )
    assert_one_line_error(
        run(cli_env, "bench", "--backend", "openai", "--synthetic"), 3, "--synthetic builds a local model"
    )


@pytest.mark.llama
def test_bench_command_on_the_bundled_gguf(cli_env: dict[str, str], bundled_model: Path) -> None:
    pytest.importorskip("llama_cpp")
    result = run(
        cli_env,
        "bench",
        "--json",
        "--prompt-tokens",
        "96",
        "--new-tokens",
        "8",
        "--runs",
        "1",
        "--threads",
        "2",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    check_report(report, runs=1, new_tokens=8)
    assert report["backend"] == "llama.cpp" and "bundled" in report["model"]
    assert 90 <= report["prompt_tokens"] <= 96
    # Prompts differ from their first words on, so each run prefills nearly all of its prompt.
    assert report["runs"][0]["cached_tokens"] < 40


@pytest.mark.llama
def test_bench_synthetic_builds_a_smollm3_shaped_gguf_once(
    cli_env: dict[str, str], home: Path, bundled_model: Path
) -> None:
    pytest.importorskip("llama_cpp")
    pytest.importorskip("gguf")
    args = (
        "bench",
        "--synthetic",
        "tiny",
        "--json",
        "--prompt-tokens",
        "128",
        "--new-tokens",
        "8",
        "--runs",
        "1",
    )
    result = run(cli_env, *args, timeout=300)
    assert result.returncode == 0, result.stderr
    model = home / "cache" / "synthetic" / "smollm3-tiny-random-q4_k_m.gguf"
    assert model.is_file() and "building a random-weight SmolLM3-tiny GGUF" in result.stderr
    report = json.loads(result.stdout)
    check_report(report, runs=1, new_tokens=8)
    assert report["model"] == model.name
    # SmolLM3's template (the system header with its date and reasoning mode) was rendered.
    assert report["prompt_tokens"] > 100
    built = model.stat().st_mtime_ns
    again = run(cli_env, *args, timeout=300)
    assert again.returncode == 0 and "building" not in again.stderr and model.stat().st_mtime_ns == built


def test_bench_synthetic_transformers_model(cli_env: dict[str, str], home: Path, bundled_model: Path) -> None:
    """The tokenizer borrows the bundled model's vocabulary, like the synthetic GGUF's."""
    pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    result = run(
        cli_env,
        "bench",
        "--backend",
        "transformers",
        "--synthetic",
        "tiny",
        "--json",
        "--prompt-tokens",
        "128",
        "--new-tokens",
        "8",
        "--runs",
        "1",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    folder = home / "cache" / "synthetic" / "smollm3-tiny-random-hf"
    config = json.loads((folder / "config.json").read_text())
    assert (config["model_type"], config["vocab_size"], config["hidden_size"]) == ("smollm3", 128256, 256)
    assert config["no_rope_layers"] == [1, 1, 1, 0]
    report = json.loads(result.stdout)
    check_report(report, runs=1, new_tokens=8)
    assert report["backend"] == "transformers" and report["prompt_tokens"] > 100


def test_the_3b_shape_is_smollm3s_published_config() -> None:
    pytest.importorskip("transformers")
    from smoltui.benchmarking.synthetic_hf import SMOLLM3_3B, config_for

    config = config_for(SMOLLM3_3B)
    reference = Path(__file__).resolve().parents[2] / "shared" / "reference" / "smollm3" / "config.json"
    if reference.is_file():
        published = json.loads(reference.read_text())
        ours = config.to_dict()
        for key in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "max_position_embeddings",
            "rms_norm_eps",
            "no_rope_layers",
            "bos_token_id",
            "eos_token_id",
            "pad_token_id",
        ):
            assert ours[key] == published[key], key
        # transformers 5 keeps rope_theta inside rope_parameters
        theta = (ours.get("rope_parameters") or {}).get("rope_theta", ours.get("rope_theta"))
        assert theta == published["rope_theta"]
    assert config.no_rope_layers[:4] == [1, 1, 1, 0] and len(config.no_rope_layers) == 36
