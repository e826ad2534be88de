"""espalier.bench_decode on a small random image: counts agree with the golden model."""

import pytest

from espalier.bench_decode import bench_decode
from tests.imagegen import random_image
from weights.image import ImageError, read_image, write_image


def test_bench_small_image():
    data = write_image(random_image(0, 8))
    image = read_image(data)
    seen = []
    r = bench_decode(data, "small", progress=lambda done, total, fig: seen.append(done))
    assert seen == list(range(1, len(image.layers) + 1))
    assert r["lanes"] == 2
    assert r["symbols"] == sum(layer.symbol_count() for layer in image.layers)
    assert [f["symbols"] for f in r["layers"]] == [la.symbol_count() for la in image.layers]
    assert r["cycles"] == sum(f["cycles"] for f in r["layers"])
    assert 0 < r["symbols_per_cycle_per_lane"] <= 1
    assert r["weights"] == sum(la.out_c * la.fan_in for la in image.layers)
    assert r["sim_cycles_per_s"] > 0


def test_bench_one_lane():
    """The one-lane fetch (``icebreaker``) reads the streams' byte count, not the sizes
    (the harness left it unset until session 14, and the bench never ended)."""
    data = write_image(random_image(2, 8))
    image = read_image(data)
    r = bench_decode(data, "icebreaker")
    assert r["lanes"] == 1
    assert [f["symbols"] for f in r["layers"]] == [la.symbol_count() for la in image.layers]
    assert 0 < r["symbols_per_cycle_per_lane"] <= 1


def test_bench_refuses():
    data = write_image(random_image(1, 16))
    with pytest.raises(ValueError, match="data width"):
        bench_decode(data, "small")
    with pytest.raises(ImageError):
        bench_decode(data[:-1], "small")
