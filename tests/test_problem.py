from __future__ import annotations

import pytest

from kptune.errors import ProblemError
from kptune.problem import Conv2dProblem, parse_miopen_driver, parse_problem, problem_from_key


def test_shape_string_with_shorthands() -> None:
    p = Conv2dProblem.parse("n=32,c=64,h=56,w=56,k=64,r=3,s=3,pad=1,stride=1")
    assert (p.pad_h, p.pad_w, p.stride_h, p.stride_w, p.dil_h) == (1, 1, 1, 1, 1)
    assert (p.out_h, p.out_w) == (56, 56)
    assert p.flops() == 2 * 32 * 64 * 56 * 56 * 64 * 9


def test_fp16_is_a_dtype_and_part_of_the_key() -> None:
    half = Conv2dProblem.parse("n=1,c=3,h=5,w=5,k=2,r=3,s=3,dtype=FP16")
    assert half.dtype == "fp16" and half.key() != Conv2dProblem.parse("n=1,c=3,h=5,w=5,k=2,r=3,s=3").key()
    assert parse_miopen_driver("convfp16 -n 1 -c 3 -H 5 -W 5 -k 2 -y 3 -x 3") == half


def test_key_is_canonical_and_round_trips() -> None:
    a = Conv2dProblem.parse("n=2, c=3, h=9, w=7, k=4, r=3, s=1, pad_h=1, stride=2")
    b = Conv2dProblem.parse("k=4,stride_w=2,stride_h=2,s=1,r=3,w=7,h=9,c=3,n=2,pad_h=1,pad_w=0")
    assert a.key() == b.key()
    assert problem_from_key(a.key()) == a


def test_items_may_be_separated_by_whitespace_as_by_commas() -> None:
    p = Conv2dProblem.parse("n=2,c=3,h=9,w=7,k=4,r=3,s=1,pad=1")
    assert Conv2dProblem.parse("n=2 c=3  h=9\tw=7, k=4 r = 3 s= 1 pad =1") == p
    with pytest.raises(ProblemError, match="malformed item 'c'"):
        Conv2dProblem.parse("n=2 c 3 h=9")


def test_miopen_driver_arguments_match_shape() -> None:
    m = parse_miopen_driver("conv -n 32 -c 64 -H 56 -W 56 -k 64 -y 3 -x 3 -p 1 -q 1 -u 1 -v 1 -l 1 -j 1")
    assert m == Conv2dProblem.parse("n=32,c=64,h=56,w=56,k=64,r=3,s=3,pad=1")
    long = parse_miopen_driver("./bin/MIOpenDriver conv --batchsize 2 -c 3 -H 9 -W 8 -k 4 -y 3 -x 2 -u 2 -t 1 -F 1")
    assert (long.n, long.s, long.stride_h, long.stride_w) == (2, 2, 2, 1)


@pytest.mark.parametrize(
    "shape, message",
    [
        ("n=0,c=3,h=5,w=5,k=2,r=3,s=3", "n must be >= 1"),
        ("n=1,c=-3,h=5,w=5,k=2,r=3,s=3", "c must be >= 1"),
        ("n=1,c=3,h=2,w=5,k=2,r=3,s=3", "output size"),
        ("n=1,c=3,h=5,w=5,k=2,r=3,s=3,pad=-1", "pad_h must be >= 0"),
        ("n=1,c=3,h=5,w=5,k=2,r=3,s=3,foo=1", "unknown key"),
        ("n=1,c=x,h=5,w=5,k=2,r=3,s=3", "must be an integer"),
        ("n=1.5,c=3,h=5,w=5,k=2,r=3,s=3", "must be an integer"),
        ("n=1,c=3,h=5,w=5,k=2,r=3", "missing key"),
        ("n=1,c=3,h=5,w=5,k=2,r=3,s=3,groups=2", "not supported"),
        ("n=1,c=3,h=5,w=5,k=2,r=3,s=3,dtype=fp64", "not supported"),
        ("n=1,n=2", "given twice"),
        ("n1,c=3", "expected key=value"),
        ("", "empty shape"),
        ("n=100000,c=1000,h=1000,w=1000,k=2,r=1,s=1", "above the supported"),
        ("n=1,c=3,h=5,w=5,k=2,r=3,s=3,pad=1,pad_h=1", "not both"),
    ],
)
def test_bad_shapes_are_refused_with_a_reason(shape: str, message: str) -> None:
    with pytest.raises(ProblemError, match=message):
        Conv2dProblem.parse(shape)


@pytest.mark.parametrize(
    "args, message",
    [
        ("conv -n 1 -c 3 -H 5 -W 5 -k 2 -y 3 -x 3 -Z 1", "unknown MIOpenDriver option"),
        ("gemm -n 1", "must start with"),
        ("conv -n 1 -c 3 -H 5 -W 5 -k 2 -y 3 -x 3 -F 2", "only the forward"),
        ("conv -n 1 -c 3 -H 5 -W 5 -k 2 -y 3 -x", "needs a value"),
        ("conv -n 1 -c 3 -H 5 -W 5 -k 2 -y 3 -x 3 -g 2", "not supported"),
        ("conv -n 'unterminated", "cannot split"),
    ],
)
def test_bad_miopen_arguments(args: str, message: str) -> None:
    with pytest.raises(ProblemError, match=message):
        parse_miopen_driver(args)


def test_exactly_one_source_of_shape() -> None:
    with pytest.raises(ProblemError, match="exactly one"):
        parse_problem(None, None)
