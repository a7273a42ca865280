"""Equivalent configurations of the four proxies for one scenario.

Every proxy gets: one listener on loopback, one route to one cluster with one endpoint,
HTTP/1.1 keep-alive to the upstream (or h2c, or TLS with a client certificate), a 15 s route
timeout, no access log, no per-connection request limit, and the same request decoration the
others add: `x-forwarded-for`, `x-forwarded-proto` and a generated `x-request-id`. Each runs
one worker: wasmesh `--concurrency 1`, Envoy `--concurrency 1`, nginx `worker_processes 1`,
haproxy `nbthread 1`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .pki import UPSTREAM_NAME, Pki
from .plan import Plugin, Scenario


@dataclass
class Launch:
    argv: list[str]
    env: dict[str, str]
    config: Path


def wasmesh(bin: Path, s: Scenario, port: int, upstream_port: int, pki: Pki, dir: Path) -> Launch:
    lines = [
        "listeners:",
        "  - name: bench",
        f'    address: "127.0.0.1:{port}"',
        "    route_config: bench",
    ]
    if s.plugins:
        lines.append("    filter_chain: chain")
    if s.downstream == "tls":
        lines += [
            "    tls:",
            f"      certificates: [{{ cert_file: {pki.server_cert}, key_file: {pki.server_key} }}]",
            '      alpn: [h2, "http/1.1"]',
        ]
    lines += [
        "routes:",
        "  - name: bench",
        "    virtual_hosts:",
        '      - { name: all, domains: ["*"], routes: [{ name: all, match: { prefix: "/" }, '
        "cluster: upstream, timeout: 15s }] }",
        "clusters:",
        "  - name: upstream",
        f'    endpoints: ["127.0.0.1:{upstream_port}"]',
        f"    protocol: {'http2' if s.upstream == 'h2c' else 'http1'}",
    ]
    if s.upstream == "mtls":
        lines.append(
            f"    tls: {{ sni: {UPSTREAM_NAME}, ca_file: {pki.ca}, cert_file: {pki.client_cert}, "
            f"key_file: {pki.client_key} }}"
        )
    if s.plugins:
        lines += ["filter_chains:", "  - name: chain", "    plugins:"]
        for p in s.plugins:
            lines += [
                f"      - name: {p.name}",
                f'        source: "file://{p.wasm}"',
                f"        config: {json.dumps(p.config)}",
            ]
            if p.vm_id:
                lines.append(f"        vm_id: {p.vm_id}")
    config = dir / f"wasmesh-{s.name}.yaml"
    config.write_text("\n".join(lines) + "\n")
    return Launch(
        [str(bin), "run", "--concurrency", "1", "--config", str(config)],
        # A cache of its own per scenario: each instance compiles its modules at start, as
        # Envoy's V8 does, so peak memory includes that alike.
        {"RUST_LOG": "warn", "WASMESH_CACHE_DIR": str(dir / f"wasmesh-module-cache-{s.name}")},
        config,
    )


def _envoy_wasm_filter(p: Plugin) -> dict:
    return {
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": p.name,
                "root_id": "",
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": json.dumps(p.config),
                },
                "fail_open": False,
                "vm_config": {
                    # Its own VM per plugin, as wasmesh gives each plugin its own replicas.
                    "vm_id": p.vm_id or p.name,
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": str(p.wasm)}},
                },
            },
        },
    }


def envoy(bin: Path, s: Scenario, port: int, upstream_port: int, pki: Pki, dir: Path) -> Launch:
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
        ".HttpConnectionManager",
        "stat_prefix": "bench",
        "codec_type": "AUTO",
        # Append the client to x-forwarded-for, as the others do.
        "use_remote_address": True,
        "route_config": {
            "name": "bench",
            "virtual_hosts": [{
                "name": "all",
                "domains": ["*"],
                "routes": [{"match": {"prefix": "/"},
                            "route": {"cluster": "upstream", "timeout": "15s"}}],
            }],
        },
        "http_filters": [_envoy_wasm_filter(p) for p in s.plugins] + [{
            "name": "envoy.filters.http.router",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
                # No x-envoy-expected-rq-timeout-ms / x-envoy-upstream-service-time: the
                # others add no such headers.
                "suppress_envoy_headers": True,
            },
        }],
    }
    chain: dict = {"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                "typed_config": hcm}]}
    if s.downstream == "tls":
        chain["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3"
                ".DownstreamTlsContext",
                "common_tls_context": {
                    "tls_certificates": [{"certificate_chain": {"filename": str(pki.server_cert)},
                                          "private_key": {"filename": str(pki.server_key)}}],
                    "alpn_protocols": ["h2", "http/1.1"],
                },
            },
        }
    cluster: dict = {
        "name": "upstream",
        "type": "STATIC",
        "connect_timeout": "5s",
        "load_assignment": {"cluster_name": "upstream", "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {
                "address": "127.0.0.1", "port_value": upstream_port}}}}]}]},
    }
    if s.upstream == "h2c":
        cluster["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3"
                ".HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        }
    if s.upstream == "mtls":
        cluster["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3"
                ".UpstreamTlsContext",
                "sni": UPSTREAM_NAME,
                "common_tls_context": {
                    "tls_certificates": [{"certificate_chain": {"filename": str(pki.client_cert)},
                                          "private_key": {"filename": str(pki.client_key)}}],
                    "validation_context": {
                        "trusted_ca": {"filename": str(pki.ca)},
                        # Check the name, as the others do with their SNI name.
                        "match_typed_subject_alt_names": [
                            {"san_type": "DNS", "matcher": {"exact": UPSTREAM_NAME}}],
                    },
                },
            },
        }
    bootstrap = {
        "static_resources": {
            "listeners": [{
                "name": "bench",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [chain],
            }],
            "clusters": [cluster],
        },
    }
    config = dir / f"envoy-{s.name}.json"
    config.write_text(json.dumps(bootstrap, indent=1))
    return Launch(
        [str(bin), "-c", str(config), "--concurrency", "1", "--disable-hot-restart",
         "--log-level", "error", "--log-path", str(dir / f"envoy-{s.name}.log")],
        {},
        config,
    )


def nginx(s: Scenario, port: int, upstream_port: int, pki: Pki, dir: Path) -> Launch:
    temp = dir / f"nginx-{s.name}"
    temp.mkdir(exist_ok=True)
    listen = f"listen 127.0.0.1:{port}" + (" ssl" if s.downstream == "tls" else "") + ";"
    tls = ""
    if s.downstream == "tls":
        tls = (f"ssl_certificate {pki.server_cert}; ssl_certificate_key {pki.server_key};\n"
               "    ssl_protocols TLSv1.2 TLSv1.3;\n")
    scheme = "https" if s.upstream == "mtls" else "http"
    upstream_tls = ""
    if s.upstream == "mtls":
        upstream_tls = (
            f"      proxy_ssl_certificate {pki.client_cert};\n"
            f"      proxy_ssl_certificate_key {pki.client_key};\n"
            f"      proxy_ssl_trusted_certificate {pki.ca};\n"
            "      proxy_ssl_verify on;\n"
            f"      proxy_ssl_name {UPSTREAM_NAME};\n"
            "      proxy_ssl_server_name on;\n"
            "      proxy_ssl_session_reuse on;\n"
        )
    text = f"""worker_processes 1;
daemon off;
pid {temp}/nginx.pid;
error_log {temp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {temp}; proxy_temp_path {temp}; fastcgi_temp_path {temp};
  uwsgi_temp_path {temp}; scgi_temp_path {temp};
  # nginx closes a connection after 1000 requests by default; the others never do.
  keepalive_requests 1000000000;
  upstream backend {{
    server 127.0.0.1:{upstream_port};
    keepalive 128;
    keepalive_requests 1000000000;
  }}
  server {{
    {listen}
    {tls}    location / {{
      proxy_pass {scheme}://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Request-Id $request_id;
      proxy_read_timeout 15s;
{upstream_tls}    }}
  }}
}}
"""
    config = dir / f"nginx-{s.name}.conf"
    config.write_text(text)
    return Launch(["nginx", "-e", str(temp / "error.log"), "-p", str(temp), "-c", str(config)],
                  {}, config)


def haproxy(s: Scenario, port: int, upstream_port: int, pki: Pki, dir: Path) -> Launch:
    bind = f"bind 127.0.0.1:{port}"
    if s.downstream == "tls":
        bind += f" ssl crt {pki.server_combined} alpn http/1.1"
    server = f"server up 127.0.0.1:{upstream_port}"
    if s.upstream == "mtls":
        server += (f" ssl crt {pki.client_combined} ca-file {pki.ca} verify required"
                   f" sni str({UPSTREAM_NAME}) verifyhost {UPSTREAM_NAME}")
    proto = "https" if s.downstream == "tls" else "http"
    text = f"""global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 15s
  timeout http-keep-alive 75s
  option http-keep-alive
  # Any idle upstream connection serves any request, as the others' pools do.
  http-reuse always
frontend bench
  {bind}
  option forwardfor
  http-request set-header X-Forwarded-Proto {proto}
  unique-id-format %[uuid()]
  http-request set-header X-Request-Id %[unique-id]
  default_backend upstream
backend upstream
  {server}
"""
    config = dir / f"haproxy-{s.name}.cfg"
    config.write_text(text)
    return Launch(["haproxy", "-db", "-f", str(config)], {}, config)
