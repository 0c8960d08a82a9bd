"""Golden-value regression (diffusers-style): the composites and samplers of ``golden/cases.py``
reproduce the values saved before the library/applications split. Any change to the algebra,
the kernels, the driver or the batching that moves a sample shows up here."""

import pytest
import torch

from golden.cases import REFERENCE, cases


@pytest.mark.skipif(not torch.__version__.startswith("2.13"),
                    reason="golden values were recorded with torch 2.13 on CPU")
def test_golden_values_are_reproduced():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        now = cases()
    finally:
        torch.set_num_threads(threads)
    ref = torch.load(REFERENCE)
    assert sorted(now) == sorted(ref)
    for key, value in ref.items():
        torch.testing.assert_close(now[key], value, rtol=1e-6, atol=1e-6, msg=key)
