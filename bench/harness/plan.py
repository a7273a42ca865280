"""What the suite measures: the scenarios, which proxies run each, the filters, and how long.

A scenario fixes what crosses the proxy (downstream protocol, upstream protocol, filter chain);
every target of a scenario gets the same upstream, the same requests and the same load, in
interleaved rounds. The timings are chosen so a full run stays under 15 minutes on 2 cores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# The proxies under test, and "direct": the load generator straight to the upstream.
PROXIES = ("wasmesh", "envoy", "nginx", "haproxy")


@dataclass(frozen=True)
class Plugin:
    """One proxy-wasm filter in a chain: the same .wasm and configuration for every host."""

    name: str
    wasm: Path
    config: dict
    # Plugins sharing a vm_id share data and queues (the rate limiter's buckets).
    vm_id: str = ""
    # Response headers this plugin is expected to set (checked before measuring).
    expect_headers: tuple[str, ...] = ()


@dataclass
class Scenario:
    name: str
    title: str
    what: str  # one sentence: what the scenario measures
    targets: tuple[str, ...]
    downstream: str = "h1"  # h1 | h2c | tls
    upstream: str = "h1"  # h1 | h2c | mtls
    plugins: list[Plugin] = field(default_factory=list)
    body_rewrite: bool = False  # the response body comes back upper-cased
    headers: tuple[str, ...] = ()  # request headers the load generators send
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Timing:
    warmup_s: float  # per target, per scenario, before any round (not recorded)
    rounds: int  # saturating rounds
    duration_s: float  # one saturating round
    conns: int  # saturating: wrk connections (HTTP/1.1)
    h2_conns: int  # saturating: h2load connections (h2c) ...
    h2_streams: int  # ... and concurrent streams on each
    rates: tuple[int, ...]  # fixed-rate runs, requests per second (total)
    rate_rounds: int
    rate_duration_s: float  # measured part of one fixed-rate round ...
    rate_warmup_s: float  # ... after this long at the same rate (not recorded)
    rate_conns: int  # connections sharing the fixed rate (HTTP/1.1 and h2c alike)


FULL = Timing(
    warmup_s=1.0,
    rounds=3,
    duration_s=4.0,
    conns=64,
    h2_conns=8,
    h2_streams=8,
    rates=(1000, 5000),
    rate_rounds=2,
    rate_duration_s=3.0,
    rate_warmup_s=0.5,
    rate_conns=16,
)

SMOKE = Timing(
    warmup_s=0.2,
    rounds=1,
    duration_s=1.0,  # wrk's shortest
    conns=8,
    h2_conns=2,
    h2_streams=4,
    rates=(200,),
    rate_rounds=1,
    rate_duration_s=0.5,
    rate_warmup_s=0.1,
    rate_conns=4,
)

# The stock chain, in order, with the configuration each filter gets here. A filter whose crate
# is not in filters/ is left out, with a note in the results.
STOCK_CHAIN = ("ratelimit", "jwt-authn", "rbac", "headers", "metrics")


def stock_chain_configs(jwks: dict) -> dict[str, tuple[dict, str, tuple[str, ...]]]:
    """name -> (config, vm_id, response headers it sets) for the stock-chain scenario."""
    return {
        # One bucket per client address, far too large to ever limit: the filter still reads
        # and compare-and-swaps its bucket in shared data on every request.
        "ratelimit": (
            {
                "rules": [
                    {
                        "name": "per-ip",
                        "key": {"type": "client_ip"},
                        "bucket": {"max_tokens": 1_000_000_000, "fill_interval": "1s"},
                    }
                ],
                "headers_on_allowed": True,
            },
            "ratelimit",
            ("x-ratelimit-limit",),
        ),
        # RS256 token checked on every request against an inline JWKS.
        "jwt-authn": (
            {
                "providers": {
                    "bench": {
                        "issuer": "https://issuer.bench",
                        "audiences": ["bench"],
                        "local_jwks": jwks,
                        "claim_to_headers": [
                            {"header_name": "x-jwt-claim-sub", "claim_name": "sub"}
                        ],
                    }
                },
                "rules": [{"match": {"prefix": "/"}, "requires": ["bench"]}],
            },
            "",
            (),
        ),
        # Allow GETs from the token's subject, read from the header jwt-authn sets (and strips
        # from what clients send). On wasmesh rbac's `jwt_claim` principal would also see
        # jwt-authn's claims (filter state is shared along a chain; proxy/tests/mesh.rs), but
        # the header keeps the chain the same for Envoy, where that was not checked.
        "rbac": (
            {
                "action": "ALLOW",
                "policies": {
                    "bench-user": {
                        "permissions": [{"method": "GET"}],
                        "principals": [
                            {"header": {"name": "x-jwt-claim-sub", "exact": "bench-user"}}
                        ],
                    }
                },
            },
            "",
            (),
        ),
        "headers": (
            {
                "request": {"set": {"x-bench-chain": "1"}},
                "response": {"set": {"x-bench-chain": "1"}},
            },
            "",
            ("x-bench-chain",),
        ),
        "metrics": ({"labels": ["route", "code"]}, "", ()),
    }


def headers_plugins(count: int, wasm: Path) -> list[Plugin]:
    """`count` instances of the stock headers filter, each setting one request and one
    response header of its own."""
    return [
        Plugin(
            name=f"headers-{i}",
            wasm=wasm,
            config={
                "request": {"set": {f"x-filter-{i}": "1"}},
                "response": {"set": {f"x-filter-{i}": "1"}},
            },
            expect_headers=(f"x-filter-{i}",),
        )
        for i in range(1, count + 1)
    ]


def scenarios(
    headers_wasm: Path,
    body_wasm: Path,
    chain: list[Plugin],
    chain_notes: list[str],
    token: str,
) -> list[Scenario]:
    both = ("wasmesh", "envoy")
    return [
        Scenario(
            "plain",
            "Plain proxying",
            "HTTP/1.1 keep-alive in and out, no filters: the cost of the proxy itself.",
            ("direct", *PROXIES),
        ),
        Scenario(
            "h2c",
            "HTTP/2 (h2c) end to end",
            "h2c with prior knowledge from the client and to the upstream, multiplexed streams.",
            ("direct", *both),
            downstream="h2c",
            upstream="h2c",
        ),
        Scenario(
            "tls",
            "TLS termination",
            "TLS 1.3 (AES-128-GCM, ECDSA P-256) from the client, plain HTTP/1.1 upstream; "
            "connections are kept alive, so this is record encryption, not handshakes.",
            PROXIES,
            downstream="tls",
        ),
        Scenario(
            "mtls",
            "mTLS to the upstream",
            "Plain HTTP/1.1 in; TLS 1.3 with a client certificate to an upstream that requires "
            "one, upstream connections pooled.",
            PROXIES,
            upstream="mtls",
        ),
        Scenario(
            "filters-1",
            "1 header filter (Wasm)",
            "Plain proxying with the stock `headers` filter (one request and one response header "
            "set); the same .wasm in wasmesh (wasmtime) and Envoy (V8).",
            both,
            plugins=headers_plugins(1, headers_wasm),
        ),
        Scenario(
            "filters-5",
            "5 header filters (Wasm)",
            "Five instances of the same filter in one chain, each in its own VM.",
            both,
            plugins=headers_plugins(5, headers_wasm),
        ),
        Scenario(
            "body-rewrite",
            "Body-rewriting filter (Wasm)",
            "A filter that buffers the 1 KiB response body and replaces it with its upper-cased "
            "copy (bench/filters/uppercase-body); the same .wasm in both hosts.",
            both,
            plugins=[Plugin("uppercase-body", body_wasm, {})],
            body_rewrite=True,
        ),
        Scenario(
            "stock-chain",
            "Stock chain (Wasm)",
            "wasmesh only: the stock filters " + " + ".join(p.name for p in chain) + " in one "
            "chain; every request carries an RS256 JWT (verified by jwt-authn, its subject "
            "allowed by rbac).",
            ("wasmesh",),
            plugins=chain,
            headers=(f"authorization: Bearer {token}",),
            notes=chain_notes,
        ),
    ]


def estimate_seconds(plan: list[Scenario], t: Timing) -> float:
    """Measuring time of a run (start-ups and checks come on top, a few seconds a scenario)."""
    per_target = (
        t.warmup_s
        + t.rounds * t.duration_s
        + len(t.rates) * t.rate_rounds * (t.rate_duration_s + t.rate_warmup_s)
    )
    return sum(len(s.targets) * per_target + 3 for s in plan)
