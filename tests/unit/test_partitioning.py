"""murmur2 against the vectors of Kafka's own UtilsTest."""

from __future__ import annotations

import pytest

from runcoord.partitioning import murmur2, partition_for


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (b"21", -973932308),
        (b"foobar", -790332482),
        (b"a-little-bit-long-string", -985981536),
        (b"a-little-bit-longer-string", -1486304829),
        (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        (b"abc", 479470107),
    ],
)
def test_matches_kafka(key: bytes, expected: int) -> None:
    assert murmur2(key) == expected


def test_partition_is_in_range() -> None:
    assert {partition_for(f"run-{i}", 6) for i in range(200)} == set(range(6))
