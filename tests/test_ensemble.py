"""Ensembles: decoded as one model (the members' mean log-probability), stored and loaded, trained."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from kptune.device import DeviceInfo  # noqa: E402
from kptune.kernel import get_family  # noqa: E402
from kptune.predict import checkpoint  # noqa: E402
from kptune.predict.beam import beam_search, constrained_allowed, sequence_log_probs  # noqa: E402
from kptune.predict.ensemble import Ensemble, EnsembleBeamDecoder, EnsembleDecoder  # noqa: E402
from kptune.predict.launch import Launch  # noqa: E402
from kptune.predict.models import LSTMBeamDecoder, ModelConfig, build_model  # noqa: E402
from kptune.predict.tokenizer import BOS, TargetVocab, encode_source  # noqa: E402
from kptune.problem import Conv2dProblem  # noqa: E402

GPU = DeviceInfo("cupy", "0", "NVIDIA H200", "nvidia", "gpu", "d", "c", 1024, 49152, 65536, 132, 32, 50 << 20, 1 << 37)
FAMILY = get_family("conv2d_fwd")
VOCAB = TargetVocab.of(FAMILY.space)
CFG = ModelConfig(embed=16, hidden=32, lookahead=True)
PROBLEM = Conv2dProblem.parse("n=2,c=48,h=17,w=17,k=40,r=3,s=3,pad=1")


def _members(n: int, cfg: ModelConfig = CFG) -> list[torch.nn.Module]:
    members = []
    for seed in range(n):
        torch.manual_seed(seed)
        model = build_model(cfg, VOCAB.size).eval()
        if cfg.lookahead:  # untrained lookahead weights are small: make the launch scores count
            with torch.no_grad():
                model.look.weight.mul_(20.0)
        members.append(model)
    return members


def _search(model: torch.nn.Module, problem: Conv2dProblem = PROBLEM, k: int = 5) -> list:
    launch = Launch(problem, GPU.compute_units, VOCAB.names)
    return beam_search(model, VOCAB, encode_source(problem), constrained_allowed(FAMILY.space, problem, GPU), 8, k,
                       launch=launch)  # fmt: skip


def test_the_stacked_decoder_steps_as_the_members_mean_log_probability() -> None:
    members = _members(3)
    stacked = EnsembleBeamDecoder([LSTMBeamDecoder(m) for m in members])
    one_by_one = EnsembleDecoder([LSTMBeamDecoder(m) for m in members])
    source, launch = encode_source(PROBLEM), Launch(PROBLEM, GPU.compute_units, VOCAB.names)
    pick, shuffle = np.array([0, 0, 0]), np.array([2, 0, 1])
    fast, slow = stacked.select(stacked.encode(source), pick), one_by_one.select(one_by_one.encode(source), pick)
    tokens, prefixes = np.array([BOS, BOS, BOS]), [(), (), ()]
    with torch.no_grad():
        for t in range(len(VOCAB.values)):
            span = VOCAB.span(t)
            look = np.array([launch.lookahead(p, VOCAB.values[t]) for p in prefixes], dtype=np.float32)
            got, fast = stacked.step(fast, tokens, span, look)
            want, slow = one_by_one.step(slow, tokens, span, look)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
            assert (np.exp(got).sum(axis=1) <= 1 + 1e-5).all()  # a geometric mean of distributions
            picks = [0, len(span) - 1, t % len(span)]  # three beams on different paths
            tokens = np.array([span.start + j for j in picks])
            prefixes = [(*p, VOCAB.values[t][j]) for p, j in zip(prefixes, picks, strict=True)]
            fast, slow = stacked.select(fast, shuffle), one_by_one.select(slow, shuffle)
            tokens, prefixes = tokens[shuffle], [prefixes[i] for i in shuffle.tolist()]


def test_an_ensemble_of_one_model_twice_searches_as_that_model() -> None:
    model = _members(1)[0]
    alone, twice = _search(model), _search(Ensemble([model, model]))
    assert [c.config for c in twice] == [c.config for c in alone]
    assert [c.log_prob for c in twice] == pytest.approx([c.log_prob for c in alone], abs=1e-4)


def test_an_ensembles_scores_are_its_members_mean_and_its_configs_valid() -> None:
    members = _members(3)
    ensemble = Ensemble(members)
    for problem in (PROBLEM, Conv2dProblem.parse("n=1,c=3,h=224,w=224,k=64,r=7,s=7,pad=3,stride=2")):
        found = _search(ensemble, problem, 8)
        assert len(found) == 8 and all(FAMILY.space.valid(problem, GPU, c.config) for c in found)
        rows = [VOCAB.encode(c.config)[1:-1] for c in found]
        launch = Launch(problem, GPU.compute_units, VOCAB.names)
        source = encode_source(problem)
        each = [sequence_log_probs(m, VOCAB, source, rows, launch) for m in members]
        mean = [sum(scores) / len(members) for scores in zip(*each, strict=True)]
        # (unconstrained, each position renormalised over its tokens: the product of the members)
        got = sequence_log_probs(ensemble, VOCAB, source, rows, launch)
        assert all(g >= m - 1e-4 for g, m in zip(got, mean, strict=True))  # renormalising only adds
        assert max(got) <= 0.0
    assert _search(ensemble) != _search(members[0])  # three seeds do not all agree


def test_an_ensemble_of_transformers_decodes_through_their_own_steps() -> None:
    cfg = ModelConfig(arch="transformer", embed=16, hidden=32, lookahead=False)
    ensemble = Ensemble(_members(2, cfg))
    found = beam_search(ensemble, VOCAB, encode_source(PROBLEM), constrained_allowed(FAMILY.space, PROBLEM, GPU), 4, 3)
    assert len(found) == 3 and all(FAMILY.space.valid(PROBLEM, GPU, c.config) for c in found)
    with pytest.raises(ValueError, match="at least 2 members"):
        Ensemble(_members(1, cfg))
    with pytest.raises(ValueError, match="one architecture"):
        Ensemble([*_members(1, cfg), *_members(1)])


def _meta() -> dict:
    return {"family": FAMILY.name, "source_hash": FAMILY.source_hash, "device": GPU.key,
            "device_limits": GPU.limits(), "dataset_hash": "x", "training": {}}  # fmt: skip


def test_an_ensemble_checkpoint_loads_as_the_ensemble_it_saved(tmp_path: Path) -> None:
    ensemble = Ensemble(_members(3))
    checkpoint.save(tmp_path / "e.safetensors", ensemble, dataclasses.replace(CFG, members=3), VOCAB, _meta())
    pred = checkpoint.load(tmp_path / "e.safetensors", FAMILY.name, FAMILY.source_hash)
    assert isinstance(pred.model, Ensemble) and len(pred.model.members) == 3 and pred.cfg.members == 3
    assert _search(pred.model) == _search(ensemble)
    # weights of 3 members under a header that says 2, or one model's under a header that says 3
    checkpoint.save(tmp_path / "two.safetensors", ensemble, dataclasses.replace(CFG, members=2), VOCAB, _meta())
    checkpoint.save(tmp_path / "one.safetensors", _members(1)[0], dataclasses.replace(CFG, members=3), VOCAB, _meta())
    for name in ("two", "one"):
        with pytest.raises(checkpoint.CheckpointError, match="weights do not fit the model they describe"):
            checkpoint.load(tmp_path / f"{name}.safetensors")


def test_members_keep_every_seed_weight_for_weight(monkeypatch: pytest.MonkeyPatch) -> None:
    from kptune import dataset as ds
    from kptune.predict import api, training

    shipped = ds.load(api.DEFAULT_MODEL.parent / "dataset-h200.db.gz")
    small = ds.Dataset(shipped.meta, tuple(shipped.split("train")[:6] + shipped.split("validation")[:3]))
    monkeypatch.setattr(training, "MIN_VALIDATION", 3)
    cfg = ModelConfig(embed=16, hidden=32, epochs=3, patience=10, seed=4, members=2)
    result = training.train(small, cfg)
    assert isinstance(result.model, Ensemble) and result.cfg is not None and result.cfg.members == 2
    for member, seed in zip(result.model.members, (4, 5), strict=True):
        alone = training.train(small, dataclasses.replace(cfg, seed=seed, members=1)).model.state_dict()
        assert all(torch.equal(member.state_dict()[k], alone[k]) for k in alone)
    info = training.summary(result)
    assert [m["seed"] for m in info["members"]] == [4, 5] and "restarts" not in info
    scored = training._ranking_score(small, small.split("validation"))
    assert scored is not None and info["val_ratio"] == pytest.approx(scored(result.model, result.vocab))
    with pytest.raises(ValueError, match="one or the other"):
        training.train(small, dataclasses.replace(cfg, restarts=2))
    # members trained for fixed epochs on train + validation: nothing held out, so no scores (retrain's default)
    fixed = training.train(small, dataclasses.replace(cfg, early_stop=False, epochs=2))
    assert isinstance(fixed.model, Ensemble) and fixed.validation.startswith("none: fixed 2 epochs")
    info = training.summary(fixed)
    assert [m["score"] for m in info["members"]] == [None, None] and info["val_ratio"] is None


def test_train_cli_refuses_bad_member_counts(tmp_path: Path) -> None:
    out = tmp_path / "m.safetensors"
    for args, says in ((["--members", "0"], "--members must be at least 1"),
                       (["--members", "2", "--restarts", "2"], "--restarts keeps one seed")):  # fmt: skip
        run = subprocess.run([sys.executable, "-m", "kptune", "train", "--out", str(out), *args], capture_output=True,
                             text=True)  # fmt: skip
        assert run.returncode == 2 and run.stderr.startswith(f"kptune: error: {says}"), run.stderr
        assert len(run.stderr.splitlines()) == 1 and not out.exists()
