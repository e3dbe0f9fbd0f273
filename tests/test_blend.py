"""kptune.predict.blend on a slice of the shipped H200 dataset and its model: the seq2seq's sequence
scores are the beam's, and the blend ranks the cost model's pool between its two members."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from kptune import dataset as ds  # noqa: E402
from kptune.kernel import get_family  # noqa: E402
from kptune.predict import checkpoint  # noqa: E402
from kptune.predict.beam import all_allowed, beam_search  # noqa: E402
from kptune.predict.blend import blend, blended_ranker, sequence_log_probs, standardized  # noqa: E402
from kptune.predict.costmodel import CostModel  # noqa: E402
from kptune.predict.launch import launch_for, lookahead_rows  # noqa: E402
from kptune.predict.models import source_of  # noqa: E402
from kptune.problem import Conv2dProblem, problem_from_key  # noqa: E402
from kptune.space import Config  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "kptune" / "data"


@pytest.fixture(scope="module")
def parts() -> tuple[ds.Dataset, checkpoint.Predictor, CostModel]:
    data = ds.load(DATA / "dataset-h200.db.gz")
    pred = checkpoint.load(DATA / "model-h200.safetensors", data.meta["family"])
    lent = [p for p in data.split("train") if "dtype=fp32," in p.key][:40]
    return data, pred, CostModel(lent, get_family(data.meta["family"]).space, pred.device, near=10, pool=50)


def test_sequence_log_probs_are_the_unconstrained_beams_scores(parts) -> None:  # type: ignore[no-untyped-def]
    _, pred, _ = parts
    problem = Conv2dProblem.parse("n=2,c=96,h=28,w=28,k=128,r=3,s=3,pad=1")
    launch = launch_for(pred.model, problem, pred.device, pred.vocab.names)
    found = beam_search(pred.model, pred.vocab, source_of(pred.model, problem), all_allowed(pred.vocab), 8, 5,
                        launch=launch)  # fmt: skip
    got = sequence_log_probs(pred.model, pred.vocab, problem, [c.config.key() for c in found], pred.device)
    np.testing.assert_allclose(got, [c.log_prob for c in found], rtol=1e-4, atol=1e-4)
    assert list(got) == sorted(got, reverse=True)
    assert len(sequence_log_probs(pred.model, pred.vocab, problem, [], pred.device)) == 0


def test_sequence_log_probs_over_a_prefix_tree_are_the_teacher_forced_ones(parts) -> None:  # type: ignore[no-untyped-def]
    from kptune.predict.tokenizer import BOS
    from kptune.predict.training import position_mask

    data, pred, cost = parts
    # configs sharing some prefixes and not others, in no tree order
    p, pool = next((p, pool) for p in data.split("test") if "dtype=fp32," in p.key
                   for pool in [cost.pool_of(p.key)[0]] if len(pool) > 10)  # fmt: skip
    conv = problem_from_key(p.key)
    assert isinstance(conv, Conv2dProblem)
    tokens = torch.tensor([pred.vocab.encode(Config.parse(c))[1:-1] for c in pool])
    source = torch.tensor([source_of(pred.model, conv)]).expand(len(pool), -1)
    decoder_in = torch.cat([torch.full((len(pool), 1), BOS), tokens[:, :-1]], dim=1)
    launch = launch_for(pred.model, conv, pred.device, pred.vocab.names)
    with torch.no_grad():
        if launch is None:
            logits = pred.model(source, decoder_in)
        else:  # the launch features each position's values lead to, as training feeds them
            width = max(len(v) for v in pred.vocab.values)
            looks = [lookahead_rows(launch, Config.parse(c).values(), pred.vocab.values, width) for c in pool]
            spans = [pred.vocab.span(t) for t in range(len(pred.vocab.values))]
            logits = pred.model(source, decoder_in, torch.tensor(looks), spans)
        logp = torch.log_softmax(logits + position_mask(pred.vocab), dim=-1)
    expected = logp.gather(2, tokens.unsqueeze(2)).squeeze(2).sum(dim=1).numpy()
    got = sequence_log_probs(pred.model, pred.vocab, conv, pool, pred.device)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_the_blend_ranks_valid_pool_configs_between_its_two_members(parts) -> None:  # type: ignore[no-untyped-def]
    data, pred, cost = parts
    space = get_family(data.meta["family"]).space
    for p in [p for p in data.split("test") if "dtype=fp32," in p.key][:3]:
        conv = problem_from_key(p.key)
        assert isinstance(conv, Conv2dProblem)
        pool, _ = cost.pool_of(p.key)
        ranked = blended_ranker(pred.model, pred.vocab, cost)(p, 5)
        assert len(ranked) == min(5, len(pool)) and set(ranked) <= set(pool)
        assert all(space.valid(conv, pred.device, Config.parse(c)) for c in ranked)
        scores = [s for _, s in blend(pred.model, pred.vocab, cost, conv)]
        assert scores == sorted(scores, reverse=True) and len(scores) == len(pool)
        # weight 0 is the cost model's ranking, weight 1 the seq2seq's over the same pool
        assert [c for c, _ in blend(pred.model, pred.vocab, cost, conv, 0.0)][:5] == cost.rank(p, 5)
        seq = sequence_log_probs(pred.model, pred.vocab, conv, pool, cost.device)
        assert [c for c, _ in blend(pred.model, pred.vocab, cost, conv, 1.0)][:5] == [
            pool[j] for j in np.argsort(-seq, kind="stable")[:5]
        ]


def test_standardized_scores_and_a_constant_pool() -> None:
    z = standardized(np.array([1.0, 2.0, 3.0]))
    assert abs(z.mean()) < 1e-12 and abs(z.std() - 1.0) < 1e-12
    assert standardized(np.array([4.0, 4.0])).tolist() == [0.0, 0.0]


def test_predict_blend_returns_the_blends_first_picks_and_needs_a_cost_model(parts) -> None:  # type: ignore[no-untyped-def]
    import dataclasses
    import json
    import subprocess
    import sys

    from kptune.errors import KptuneError
    from kptune.neighbours import lender_for
    from kptune.predict.api import predict

    _, pred, _ = parts
    family = get_family("conv2d_fwd")
    problem = Conv2dProblem.parse("n=3,c=80,h=30,w=30,k=96,r=3,s=3,pad=1")
    found, _ = predict(problem, 5, DATA / "model-h200.safetensors", blend=True)
    lender = lender_for(pred.device, family)
    assert lender is not None and lender.cost_model is not None
    picks = [key for key, _ in blend(pred.model, pred.vocab, lender.cost_model, problem)[:5]]
    assert [c.config.key() for c in found] == picks
    assert all(family.space.valid(problem, pred.device, c.config) for c in found)
    # an H100 PCIe: sm_90 with 114 SMs, unlike the H200's 132, so it may borrow no dataset (`DeviceInfo.may_borrow`)
    other = dataclasses.replace(pred.device, name="a GPU no dataset was made for", compute_units=114)
    with pytest.raises(KptuneError, match="--blend needs the cost model"):
        predict(problem, 5, DATA / "model-h200.safetensors", device=other, blend=True)
    run = subprocess.run([sys.executable, "-m", "kptune", "predict", "--shape", "n=3,c=80,h=30,w=30,k=96,r=3,s=3,pad=1",
                          "-k", "3", "--model", str(DATA / "model-h200.safetensors"), "--blend", "--json"],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert [c["key"] for c in json.loads(run.stdout)["candidates"]] == picks[:3]
