"""A short, bounded soak (40 s of mixed traffic, 4 client workers, 2 Envoy workers): Envoy's
RSS and the filter's Wasm linear memory stay flat after warm-up. The bounds are generous on
purpose (a leak per request grows without bound; allocator noise does not): this is not a
timing assertion. The long version is `make soak`."""

from __future__ import annotations

from integration.soak import run_soak

MIB = 1024 * 1024


def test_memory_is_steady_under_mixed_traffic() -> None:
    result = run_soak(seconds=40, workers=4, sample_s=4, warmup_s=10)
    print(result.report())
    assert not result.log_has_panic  # type: ignore[attr-defined]
    assert result.failures == 0, result.by_status
    assert result.requests > 200, "the soak must actually push traffic"
    assert {200, 400, 413} <= set(result.by_status), result.by_status
    assert result.wasm_start > 0, "the filter publishes its Wasm memory gauge"
    assert result.wasm_end <= result.wasm_start * 1.5 + 1 * MIB, result.report()
    assert result.rss_end <= result.rss_start * 1.25 + 48 * MIB, result.report()
