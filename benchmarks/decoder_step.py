"""One step of the shipped seq2seq's beam decoder on the CPU: in NumPy (`models.LSTMBeamDecoder.step`, what a
prediction runs) and in torch (the same arithmetic as torch ops, as the decoder ran before), on the same state.

    python benchmarks/decoder_step.py --out results/

A step's time depends on the BLAS each library calls (NumPy's own, torch's MKL on x86) and on its per-call cost:
this says which is faster on a machine, at 3 beams (a prediction's first steps, a lent config's scoring) and 12
(the beam's width), and times their largest product alone ([B, 256] x [256, 512]). One thread. Writes
decoder_step.json under --out, with NumPy's and torch's versions and BLAS.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from common import cpu_name, provenance, write_json


def timed(fn: Callable[[], Any], repeats: int) -> float:
    """Microseconds a call, the best of 3 runs of `repeats` calls (after 100 untimed)."""
    for _ in range(100):
        fn()
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(repeats):
            fn()
        best = min(best, (time.perf_counter() - t) / repeats * 1e6)
    return best


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=Path("."))
    args = ap.parse_args(argv)
    import numpy as np
    import torch

    from kptune.corpus import load_corpus
    from kptune.predict import api, beam
    from kptune.predict.models import LSTMBeamDecoder, lstm_cell

    torch.set_num_threads(1)
    pred = api.load_predictor()
    decoder = beam._decoder(pred.model)
    assert isinstance(decoder, LSTMBeamDecoder), "the shipped checkpoint is a one-layer LSTM"
    source = api.source_of(pred.model, load_corpus()[5].problem)
    span = pred.vocab.span(3)

    def torch_step(state: tuple[torch.Tensor, ...], token: torch.Tensor) -> Any:  # the step as torch ops
        query, bias, values, feed_h, c = state
        h = decoder.hidden
        hidden, c = lstm_cell(torch.addmm(decoder.token_gates.index_select(0, token), feed_h, decoder.state_weights), c)
        pre, scores = torch.addmm(bias, hidden, query).tensor_split((h,), dim=1)
        feed = torch.tanh(torch.addmm(pre, torch.softmax(scores, dim=1), values))
        logits = torch.addmm(decoder.out_bias[span.start : span.stop], feed,
                             decoder.out_weight[:, span.start : span.stop])  # fmt: skip
        return logits, (query, bias, values, torch.cat([feed, hidden], dim=1), c)

    rows: dict[str, dict[str, float]] = {}
    with torch.inference_mode():
        for beams in (3, 12):
            rows[str(beams)] = r = _row(decoder, torch_step, source, span, beams, args.repeats)
            print(f"{beams} beams: step NumPy {r['numpy_step_us']:.1f} us, torch {r['torch_step_us']:.1f} us; "
                  f"[{beams}, 256] x [256, 512] NumPy {r['numpy_product_us']:.1f} us, torch "
                  f"{r['torch_product_us']:.1f} us")  # fmt: skip
    blas = np.__config__.CONFIG.get("Build Dependencies", {}).get("blas", {})
    doc = {"benchmark": "decoder_step", **provenance(), "numpy": np.__version__, "numpy_blas": blas.get("name"),
           "torch": torch.__version__, "torch_blas": "mkl" if torch.backends.mkl.is_available() else "other",
           "cpu": cpu_name(), "beams": rows}  # fmt: skip
    print(f"NumPy {np.__version__} ({blas.get('name')}), torch {torch.__version__} ({doc['torch_blas']}); {doc['cpu']}")
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "decoder_step.json", doc)
    return 0


def _row(decoder: Any, torch_step: Callable[..., Any], source: Sequence[int], span: range, beams: int,
         repeats: int) -> dict[str, float]:  # fmt: skip
    """Both steps' and both products' microseconds at `beams` beams (checked to agree first)."""
    import numpy as np
    import torch

    state = decoder.select(decoder.encode(source), np.zeros(beams, dtype=np.int64))
    tokens = np.arange(beams, dtype=np.int64) + span.start
    tensors = tuple(torch.from_numpy(np.ascontiguousarray(x)) for x in state)
    torch_tokens = torch.from_numpy(tokens)
    got, want = decoder.step(state, tokens, span)[0], torch_step(tensors, torch_tokens)[0].numpy()
    assert np.allclose(got, want, rtol=1e-4, atol=1e-4), "the two steps disagree"
    feed_h, weights = np.ascontiguousarray(state[3]), decoder._arrays.state_weights
    torch_feed_h = torch.from_numpy(feed_h)
    return {
        "numpy_step_us": timed(lambda: decoder.step(state, tokens, span), repeats),
        "torch_step_us": timed(lambda: torch_step(tensors, torch_tokens), repeats),
        "numpy_product_us": timed(lambda: feed_h @ weights, repeats),
        "torch_product_us": timed(lambda: torch.mm(torch_feed_h, decoder.state_weights), repeats),
    }


if __name__ == "__main__":
    sys.exit(main())
