"""The predictor: tokens, constrained beam search (valid by construction), checkpoints, the CLI."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from kptune.device import DeviceInfo  # noqa: E402
from kptune.kernel import get_family  # noqa: E402
from kptune.predict import checkpoint  # noqa: E402
from kptune.predict.beam import all_allowed, beam_search, constrained_allowed  # noqa: E402
from kptune.predict.launch import FEATURES, Launch, lookahead_rows  # noqa: E402
from kptune.predict.models import LSTMBeamDecoder, ModelConfig, build_model, source_of  # noqa: E402
from kptune.predict.tokenizer import (  # noqa: E402
    BOS,
    PLAIN_SOURCE_VOCAB_SIZE,
    SOURCE_LENGTH,
    SOURCE_VOCAB,
    TargetVocab,
    encode_source,
    source_words,
)
from kptune.problem import Conv2dProblem  # noqa: E402

GPU = DeviceInfo("cupy", "0", "NVIDIA H200", "nvidia", "gpu", "d", "c", 1024, 49152, 65536, 132, 32, 50 << 20, 1 << 37)
FAMILY = get_family("conv2d_fwd")
VOCAB = TargetVocab.of(FAMILY.space)
SMALL = ModelConfig(embed=16, hidden=32, seed=0)


def _model(arch: str = "lstm", gemm_view: bool = True, lookahead: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(arch=arch, embed=16, hidden=32, gemm_view=gemm_view, lookahead=lookahead)
    model = build_model(cfg, VOCAB.size).eval()
    if lookahead:  # an untrained model's lookahead weights are small: make its launch scores count
        with torch.no_grad():
            model.look.weight.mul_(20.0)
    return model


def _launch(problem: Conv2dProblem) -> Launch:
    return Launch(problem, GPU.compute_units, VOCAB.names)


def test_unseen_sizes_land_between_their_neighbours() -> None:
    words = source_words(Conv2dProblem.parse("n=3,c=96,h=57,w=57,k=1000,r=3,s=3,pad=1"))
    assert "c:e6" in words and "c:q2" in words  # 96 = 2^6.58
    assert "k:e9" in words and "k:q3" in words  # 1000 = 2^9.97
    big = encode_source(Conv2dProblem.parse("n=1,c=3,h=7,w=7,k=8,r=11,s=11,pad=9"))
    assert len(big) == SOURCE_LENGTH and all(0 <= i < len(SOURCE_VOCAB) for i in big)
    assert "r=2^3" in source_words(Conv2dProblem.parse("n=1,c=3,h=16,w=16,k=8,r=11,s=11,pad=5"))


def test_the_source_carries_the_gemm_view_after_the_plain_words() -> None:
    problem = Conv2dProblem.parse("n=32,c=64,h=56,w=56,k=64,r=3,s=3,pad=1")
    words = source_words(problem)
    # gemm_m = 32 * 56 * 56 = 2^16.6, gemm_k = 64 * 9 = 2^9.17, outputs = gemm_m * 64 = 2^22.6
    assert words[-6:] == ["gemm_m:e16", "gemm_m:q2", "gemm_k:e9", "gemm_k:q0", "outputs:e22", "outputs:q2"]
    plain = encode_source(problem, gemm_view=False)
    assert encode_source(problem)[: len(plain)] == plain and max(plain) < PLAIN_SOURCE_VOCAB_SIZE
    huge = encode_source(Conv2dProblem.parse("n=64,c=1024,h=128,w=128,k=1024,r=7,s=7,pad=3"))  # 2^30 outputs
    assert len(huge) == SOURCE_LENGTH and max(huge) < len(SOURCE_VOCAB)


def test_a_checkpoint_from_before_the_gemm_view_loads_and_reads_plain_sources(tmp_path: Path) -> None:
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    torch.manual_seed(0)
    cfg = ModelConfig(embed=16, hidden=32, gemm_view=False, lookahead=False)
    old = build_model(cfg, VOCAB.size).eval()
    checkpoint.save(tmp_path / "new.safetensors", old, cfg, VOCAB,
                    {"family": FAMILY.name, "source_hash": FAMILY.source_hash, "device": GPU.key,
                     "device_limits": GPU.limits(), "dataset_hash": "x", "training": {}})  # fmt: skip
    with safe_open(str(tmp_path / "new.safetensors"), framework="pt") as f:
        header = json.loads(f.metadata()["kptune"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    del header["model"]["gemm_view"], header["model"]["lookahead"]  # as written before the settings existed
    assert header["source_vocab_size"] == PLAIN_SOURCE_VOCAB_SIZE
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata={"kptune": json.dumps(header)})
    pred = checkpoint.load(tmp_path / "old.safetensors", FAMILY.name, FAMILY.source_hash)
    problem = Conv2dProblem.parse("n=8,c=64,h=28,w=28,k=128,r=3,s=3,pad=1")
    assert pred.cfg.gemm_view is False and source_of(pred.model, problem) == encode_source(problem, gemm_view=False)
    assert pred.cfg.lookahead is False and pred.model.look is None
    allowed = constrained_allowed(FAMILY.space, problem, GPU)
    assert beam_search(pred.model, VOCAB, source_of(pred.model, problem), allowed, 4, 3)
    header["source_vocab_size"] = len(SOURCE_VOCAB)  # claims the GEMM view's words, weights without them
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata={"kptune": json.dumps(header)})
    with pytest.raises(checkpoint.CheckpointError, match="source vocabulary"):
        checkpoint.load(tmp_path / "bad.safetensors")


def test_target_round_trip() -> None:
    config = FAMILY.space.configs(Conv2dProblem.parse("n=32,c=64,h=56,w=56,k=64,r=3,s=3,pad=1"), GPU)[7]
    tokens = VOCAB.encode(config)
    assert tokens[0] == 1 and tokens[-1] == 2 and VOCAB.decode(tokens[1:-1]) == config


SIZES = st.sampled_from([1, 2, 3, 7, 8, 13, 16, 28, 32, 56, 64, 96, 128, 192, 256, 512])


@settings(max_examples=25, deadline=None)
@given(n=SIZES, c=SIZES, hw=st.sampled_from([1, 5, 7, 14, 28, 56]), k=SIZES, r=st.sampled_from([1, 3, 5]),
       stride=st.sampled_from([1, 2]), fp16=st.booleans())  # fmt: skip
def test_constrained_beam_returns_only_valid_configs(n: int, c: int, hw: int, k: int, r: int, stride: int,
                                                     fp16: bool) -> None:  # fmt: skip
    pad = r // 2
    problem = Conv2dProblem.parse(f"n={n},c={c},h={hw},w={hw},k={k},r={r},s={r},pad={pad},stride={stride},"
                                  f"dtype={'fp16' if fp16 else 'fp32'}")  # fmt: skip
    allowed = constrained_allowed(FAMILY.space, problem, GPU)
    for model in (_MODEL, _LOOKAHEAD):
        found = beam_search(model, VOCAB, encode_source(problem), allowed, 4, 3, launch=_launch(problem))
        assert found and all(FAMILY.space.valid(problem, GPU, c.config) for c in found)
        assert len({c.config for c in found}) == len(found)
        assert [c.log_prob for c in found] == sorted((c.log_prob for c in found), reverse=True)


_MODEL = _model()
_LOOKAHEAD = _model(lookahead=True)


def test_capped_keeps_the_best_with_at_most_half_of_one_value_while_others_remain() -> None:
    from kptune.predict.beam import _capped

    ranked = [("a", 9), ("a", 8), ("a", 7), ("b", 6), ("a", 5), ("c", 4)]
    values = [ord(v) for v, _ in ranked]
    assert _capped(ranked, 4, values) == [("a", 9), ("a", 8), ("b", 6), ("c", 4)]
    assert _capped(ranked[:4], 4, values[:4]) == ranked[:4]  # too few others: filled, order kept
    assert _capped(ranked, 1, values) == [("a", 9)]


@settings(max_examples=25, deadline=None)
@given(n=SIZES, c=SIZES, hw=st.sampled_from([1, 5, 7, 14, 28, 56]), k=SIZES, r=st.sampled_from([1, 3, 5]),
       stride=st.sampled_from([1, 2]))  # fmt: skip
def test_a_beam_hedging_over_the_split_factor_stays_valid_and_spreads_it(n: int, c: int, hw: int, k: int, r: int,
                                                                         stride: int) -> None:  # fmt: skip
    from kptune.predict.beam import hedged_position

    problem = Conv2dProblem.parse(f"n={n},c={c},h={hw},w={hw},k={k},r={r},s={r},pad={r // 2},stride={stride}")
    pos = hedged_position(FAMILY.name, VOCAB)
    allowed = constrained_allowed(FAMILY.space, problem, GPU)
    found = beam_search(_MODEL, VOCAB, encode_source(problem), allowed, 8, 5, spread=pos)
    plain = beam_search(_MODEL, VOCAB, encode_source(problem), allowed, 8, 5)
    assert found and all(FAMILY.space.valid(problem, GPU, c.config) for c in found)
    assert len({c.config for c in found}) == len(found) == len(plain)
    assert [c.log_prob for c in found] == sorted((c.log_prob for c in found), reverse=True)
    splits = [c.config["KSPLIT"] for c in found]
    assert max(splits.count(v) for v in splits) <= 3 or len(set(splits)) < 3  # at most 3 of 5 unless filled


def test_the_hedge_spreads_candidates_the_plain_beam_puts_on_one_split_factor() -> None:
    from kptune.predict.beam import hedged_position

    problem = Conv2dProblem.parse("n=1,c=64,h=56,w=56,k=64,r=3,s=3,pad=1")
    allowed = constrained_allowed(FAMILY.space, problem, GPU)
    model, source = _model(gemm_view=False), encode_source(problem, gemm_view=False)
    plain = beam_search(model, VOCAB, source, allowed, 8, 5)
    hedged = beam_search(model, VOCAB, source, allowed, 8, 5, hedged_position(FAMILY.name, VOCAB))
    assert [c.config["KSPLIT"] for c in plain].count(1) == 4  # (this seeded untrained model's ranking)
    assert [c.config["KSPLIT"] for c in hedged].count(1) == 3 and hedged[0] == plain[0]


def test_diversified_picks_the_most_likely_first_then_pays_for_each_repeat() -> None:
    from kptune.predict import beam

    # (values, log p); position 0 is the tile: three of tile 1 lead, one of tile 2 is 0.3 behind
    beams = [((1, 10), -1.0), ((1, 11), -1.1), ((1, 12), -1.2), ((2, 10), -1.3), ((3, 10), -2.0)]
    picked = beam._diversified(beams, 4, [0])
    # with REPEAT_PENALTY 0.5: -1.1 - 0.5 < -1.3, then -1.2 - 2 x 0.5 < -2.0
    assert picked == [((1, 10), -1.0), ((2, 10), -1.3), ((1, 11), -1.1), ((3, 10), -2.0)]
    assert beam.REPEAT_PENALTY == 0.5
    assert beam._diversified(beams, 9, [0])[-1] == ((1, 12), -1.2)  # k beyond the pool: all of it
    assert beam._diversified(beams, 3, []) == beams[:3]  # no positions: the most likely, in order


@settings(max_examples=25, deadline=None)
@given(n=SIZES, c=SIZES, hw=st.sampled_from([1, 5, 7, 14, 28, 56]), k=SIZES, r=st.sampled_from([1, 3, 5]),
       stride=st.sampled_from([1, 2]))  # fmt: skip
def test_a_beam_spread_over_the_tile_stays_valid_and_keeps_the_most_likely_first(
    n: int, c: int, hw: int, k: int, r: int, stride: int
) -> None:
    from kptune.predict.beam import WIDTH, diverse_positions, hedged_position

    problem = Conv2dProblem.parse(f"n={n},c={c},h={hw},w={hw},k={k},r={r},s={r},pad={r // 2},stride={stride}")
    allowed = constrained_allowed(FAMILY.space, problem, GPU)
    spread, tile = hedged_position(FAMILY.name, VOCAB), diverse_positions(FAMILY.name, VOCAB)
    found = beam_search(_MODEL, VOCAB, encode_source(problem), allowed, WIDTH, 5, spread, diverse=tile)
    pool = beam_search(_MODEL, VOCAB, encode_source(problem), allowed, WIDTH, WIDTH, spread)
    assert found and all(FAMILY.space.valid(problem, GPU, c.config) for c in found)
    assert len({c.config for c in found}) == len(found) == min(5, len(pool))
    assert found[0] == pool[0] and {c.config for c in found} <= {c.config for c in pool}
    tiles = [(c.config["BM"], c.config["BN"]) for c in found]
    pool_tiles = {(c.config["BM"], c.config["BN"]) for c in pool}
    assert len(set(tiles)) >= min(len(pool_tiles), 2)  # a second tile whenever the pool has one


def test_unconstrained_beam_can_leave_the_space_and_transformer_decodes() -> None:
    problem = Conv2dProblem.parse("n=1,c=3,h=224,w=224,k=64,r=7,s=7,pad=3,stride=2")
    free = beam_search(_MODEL, VOCAB, encode_source(problem), all_allowed(VOCAB), 8, 5)
    assert len(free) == 5  # whatever their validity: the comparison eval reports it
    tr = _model("transformer")
    found = beam_search(tr, VOCAB, encode_source(problem), constrained_allowed(FAMILY.space, problem, GPU), 4, 2)
    assert found and all(FAMILY.space.valid(problem, GPU, c.config) for c in found)


def test_lstm_beam_decoder_gives_the_model_steps_logits() -> None:
    source = encode_source(Conv2dProblem.parse("n=2,c=48,h=17,w=17,k=40,r=3,s=3,pad=1"))
    decoder = LSTMBeamDecoder(_MODEL)
    pick, shuffle = torch.tensor([0, 0, 0]), torch.tensor([2, 0, 1])
    with torch.no_grad():
        memory = _MODEL.select(_MODEL.encode(torch.tensor([source])), pick)
        state = decoder.select(decoder.encode(source), pick.numpy())
        tokens = torch.tensor([BOS, 5, 9])  # three beams on different paths
        for t in range(len(VOCAB.values)):
            span = VOCAB.span(t)
            logits, memory = _MODEL.step(memory, tokens)
            fast, state = decoder.step(state, tokens.numpy(), span)
            torch.testing.assert_close(torch.from_numpy(fast), logits[:, span.start : span.stop], rtol=1e-5, atol=1e-5)
            tokens = torch.tensor([span.start, span.stop - 1, span.start + t % len(span)])
            memory, state = _MODEL.select(memory, shuffle), decoder.select(state, shuffle.numpy())


def test_launch_features_are_the_tiles_and_waves_of_the_prefix() -> None:
    launch = _launch(Conv2dProblem.parse("n=1,c=64,h=7,w=7,k=160,r=3,s=3,pad=1"))  # GEMM 49 x 160, reduce 576
    at = {name: VOCAB.names.index(name) for name in ("BM", "BN", "BK", "TM", "TN", "KSPLIT")}
    config = [0] * len(VOCAB.names)
    for name, value in (("BM", 32), ("BN", 32), ("BK", 16), ("TM", 2), ("TN", 4), ("KSPLIT", 8)):
        config[at[name]] = value
    assert launch.features(tuple(config[: at["BM"]])) == [0.0] * FEATURES  # nothing known yet
    f = launch.features(tuple(config))
    assert f[0:3] == [1.0, 1.0, 49 / 64]  # 2 tiles along M, the last half full
    assert f[3:8] == pytest.approx([1.0, math.log2(5), 1.0, math.log2(10 / 132), 10 / 132])  # 2 x 5 CTAs
    assert f[8:13] == pytest.approx([1.0, math.log2(36), 1.0, 1.0, math.log2(128)])  # 36 steps; 16 x 8 threads
    assert f[13:17] == pytest.approx([1.0, math.log2(80 / 132), 80 / 132, math.log2(4.5)])  # split 8: 80 CTAs
    options = VOCAB.values[at["KSPLIT"]]
    rows = launch.lookahead(tuple(config[: at["KSPLIT"]]), options)
    assert [r[14] for r in rows] == pytest.approx([math.log2(10 * s / 132) for s in options])
    assert launch.varying() == set(at.values()) - {at["TM"]}  # TM's block of features waits for TN
    head = launch.features(tuple(config[: at["TM"]]))
    assert all(list(r) == head for r in launch.lookahead(tuple(config[: at["TM"]]), VOCAB.values[at["TM"]]))


def test_a_lookahead_model_scores_launches_the_same_in_every_decoder() -> None:
    problem = Conv2dProblem.parse("n=2,c=48,h=17,w=17,k=40,r=3,s=3,pad=1")
    source, launch = encode_source(problem), _launch(problem)
    allowed = constrained_allowed(FAMILY.space, problem, GPU)
    found = beam_search(_LOOKAHEAD, VOCAB, source, allowed, 8, 5, launch=launch)
    with pytest.raises(ValueError, match="launch features"):
        beam_search(_LOOKAHEAD, VOCAB, source, allowed, 8, 5)
    # teacher forcing scores each candidate as the beam's steps did (renormalised over its allowed values)
    rows = [VOCAB.encode(c.config)[1:-1] for c in found]
    spans = [VOCAB.span(t) for t in range(len(VOCAB.values))]
    width = max(len(v) for v in VOCAB.values)
    looks = torch.tensor([lookahead_rows(launch, c.config.values(), VOCAB.values, width) for c in found])
    with torch.no_grad():
        logits = _LOOKAHEAD(torch.tensor([source] * len(rows)), torch.tensor([[BOS, *r[:-1]] for r in rows]), looks,
                            spans)  # fmt: skip
    for candidate, row, row_logits in zip(found, rows, logits, strict=True):
        total = 0.0
        for t, token in enumerate(row):
            values = [VOCAB.value(t, v) for v in spans[t]]
            ok = [
                spans[t].start + values.index(v)
                for v in allowed(tuple(VOCAB.value(i, x) for i, x in enumerate(row[:t])))
            ]
            total += (row_logits[t, token] - row_logits[t, ok].logsumexp(0)).item()
        assert total == pytest.approx(candidate.log_prob, abs=1e-4)
    plain = beam_search(_MODEL, VOCAB, source, allowed, 8, 5, launch=launch)  # ignored by a model without lookahead
    assert plain == beam_search(_MODEL, VOCAB, source, allowed, 8, 5)


def test_beam_search_sees_weights_changed_in_place() -> None:
    problem = Conv2dProblem.parse("n=1,c=3,h=224,w=224,k=64,r=7,s=7,pad=3,stride=2")
    model = _model().train()
    before = beam_search(model, VOCAB, encode_source(problem), all_allowed(VOCAB), 8, 5)
    assert not any(m.training for m in model.modules())  # beam search decodes in eval mode
    with torch.no_grad():
        model.out.bias[VOCAB.span(0).start + 2] += 5.0  # in place, as an optimiser step
    after = beam_search(model, VOCAB, encode_source(problem), all_allowed(VOCAB), 8, 5)
    fresh = build_model(ModelConfig(embed=16, hidden=32, lookahead=False), VOCAB.size).eval()
    fresh.load_state_dict(model.state_dict())
    assert after != before and after == beam_search(fresh, VOCAB, encode_source(problem), all_allowed(VOCAB), 8, 5)


def _save(path: Path, source_hash: str | None = None) -> None:
    meta = {"family": FAMILY.name, "source_hash": source_hash or FAMILY.source_hash, "device": GPU.key,
            "device_limits": GPU.limits(), "dataset_hash": "x", "training": {}}  # fmt: skip
    checkpoint.save(path, _MODEL, ModelConfig(embed=16, hidden=32, lookahead=False), VOCAB, meta)


def test_checkpoint_round_trip_and_clear_errors(tmp_path: Path) -> None:
    _save(tmp_path / "m.safetensors")
    pred = checkpoint.load(tmp_path / "m.safetensors", FAMILY.name, FAMILY.source_hash)
    assert pred.device == GPU and pred.vocab.names == VOCAB.names
    problem = Conv2dProblem.parse("n=8,c=64,h=28,w=28,k=128,r=3,s=3,pad=1")
    src = encode_source(problem)
    allowed = constrained_allowed(FAMILY.space, problem, GPU)
    assert beam_search(pred.model, pred.vocab, src, allowed, 4, 3) == beam_search(_MODEL, VOCAB, src, allowed, 4, 3)
    with pytest.raises(checkpoint.CheckpointError, match="made for kernel source"):
        checkpoint.load(tmp_path / "m.safetensors", FAMILY.name, "0123456789abcdef")
    data = (tmp_path / "m.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(checkpoint.CheckpointError, match="not a readable safetensors checkpoint"):
        checkpoint.load(tmp_path / "cut.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(checkpoint.CheckpointError):
        checkpoint.load(tmp_path / "junk.safetensors")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(checkpoint.CheckpointError, match="not a kptune predictor checkpoint"):
        checkpoint.load(tmp_path / "other.safetensors")


def test_load_predictor_is_the_checkpoint_predict_then_uses(tmp_path: Path) -> None:
    from kptune.errors import KptuneError
    from kptune.predict import api

    _save(tmp_path / "m.safetensors")
    pred = api.load_predictor(tmp_path / "m.safetensors")
    assert pred.device == GPU and pred.vocab.names == VOCAB.names
    problem = Conv2dProblem.parse("n=8,c=64,h=28,w=28,k=128,r=3,s=3,pad=1")
    found, used = api.predict(problem, 3, tmp_path / "m.safetensors")
    assert used is pred and len(found) == 3  # cached: the prediction did not load it again
    with pytest.raises(KptuneError, match=r"no checkpoint at .*none\.safetensors"):
        api.load_predictor(tmp_path / "none.safetensors")
    with pytest.raises(KptuneError, match=r"no checkpoint at .*none\.safetensors"):
        api.predict(problem, 3, tmp_path / "none.safetensors")


def test_predict_serves_the_registry_s_current_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kptune.predict import api
    from kptune.registry import Registry

    monkeypatch.setenv("KPTUNE_MODELS", str(tmp_path / "models"))
    assert api.served_model() == api.DEFAULT_MODEL  # nothing promoted: the shipped checkpoint
    _save(tmp_path / "m.safetensors")
    _save(tmp_path / "old.safetensors", source_hash="0123456789abcdef")
    reg = Registry()
    stale = reg.add(tmp_path / "old.safetensors", checkpoint.read_meta(tmp_path / "old.safetensors") or {}, {})
    reg.promote(stale["version"])
    assert api.served_model() == api.DEFAULT_MODEL  # trained for another kernel source: not served
    entry = reg.add(tmp_path / "m.safetensors", checkpoint.read_meta(tmp_path / "m.safetensors") or {}, {})
    reg.promote(entry["version"])
    assert api.served_model() == reg.root / entry["file"]
    found, used = api.predict(Conv2dProblem.parse("n=8,c=64,h=28,w=28,k=128,r=3,s=3,pad=1"), 3)
    assert used.cfg.hidden == 32 and len(found) == 3  # the promoted model (the shipped one has 128)


def test_predict_cli(tmp_path: Path) -> None:
    _save(tmp_path / "m.safetensors")
    cli = [sys.executable, "-m", "kptune", "predict"]
    run = subprocess.run([*cli, "--shape", "n=4,c=32,h=20,w=20,k=48,r=3,s=3,pad=1", "-k", "3", "--model",
                          str(tmp_path / "m.safetensors"), "--json"], capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, run.stderr
    import json

    doc = json.loads(run.stdout)
    problem = Conv2dProblem.parse("n=4,c=32,h=20,w=20,k=48,r=3,s=3,pad=1")
    from kptune.space import Config

    assert len(doc["candidates"]) == 3
    assert all(FAMILY.space.valid(problem, GPU, Config.parse(c["key"])) for c in doc["candidates"])
    for k, says_order in (("3", True), ("1", False)):  # the table says its order is the picking order
        run = subprocess.run([*cli, "--shape", "n=4,c=32,h=20,w=20,k=48,r=3,s=3,pad=1", "-k", k, "--model",
                              str(tmp_path / "m.safetensors")], capture_output=True, text=True)  # fmt: skip
        assert run.returncode == 0 and ("in the order picked" in run.stdout) == says_order, run.stdout
    _save(tmp_path / "old.safetensors", source_hash="0123456789abcdef")
    for args in (
        ["--shape", "n=0,c=1,h=1,w=1,k=1,r=1,s=1"],
        ["--shape", "n=1,c=1,h=4,w=4,k=1,r=1,s=1", "--model", str(tmp_path / "old.safetensors")],
        ["--shape", "n=1,c=1,h=4,w=4,k=1,r=1,s=1", "-k", "0"],
    ):
        run = subprocess.run([*cli, *args], capture_output=True, text=True)
        assert run.returncode == 2 and run.stderr.startswith("kptune: error: ") and "Traceback" not in run.stderr


def test_fixed_epochs_train_on_train_and_validation_and_keep_the_last_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    from kptune import dataset as ds
    from kptune.predict import api, training

    shipped = ds.load(api.DEFAULT_MODEL.parent / "dataset-h200.db.gz")
    small = ds.Dataset(shipped.meta, tuple(shipped.split("train")[:4] + shipped.split("validation")[:2]))
    seen: list[int] = []
    real = training._tensors
    monkeypatch.setattr(training, "_tensors", lambda problems, *a: seen.append(len(problems)) or real(problems, *a))
    weights: list[dict[str, torch.Tensor]] = []
    cfg = dataclasses.replace(SMALL, epochs=3, early_stop=False)
    result = training.train(small, cfg, on_epoch=lambda e, m, v: weights.append({k: t.clone() for k, t in
                                                                                 m.state_dict().items()}))  # fmt: skip
    assert seen == [6]  # 4 train + 2 validation problems, nothing held out to stop on
    assert len(result.history) == len(weights) == 3 and result.best_epoch == 2
    assert all(torch.equal(result.model.state_dict()[k], weights[-1][k]) for k in weights[-1])
    assert not torch.equal(weights[0]["out.weight"], weights[-1]["out.weight"])
    assert training.summary(result)["val_loss"] is None and "fixed 3 epochs" in result.validation
    checkpoint.save(tmp_path / "f.safetensors", result.model, cfg, result.vocab, {"family": FAMILY.name,
                    "source_hash": FAMILY.source_hash, "device_limits": GPU.limits()})  # fmt: skip
    assert checkpoint.load(tmp_path / "f.safetensors").cfg.early_stop is False
    seen.clear()
    stopped = training.train(small, dataclasses.replace(SMALL, epochs=3))
    assert seen == [4 - 1, 1] and "held-out train" in stopped.validation  # the old behaviour, unchanged


def test_early_stopping_keeps_the_epoch_whose_beam_ranks_the_validation_problems_best(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import dataclasses

    from kptune import dataset as ds
    from kptune.predict import api, training
    from kptune.predict.beam import WIDTH, diverse_positions, hedged_position
    from kptune.predict.evaluation import model_ranker, scores

    shipped = ds.load(api.DEFAULT_MODEL.parent / "dataset-h200.db.gz")
    val = shipped.split("validation")[:3]
    small = ds.Dataset(shipped.meta, tuple(shipped.split("train")[:6] + val))
    cfg = dataclasses.replace(SMALL, epochs=4, patience=10)
    ratios: list[float] = []

    def score(epoch: int, model: torch.nn.Module, vocab: TargetVocab) -> None:  # the metric, computed apart
        device = DeviceInfo(**shipped.meta["device_limits"])  # the beam as predict() runs it
        hedge, diverse = hedged_position(FAMILY.name, vocab), diverse_positions(FAMILY.name, vocab)
        got = scores(val, model_ranker(model, vocab, FAMILY.space, device, "beam", WIDTH, hedge, diverse), 5)
        ratios.append((got["ratio_top1_geomean"] * got["ratio_top5_geomean"]) ** 0.5)

    monkeypatch.setattr(training, "MIN_VALIDATION", 3)
    result = training.train(small, cfg, on_epoch=score)
    assert result.validation == "validation split"
    assert [round(h["val_ratio"], 9) for h in result.history] == [round(r, 9) for r in ratios]
    assert all(0 < r <= 1 for r in ratios) and all("val_loss" in h for h in result.history)
    assert ratios[result.best_epoch] >= max(ratios) - 1e-4  # the best ratio, whatever the loss did
    assert training.summary(result)["val_ratio"] == result.history[result.best_epoch]["val_ratio"]


def test_restarts_keep_the_seed_best_on_validation_weight_for_weight(monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from kptune import dataset as ds
    from kptune.predict import api, training

    shipped = ds.load(api.DEFAULT_MODEL.parent / "dataset-h200.db.gz")
    small = ds.Dataset(shipped.meta, tuple(shipped.split("train")[:6] + shipped.split("validation")[:3]))
    monkeypatch.setattr(training, "MIN_VALIDATION", 3)
    cfg = dataclasses.replace(SMALL, epochs=3, patience=10, seed=4, restarts=3)
    result = training.train(small, cfg)
    alone = {seed: training.train(small, dataclasses.replace(cfg, seed=seed, restarts=1)) for seed in (4, 5, 6)}
    scores = {seed: r.history[r.best_epoch]["val_ratio"] for seed, r in alone.items()}
    assert [r["seed"] for r in result.restarts] == [4, 5, 6]
    assert [r["score"] for r in result.restarts] == [scores[s] for s in (4, 5, 6)]
    assert result.seed == max(scores, key=lambda s: (scores[s], -s))  # the first of the best
    kept = alone[result.seed].model.state_dict()
    assert all(torch.equal(result.model.state_dict()[k], kept[k]) for k in kept)
    info = training.summary(result)
    assert info["seed"] == result.seed and len(info["restarts"]) == 3
    with pytest.raises(ValueError, match="early stopping"):
        training.train(small, dataclasses.replace(cfg, early_stop=False))


def test_train_cli_refuses_bad_target_options(tmp_path: Path) -> None:
    for args in (["--targets-within", "0.9"], ["--max-targets", "0"]):
        run = subprocess.run([sys.executable, "-m", "kptune", "train", "--out", str(tmp_path / "m.safetensors"),
                              *args], capture_output=True, text=True)  # fmt: skip
        assert run.returncode == 2 and run.stderr.startswith("kptune: error: --targets-within must be >= 1")
        assert not (tmp_path / "m.safetensors").exists()
    for args in (["--restarts", "0"], ["--restarts", "2", "--no-early-stop"]):
        run = subprocess.run([sys.executable, "-m", "kptune", "train", "--out", str(tmp_path / "m.safetensors"),
                              *args], capture_output=True, text=True)  # fmt: skip
        assert run.returncode == 2 and run.stderr.startswith("kptune: error: --restarts ")
        assert len(run.stderr.splitlines()) == 1 and not (tmp_path / "m.safetensors").exists()


def test_a_prediction_searches_on_one_thread_and_restores_the_callers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from threadpoolctl import threadpool_info, threadpool_limits

    from kptune.predict import api

    def blas_threads() -> list[int]:  # NumPy's BLAS pool (the NumPy decoder's matrix products)
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]

    _save(tmp_path / "m.safetensors")
    seen: list[tuple[int, list[int]]] = []
    search = api.beam_search

    def watched(*a: object, **kw: object) -> object:
        seen.append((torch.get_num_threads(), blas_threads()))
        return search(*a, **kw)

    monkeypatch.setattr(api, "beam_search", watched)
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        with threadpool_limits(3, user_api="blas"):
            assert blas_threads() and set(blas_threads()) == {3}
            found, _ = api.predict(Conv2dProblem.parse("n=8,c=64,h=28,w=28,k=128,r=3,s=3,pad=1"), 3,
                                   tmp_path / "m.safetensors")  # fmt: skip
            assert seen == [(1, [1] * len(blas_threads()))] and len(found) == 3
            assert torch.get_num_threads() == 3 and set(blas_threads()) == {3}
    finally:
        torch.set_num_threads(before)


def test_predictions_in_two_threads_take_turns_at_one_thread() -> None:
    import threading

    from kptune.predict.api import one_thread

    before = torch.get_num_threads()
    torch.set_num_threads(3)
    second_in, events = threading.Event(), []

    def second() -> None:
        with one_thread():
            second_in.set()
            events.append(("second", torch.get_num_threads()))

    try:
        with one_thread():
            other = threading.Thread(target=second)
            other.start()
            assert not second_in.wait(0.2)  # waits while the first holds the setting
            events.append(("first", torch.get_num_threads()))
        other.join(10)
        assert events == [("first", 1), ("second", 1)] and torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_eval_cli_scores_the_model_beside_every_baseline() -> None:
    import json

    data = Path(__file__).resolve().parents[1] / "kptune" / "data"
    run = subprocess.run([sys.executable, "-m", "kptune", "eval", "--model", str(data / "model-pocl-cpu.safetensors"),
                          "--dataset", str(data / "dataset-pocl-cpu.db.gz"), "--json"],
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    doc = json.loads(run.stdout)
    baselines = {"most frequent winner", "nearest tuned shape", "tree per parameter", "cost model (boosted trees)",
                 "seq2seq + cost model (blend)"}  # fmt: skip
    assert baselines <= set(doc["results"]) and "seq2seq constrained beam" in doc["results"]
    for row in doc["results"].values():
        assert row["problems"] == doc["test_problems"] > 0
        assert 0.0 <= row["ratio_top1_geomean"] <= row["ratio_top5_geomean"] <= 1.0
