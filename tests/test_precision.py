"""precision="auto": the signal encoder's precision chosen from CPU flags, agreement and a timed
calibration, cached per machine. Flags and timings are mocked: nothing here depends on the CPU."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from sleeplm.errors import SleepLMRequestError
from sleeplm.model import precision
from sleeplm.model.embedding_cache import embedding_cache_path
from sleeplm.model.inference import SleepLM

DATA = Path(__file__).parent / "data"
GOOD = precision.Agreement(min_cosine=0.9995, retrieval_overlap=10, top_k=10, captions_identical=True)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def fixture_a():
    return torch.load(DATA / "fixture_a.pt", weights_only=True)


@pytest.fixture(autouse=True)
def auto(tmp_path, monkeypatch):
    """precision "auto" really means the machine's choice here, with a fresh calibration cache."""
    monkeypatch.delenv(precision.PRECISION_ENV, raising=False)
    monkeypatch.setenv("SLEEPLM_CACHE", str(tmp_path / "cache"))


def machine(monkeypatch, flags: set[str] | None, speedup: float, agreed: precision.Agreement | None = GOOD):
    """Pretend to be a CPU with `flags` on which the candidate runs `speedup` x fp32 and agrees as `agreed`
    (None: the real agreement on the probe)."""
    monkeypatch.setattr(precision, "_cpu_flags", lambda: flags)
    monkeypatch.setattr(precision, "relative_speed", lambda reference, candidate: (speedup, reference(), candidate()))
    if agreed is not None:
        monkeypatch.setattr(precision, "agreement", lambda *args: agreed)


def load(fixture_a, precision_: str = "auto") -> SleepLM:
    return SleepLM.from_config(fixture_a["config"], state_dict=fixture_a["state_dict"], precision=precision_)


def quantized(module: torch.nn.Module) -> bool:
    return any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in module.modules())


def test_fast_bf16_cpu_runs_the_encoder_in_bf16(fixture_a, monkeypatch):
    machine(monkeypatch, {"avx2", "avx512f", "avx512_bf16", "amx_bf16"}, 2.8)
    model = load(fixture_a)
    choice = model.precision
    assert (choice.precision, choice.caption_precision, choice.requested) == ("bf16", "bf16", "auto")
    assert choice.reason == "bf16: CPU with amx_bf16, avx512_bf16, 2.8x fp32, min cosine 0.9995"
    encoder = model.network.biosignals  # one encoder for embeddings and captions: the fp32 one is gone
    assert encoder.embed_projection.weight.dtype == torch.bfloat16 and encoder.ln_final.weight.dtype == torch.float32
    assert {p.dtype for p in model.network.text_decoder.parameters()} == {torch.float32}
    emb = model.encode_signals(fixture_a["signals"])
    assert emb.dtype == np.float32 and (emb * fixture_a["signal_emb_norm"].numpy()).sum(1).min() > 0.99
    assert len(model.caption(fixture_a["signals"][:2], "brain", max_len=8, min_len=4)) == 2


def test_the_replaced_fp32_encoder_gives_its_memory_mapped_pages_back(fixture_a, tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(SleepLM.from_config("sleeplm_tiny", precision="fp32").network.state_dict(), path)
    model = SleepLM.from_pretrained(path, config="sleeplm_tiny", device="cpu", precision="fp32")  # memory-mapped
    signals = fixture_a["signals"][:2]
    text, ids = model.encode_text("deep sleep"), model.caption_ids(signals, "brain", max_len=8, min_len=4)
    embeddings = model.encode_signals(signals)
    old = model.network.biosignals
    dropped = precision.release_encoder(model.network, precision.encoder_in(old, "bf16"))
    assert dropped > 0 and model.network.biosignals is not old
    assert model.network.biosignals.embed_projection.weight.dtype == torch.bfloat16
    # What the network still holds is untouched; dropped pages read again come back from the file, unchanged.
    np.testing.assert_array_equal(model.encode_text("deep sleep"), text)
    model.network.biosignals = old
    assert [list(i) for i in model.caption_ids(signals, "brain", max_len=8, min_len=4)] == [list(i) for i in ids]
    np.testing.assert_array_equal(model.encode_signals(signals), embeddings)


def test_avx2_cpu_runs_int8_dynamic_linear_layers_where_faster(fixture_a, monkeypatch):
    machine(monkeypatch, {"avx", "avx2", "fma"}, 2.1, precision.Agreement(0.9993, 9, 10, True))
    model = load(fixture_a)
    assert model.precision.precision == "int8"
    assert model.precision.reason == "int8: AVX2 CPU without fast bf16, 2.1x fp32, min cosine 0.9993"
    assert quantized(model.network.biosignals) and model.checkpoint_id.endswith("-int8")
    emb = model.encode_signals(fixture_a["signals"])
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert (emb * fixture_a["signal_emb_norm"].numpy()).sum(1).min() > 0.99


def test_a_candidate_that_is_not_faster_is_not_used(fixture_a, monkeypatch):
    machine(monkeypatch, {"avx2", "fma"}, 0.8)
    model = load(fixture_a)
    assert model.precision.precision == "fp32" and model.precision.rejected == {"int8": "0.80x fp32: not faster"}
    assert "int8 not used (0.80x fp32: not faster)" in model.precision.reason
    assert not quantized(model.network) and model.checkpoint_id.endswith("-fp32")


@pytest.mark.parametrize("agreed, why", [
    (precision.Agreement(0.9950, 10, 10, True), "min cosine 0.99500 < 0.999"),
    (precision.Agreement(0.9999, 7, 10, True), "top-10 retrieval overlap 7/10 < 9/10"),
])
def test_agreement_failure_keeps_fp32_and_records_why(fixture_a, monkeypatch, agreed, why):
    machine(monkeypatch, {"avx2", "fma"}, 2.2, agreed)
    model = load(fixture_a)
    assert model.precision.precision == "fp32" and model.precision.caption_precision == "fp32"
    assert model.precision.rejected == {"int8": f"disagrees with fp32: {why}"} and why in model.precision.reason
    state = model.network.state_dict()
    for name, tensor in fixture_a["state_dict"].items():  # the fp32 weights, unchanged
        assert torch.equal(state[name], tensor), name
    reference = fixture_a["signal_emb_norm"].numpy()
    assert np.abs(model.encode_signals(fixture_a["signals"]) - reference).max() <= 1e-5


def test_a_path_that_changes_captions_is_used_for_embeddings_only(fixture_a, monkeypatch):
    machine(monkeypatch, {"avx2", "fma"}, 2.2, precision.Agreement(0.9996, 10, 10, False))
    model = load(fixture_a)
    assert (model.precision.precision, model.precision.caption_precision) == ("int8", "fp32")
    assert "captions fp32 (int8 changed greedy caption ids)" in model.precision.reason
    assert not quantized(model.network.biosignals)  # captions read the fp32 encoder's memory
    reference = SleepLM.from_config(fixture_a["config"], state_dict=fixture_a["state_dict"], precision="fp32")
    signals = fixture_a["signals"][:2]
    assert [list(ids) for ids in model.caption_ids(signals, "brain", max_len=8, min_len=4)] == \
        [list(ids) for ids in reference.caption_ids(signals, "brain", max_len=8, min_len=4)]


def scores_with(swap: float) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 scores of 16 epochs for 2 queries, 0.0006 apart in fp32's order for query 0 (epoch 9 is its
    10th, epoch 10 its 11th), and a candidate's scores where epoch 10 scores `swap` above epoch 9."""
    scores32 = torch.stack([0.5 - 6e-4 * torch.arange(16.0), 0.2 + 1e-2 * torch.arange(16.0)], dim=1)
    candidate = scores32.clone()
    candidate[10, 0] = candidate[9, 0] + swap
    return candidate, scores32


def test_a_swap_at_the_top_k_boundary_within_the_tolerance_is_a_tie():
    # Epochs 9 and 10 are 0.0006 apart in fp32 (< SCORE_TOLERANCE 0.001): the candidate putting 10 above 9 is a tie.
    candidate, scores32 = scores_with(1e-4)
    assert precision.retrieval_overlap(candidate, scores32) == (10, 9)
    assert precision.retrieval_overlap(scores32, scores32) == (10, 10)
    # The tolerance is fixed and judged on fp32's scores: epoch 11 (0.0012 below the 10th) entering is not a tie...
    candidate, scores32 = scores_with(0.0)
    candidate[11, 0] = candidate[9, 0] + 1e-4
    candidate[10, 0] = scores32[10, 0]
    assert precision.retrieval_overlap(candidate, scores32) == (9, 9)
    # ...nor is the candidate dropping fp32's best epoch for its 11th, however close the candidate's own scores are.
    candidate, scores32 = scores_with(1e-4)
    candidate[0, 0] = scores32[15, 0]
    candidate[9, 0] = scores32[9, 0]
    assert precision.retrieval_overlap(candidate, scores32) == (9, 9)


def test_swaps_beyond_the_tolerance_fail_the_agreement():
    scores32 = torch.stack([0.5 - 1e-2 * torch.arange(16.0), 0.2 + 1e-2 * torch.arange(16.0)], dim=1)  # 0.01 apart
    candidate = scores32.clone()
    candidate[[10, 11], 0] = scores32[0, 0] + torch.tensor([1e-3, 2e-3])  # fp32's 11th and 12th come in on top
    tie_aware, exact = precision.retrieval_overlap(candidate, scores32)
    assert (tie_aware, exact) == (8, 8)
    why = precision.Agreement(0.9999, tie_aware, 10, True, exact).failure()
    assert why == "top-10 retrieval overlap 8/10 < 9/10"
    tied = precision.Agreement(0.9999, 8, 10, True, exact_overlap=6)
    assert tied.failure() == "top-10 retrieval overlap 8/10 (6/10 exact; the rest tie within 0.001) < 9/10"


def test_ties_within_the_tolerance_let_bf16_be_chosen_and_say_so(fixture_a, monkeypatch):
    machine(monkeypatch, {"avx2", "avx512f", "avx512_bf16", "amx_bf16"}, 2.8,
            precision.Agreement(0.99999, 10, 10, True, exact_overlap=7))
    choice = load(fixture_a).precision
    assert choice.precision == "bf16"
    assert choice.reason == ("bf16: CPU with amx_bf16, avx512_bf16, 2.8x fp32, min cosine 1.0000, "
                             "top-10 overlap 10/10 (7/10 exact; the rest tie within 0.001)")
    assert choice.to_dict()["agreement"]["exact_overlap"] == 7


def test_a_calibration_cached_by_the_previous_version_is_not_reused(fixture_a, monkeypatch, tmp_path):
    machine(monkeypatch, {"avx2", "fma"}, 2.1)
    old = precision.PrecisionChoice("fp32", "fp32", "auto", "AVX2 CPU without fast bf16", "fp32: old rule", 2.1,
                                    precision.Agreement(0.9999, 7, 10, True), {"int8": "old"})
    data = old.to_dict()
    del data["agreement"]["exact_overlap"]  # what version 1 wrote
    assert precision.PrecisionChoice.from_dict(data).agreement.exact_overlap is None  # still readable
    monkeypatch.setattr(precision, "CACHE_VERSION", 1)
    key = precision.calibration_key(load(fixture_a, "fp32").weights_id, "cpu", "auto")
    folder = tmp_path / "cache" / "precision"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{key}.json").write_text(json.dumps(data))
    monkeypatch.setattr(precision, "CACHE_VERSION", 2)
    choice = load(fixture_a).precision
    assert not choice.cached and choice.precision == "int8"


def test_cuda_candidates_bf16_else_fp16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert precision.candidate_for("cuda") == ("bf16", "CUDA GPU with bf16")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert precision.candidate_for("cuda:0") == ("fp16", "CUDA GPU without bf16")
    good = precision.decide("auto", "fp16", "CUDA GPU without bf16", GOOD, 6.0)
    assert (good.precision, good.reason) == ("fp16", "fp16: CUDA GPU without bf16, 6.0x fp32, min cosine 0.9995")
    assert precision.candidate_for("mps") == (None, "device 'mps': fp32 only")


def test_cpu_without_flags_or_int8_engine(monkeypatch):
    monkeypatch.setattr(precision, "int8_engine", lambda: None)
    candidate, basis = precision.candidate_for("cpu", {"avx2"})
    assert candidate is None and "without fast bf16 or an int8 engine" in basis


def test_an_explicit_precision_is_honoured_with_a_warning_when_slower(fixture_a, monkeypatch, caplog):
    machine(monkeypatch, {"avx2", "fma"}, 0.02)  # bf16 emulated on an AVX2 CPU: ~60x slower
    with caplog.at_level(logging.WARNING, logger="sleeplm.model.precision"):
        model = load(fixture_a, "bf16")
    assert model.precision.precision == "bf16" and model.precision.requested == "bf16"
    assert "SLOWER than fp32 on this machine (0.02x)" in model.precision.reason
    assert "bf16 was asked for but runs the encoder at 0.02x fp32" in caplog.text
    monkeypatch.setattr(precision, "calibrate", lambda *a, **k: pytest.fail("fp32 asked for: nothing to calibrate"))
    assert load(fixture_a, "fp32").precision.reason == "fp32: asked for"


def test_the_environment_sets_auto_and_bad_values_are_refused(fixture_a, monkeypatch):
    machine(monkeypatch, {"avx2", "fma"}, 0.5)
    monkeypatch.setenv(precision.PRECISION_ENV, "int8")
    assert load(fixture_a).precision.precision == "int8"  # auto defers to $SLEEPLM_PRECISION
    assert load(fixture_a, "fp32").precision.precision == "fp32"  # an explicit argument wins
    with pytest.raises(SleepLMRequestError, match="auto, fp32, bf16 or int8"):
        load(fixture_a, "half")
    monkeypatch.setenv(precision.PRECISION_ENV, "fp8")
    with pytest.raises(SleepLMRequestError, match="SLEEPLM_PRECISION"):
        load(fixture_a)


def test_the_calibration_is_cached_per_machine_and_checkpoint(fixture_a, monkeypatch, tmp_path):
    machine(monkeypatch, {"avx2", "fma"}, 2.1)
    calls = []
    real = precision.calibrate
    monkeypatch.setattr(precision, "calibrate", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = load(fixture_a)
    assert len(calls) == 1 and not first.precision.cached and first.precision.calibration_s is not None
    assert len(list((tmp_path / "cache" / "precision").glob("*.json"))) == 1
    monkeypatch.setattr(precision, "relative_speed", lambda *a, **k: pytest.fail("re-timed on a later load"))
    second = load(fixture_a)
    assert len(calls) == 1 and second.precision.cached
    assert (second.precision.precision, second.precision.reason) == ("int8", first.precision.reason)
    assert quantized(second.network.biosignals)
    monkeypatch.setattr(precision, "relative_speed", lambda reference, candidate: (2.1, reference(), candidate()))
    SleepLM.from_config("sleeplm_tiny")  # another checkpoint: calibrated for itself
    assert len(calls) == 2
    monkeypatch.setattr(precision, "_cpu_model", lambda: "another CPU")  # another machine model: again
    load(fixture_a)
    assert len(calls) == 3


def test_embedding_cache_keys_differ_by_precision(fixture_a, monkeypatch, bare_recording):
    machine(monkeypatch, {"avx2", "fma"}, 0.5)
    rec = bare_recording(3)
    paths = {name: embedding_cache_path(load(fixture_a, name), rec) for name in ("fp32", "bf16", "int8")}
    assert len(set(paths.values())) == 3
    assert all(path.name.endswith(f"-{name}.npy") for name, path in paths.items())


def test_real_agreement_on_the_probe_decides_consistently(fixture_a, monkeypatch):
    machine(monkeypatch, {"avx2", "fma"}, 2.0, agreed=None)  # the agreement is computed for real
    model = load(fixture_a)
    agreed = model.precision.agreement
    assert 0.99 < agreed.min_cosine <= 1.0001 and agreed.top_k == 10 and 0 <= agreed.retrieval_overlap <= 10
    assert model.precision.precision == ("fp32" if agreed.failure() else "int8")
    assert model.precision.caption_precision == ("int8" if model.precision.precision == "int8"
                                                 and agreed.captions_identical else "fp32")


def test_probe_and_queries_are_fixed():
    x = precision.probe_epochs(precision.PROBE_EPOCHS, 10, 1920)
    assert torch.equal(x, precision.probe_epochs(precision.PROBE_EPOCHS, 10, 1920)) and torch.isfinite(x).all()
    assert len(precision.AGREEMENT_QUERIES) >= 8 and precision.TOP_K == 10 and precision.MIN_OVERLAP == 9


@pytest.mark.parametrize("command", [["inspect", "f.edf"], ["analyze", "f.edf", "--out", "o"], ["cohort", "d", "--out", "o"],
                                     ["ask", "f.edf", "q"], ["serve"]])
def test_every_command_takes_precision(command):
    from cli import build_parser

    for value in precision.PRECISIONS:
        assert build_parser().parse_args([*command, "--precision", value]).precision == value
    assert build_parser().parse_args(command).precision is None  # $SLEEPLM_PRECISION, else auto
    with pytest.raises(SystemExit):
        build_parser().parse_args([*command, "--precision", "fp16"])


def test_inspect_prints_the_precision_and_why(small_edf, tmp_path, monkeypatch, capsys):
    from cli import main

    machine(monkeypatch, {"avx2", "fma"}, 2.1)
    monkeypatch.delenv("SLEEPLM_CHECKPOINT", raising=False)
    assert main(["inspect", str(small_edf)]) == 0
    assert ("SleepLM precision: not chosen yet, no weights named (--checkpoint PATH); auto tries int8 here "
            "(AVX2 CPU without fast bf16;") in capsys.readouterr().out
    weights = tmp_path / "weights.pt"
    weights.write_bytes(b"stands for a checkpoint")  # loading is replaced by the tiny model below
    monkeypatch.setattr(SleepLM, "from_pretrained",
                        classmethod(lambda cls, *a, **k: cls.from_config("sleeplm_tiny", precision=k.get("precision", "auto"))))
    assert main(["--checkpoint", str(weights), "inspect", str(small_edf), "--precision", "int8"]) == 0
    out = capsys.readouterr().out
    assert "SleepLM precision: int8: asked for, 2.1x fp32, min cosine 0.9995" in out


def test_checkpoint_and_precision_options_do_not_leak_between_cli_calls(small_edf, tmp_path, monkeypatch, capsys):
    """--checkpoint/--precision go down to the loader as arguments: a later call in the same process
    (and the process environment) never sees an earlier call's options; the variables are read, not written."""
    import app
    from cli import main

    machine(monkeypatch, {"avx2", "fma"}, 2.1)
    monkeypatch.delenv("SLEEPLM_CHECKPOINT", raising=False)
    loads = []

    def from_pretrained(cls, source=None, *args, precision="auto", **kwargs):
        loads.append((source, precision))
        return cls.from_config("sleeplm_tiny", precision=precision)

    monkeypatch.setattr(SleepLM, "from_pretrained", classmethod(from_pretrained))
    first, second = tmp_path / "first.pt", tmp_path / "second.pt"
    assert main(["--checkpoint", str(first), "inspect", str(small_edf), "--precision", "int8"]) == 0
    assert "SleepLM precision: int8: asked for" in capsys.readouterr().out
    assert main(["inspect", str(small_edf)]) == 0  # no weights named, auto: nothing of the first call remains
    assert "no weights named (--checkpoint PATH); auto tries int8 here" in capsys.readouterr().out
    assert main(["--checkpoint", str(second), "ask", str(small_edf), "hi", "--llm", "none", "--precision", "fp32"]) == 0
    assert main(["--checkpoint", str(first), "ask", str(small_edf), "hi", "--llm", "none"]) == 0
    assert loads == [(str(first), "int8"), (str(second), "fp32"), (str(first), "auto")]
    served = {}
    monkeypatch.setattr(app, "serve", lambda **kwargs: served.update(kwargs))
    assert main(["--checkpoint", str(second), "serve", "--precision", "bf16"]) == 0
    model, _ = app._load_sleeplm(checkpoint=served["checkpoint"], precision=served["precision"])  # what serve loads
    assert loads[-1] == (str(second), "bf16") and model.precision.requested == "bf16"
    assert "SLEEPLM_CHECKPOINT" not in os.environ and precision.PRECISION_ENV not in os.environ
    monkeypatch.setenv("SLEEPLM_CHECKPOINT", str(second))  # the user's configuration is still read
    monkeypatch.setenv(precision.PRECISION_ENV, "fp32")
    assert main(["inspect", str(small_edf)]) == 0
    assert "SleepLM precision: fp32: asked for" in capsys.readouterr().out and loads[-1] == (str(second), "auto")


def test_precision_is_in_summary_json_the_trace_and_the_status(fixture_a, monkeypatch, tmp_path):
    from assistant.session import loaded_status
    from assistant.trace import trace_metadata, write_trace_json
    from sleeplm.report.analyze_dir import write_summary_json

    machine(monkeypatch, {"avx2", "fma"}, 2.1)
    model = load(fixture_a)
    assert loaded_status(model) == "SleepLM weights loaded; precision int8: AVX2 CPU without fast bf16, 2.1x fp32, " \
                                   "min cosine 0.9995"
    trace = json.loads(write_trace_json([], tmp_path / "trace.json", trace_metadata(model)).read_text())
    assert trace["metadata"]["sleeplm_precision"]["precision"] == "int8"
    assert trace["metadata"]["sleeplm_precision"]["agreement"]["min_cosine"] == 0.9995
    assert json.loads(write_trace_json([], tmp_path / "t.json", trace_metadata(None)).read_text())["metadata"] == \
        {"sleeplm_precision": None}

    class Analysis:  # the figures summary.json reads, without a night behind them
        summary = {"not_assessable": {}}
        scorings = {}

    from sleeplm.measure.summary import EXPORT_KEYS

    Analysis.summary.update(dict.fromkeys(EXPORT_KEYS))
    summary = json.loads(write_summary_json(Analysis(), tmp_path / "summary.json", model.precision.to_dict()).read_text())
    assert summary["sleeplm_precision"]["reason"] == model.precision.reason
    assert "sleeplm_precision" not in json.loads(write_summary_json(Analysis(), tmp_path / "s.json").read_text())
