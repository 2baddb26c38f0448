/work/wt/integ2/integration/bench/upstream/target/debug/deps/bench_upstream-e67d846d3d7f4519.d: src/main.rs

/work/wt/integ2/integration/bench/upstream/target/debug/deps/libbench_upstream-e67d846d3d7f4519.rmeta: src/main.rs

src/main.rs:
