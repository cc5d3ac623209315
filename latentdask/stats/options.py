"""What the statistics commands are asked: :class:`SummaryParams` (``stats``, the encode
sidecar, a workflow's ``stats``) and :class:`NormalityOptions` (``normality``). Kept apart from
the code that computes, so that reading a workflow file imports neither numba nor scipy."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from latentdask.stats.kernels import uniform_edges

#: the most bins a histogram may have. Every chunk's state holds components × bins int64
#: counts (at 256 components and 65,536 bins, 128 MiB), every encode task and every merge of
#: ``split_every`` states holds some at once; more would exhaust a worker's memory before a
#: row is read (a bin width of 1e-7 over the default range asks for 320 million bins).
MAX_BINS = 65_536


class SummaryParams(BaseModel):
    """What to count: bin edges and thresholds are fixed before the pass (nothing computed to find them)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bin_width: float = Field(default=0.125, gt=0)
    range: tuple[float, float] = (-16.0, 16.0)
    thresholds: tuple[float, ...] = (1.5, 2.0)
    radius_width: float = Field(default=0.125, gt=0)
    radius_max: float = Field(default=64.0, gt=0)
    correlation_levels: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
    strong_correlation: float = Field(default=0.5, gt=0, le=1)

    @model_validator(mode="after")
    def _edges_fit(self) -> SummaryParams:
        low, high = self.range
        if not low < high:
            raise ValueError(f"range must be (low, high) with low < high, got {self.range}")
        _check_bins(
            (high - low) / self.bin_width,
            f"bin width {self.bin_width:g} over the range [{low:g}, {high:g}] (--bin-width, --range)",
            " per component",
            "use a wider --bin-width or a narrower --range",
        )
        _check_bins(
            self.radius_max / self.radius_width,
            f"radius_width {self.radius_width:g} up to radius_max {self.radius_max:g}",
            "",
            "use a wider radius_width or a smaller radius_max",
        )
        uniform_edges(low, high, self.bin_width)  # raises if the width does not divide the range
        uniform_edges(0.0, self.radius_max, self.radius_width)
        if any(t <= 0 for t in self.thresholds):
            raise ValueError(f"thresholds must be positive, got {self.thresholds}")
        return self

    @property
    def edges(self) -> np.ndarray:
        return uniform_edges(self.range[0], self.range[1], self.bin_width)

    @property
    def radius_edges(self) -> np.ndarray:
        return uniform_edges(0.0, self.radius_max, self.radius_width)


def _check_bins(bins: float, what: str, per: str, remedy: str) -> None:
    """Refuse a bin count above :data:`MAX_BINS` before anything is allocated."""
    if not bins <= MAX_BINS:  # also catches inf and nan
        raise ValueError(
            f"{what} gives {bins:,.0f} bins{per}; at most {MAX_BINS:,} fit in a worker's memory: {remedy}"
        )


#: rows Mardia's skewness is computed on: every row up to this many, a seeded sample of this
#: many above (n·N²(N+1)/2 multiply-adds: 1.7 · 10¹² for CelebA's 202,599 rows at N = 256)
SKEWNESS_ROWS = 250_000


class NormalityOptions(BaseModel):
    """The options of ``latentdask normality`` and of a workflow's ``normality`` section."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sample_size: int = Field(default=5000, ge=3, le=5000)  # Shapiro–Wilk is defined for 3 to 5,000 values
    hz_size: int = Field(default=2000, ge=1)
    skewness_rows: int = Field(default=SKEWNESS_ROWS, ge=50_000)  # above: Mardia's skewness on a sample
    alpha: float = Field(default=0.01, gt=0, lt=1)
    split: str | None = None  # None: the rows the statistics describe (any other is refused)
    where: tuple[str, ...] | None = None
    seed: int = 0
