"""Options that would exhaust memory are refused with one clear message before anything is allocated."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from latentdask.stats.options import MAX_BINS, SummaryParams


def test_a_bin_width_that_asks_for_millions_of_bins_is_refused() -> None:
    # 1e-7 over the default range [-16, 16] is 320 million bins per component: a MemoryError before
    with pytest.raises(ValidationError) as caught:
        SummaryParams(bin_width=1e-7)
    message = str(caught.value)
    assert f"{round(32 / 1e-7):,} bins per component" in message
    assert "--bin-width" in message and "--range" in message
    with pytest.raises(ValidationError, match="radius_width"):
        SummaryParams(radius_width=1e-9)


def test_the_finest_allowed_bins_equal_numpys() -> None:
    params = SummaryParams(bin_width=32 / MAX_BINS)
    np.testing.assert_array_equal(params.edges, np.histogram_bin_edges([], bins=MAX_BINS, range=(-16, 16)))
    with pytest.raises(ValidationError, match=f"{2 * MAX_BINS:,} bins"):
        SummaryParams(bin_width=16 / MAX_BINS)
