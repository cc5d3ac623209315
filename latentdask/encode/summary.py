"""What an encode run did: its shards, images, invalid rows and times, as the command prints them."""

from __future__ import annotations

from dataclasses import dataclass, field

from latentdask.location import Location


@dataclass
class EncodeSummary:
    """The end of a run: what was done, how long it took, where it went."""

    store: Location
    images: int
    shards_total: int
    shards_run: int
    shards_skipped: int
    invalid: dict[str, int]
    wall_seconds: float
    compute_seconds: float = 0.0  # from the first task submitted to the last result
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def images_per_second(self) -> float:
        """Throughput of the tasks, without cluster start-up and store creation."""
        return self.images / self.compute_seconds if self.compute_seconds else 0.0

    def lines(self) -> list[str]:
        invalid = sum(self.invalid.values())
        reasons = ", ".join(f"{reason}: {count}" for reason, count in sorted(self.invalid.items()))
        stages = ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in self.stage_seconds.items())
        return [
            f"encoded {self.images} images in {self.shards_run} shard(s) "
            f"({self.shards_skipped} already done, {self.shards_total} in all) → {self.store}",
            f"invalid {invalid}" + (f" ({reasons})" if reasons else ""),
            f"wall time {self.wall_seconds:.1f} s, start-up included; {self.images_per_second:.0f} images/s "
            f"over the {self.compute_seconds:.1f} s the shards took (the progress bar's rate)",
            f"time per stage, summed over workers: {stages}",
        ]
