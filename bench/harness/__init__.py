"""The benchmark suite behind `bench/run`: wasmesh beside Envoy, nginx and haproxy on one
upstream, scenario by scenario, in interleaved rounds; writes RESULTS.md and results.png.

plan       what is measured: scenarios, targets, filters, timings
pki        certificates and a JWT (openssl)
configs    equivalent configurations of the four proxies
processes  starting and stopping pinned processes
load       wrk and h2load runs and their figures
procstat   CPU time and peak memory from /proc
report     RESULTS.md and the chart
__main__   the run itself
"""
