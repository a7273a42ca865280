"""Certificates and a JWT for the suite, made with the openssl command line.

One CA signs an ECDSA P-256 server certificate (the proxies' TLS listeners), one for the TLS
upstream and one client certificate (the proxies' identity towards the upstream). The JWT is
RS256, signed by a fresh 2048-bit RSA key whose JWKS the jwt-authn filter is given.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SERVER_NAME = "bench.test"
UPSTREAM_NAME = "upstream.bench"


@dataclass
class Pki:
    dir: Path
    ca: Path
    server_cert: Path
    server_key: Path
    server_combined: Path  # cert + key in one file (haproxy)
    upstream_cert: Path
    upstream_key: Path
    client_cert: Path
    client_key: Path
    client_combined: Path
    client_openssl_conf: Path  # restricts the load generators to one TLS 1.3 suite


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _leaf(dir: Path, name: str, sans: str) -> tuple[Path, Path]:
    key, csr, cert, ext = (dir / f"{name}{s}" for s in (".key", ".csr", ".pem", ".ext"))
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-out", key.name, cwd=dir)
    _openssl("req", "-new", "-key", key.name, "-subj", f"/CN={name}", "-out", csr.name, cwd=dir)
    ext.write_text(
        f"subjectAltName={sans}\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
    )
    _openssl("x509", "-req", "-in", csr.name, "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "7", "-sha256", "-extfile", ext.name,
             "-out", cert.name, cwd=dir)
    return cert, key


def make_pki(dir: Path) -> Pki:
    dir.mkdir(parents=True, exist_ok=True)
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-out", "ca.key", cwd=dir)
    _openssl("req", "-x509", "-new", "-key", "ca.key", "-sha256", "-days", "7",
             "-subj", "/CN=wasmesh bench CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-out", "ca.pem", cwd=dir)
    server_cert, server_key = _leaf(dir, "server", f"DNS:{SERVER_NAME},IP:127.0.0.1")
    upstream_cert, upstream_key = _leaf(dir, "upstream", f"DNS:{UPSTREAM_NAME},IP:127.0.0.1")
    client_cert, client_key = _leaf(dir, "client", "URI:spiffe://bench/proxy")
    server_combined = dir / "server-combined.pem"
    server_combined.write_text(server_cert.read_text() + server_key.read_text())
    client_combined = dir / "client-combined.pem"
    client_combined.write_text(client_cert.read_text() + client_key.read_text())
    # wrk uses the system OpenSSL's defaults; this configuration makes it offer only
    # TLS_AES_128_GCM_SHA256 (h2load sets its own list: it gets --tls13-ciphers), so every
    # proxy's TLS library ends up on the same cipher.
    conf = dir / "client-openssl.cnf"
    conf.write_text(
        "openssl_conf = bench\n"
        "[bench]\nssl_conf = bench_ssl\n"
        "[bench_ssl]\nsystem_default = bench_default\n"
        "[bench_default]\nMinProtocol = TLSv1.3\nCiphersuites = TLS_AES_128_GCM_SHA256\n"
    )
    return Pki(dir, dir / "ca.pem", server_cert, server_key, server_combined, upstream_cert,
               upstream_key, client_cert, client_key, client_combined, conf)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(dir: Path, subject: str = "bench-user") -> tuple[dict, str]:
    """Returns (JWKS with the public key, a token valid for a day)."""
    key = dir / "jwt.key"
    _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
             "-out", key.name, cwd=dir)
    modulus = subprocess.run(
        ["openssl", "rsa", "-in", str(key), "-noout", "-modulus"],
        check=True, capture_output=True, text=True,
    ).stdout.strip().split("=", 1)[1]
    n = bytes.fromhex(modulus)
    jwks = {"keys": [{"kty": "RSA", "kid": "bench", "alg": "RS256", "use": "sig",
                      "n": _b64url(n), "e": _b64url((65537).to_bytes(3, "big"))}]}
    now = int(time.time())
    header = {"alg": "RS256", "typ": "JWT", "kid": "bench"}
    claims = {"iss": "https://issuer.bench", "aud": "bench", "sub": subject,
              "iat": now, "exp": now + 86400}
    signing_input = (_b64url(json.dumps(header, separators=(",", ":")).encode()) + "."
                     + _b64url(json.dumps(claims, separators=(",", ":")).encode()))
    signature = subprocess.run(
        ["openssl", "dgst", "-sha256", "-sign", str(key)],
        input=signing_input.encode(), check=True, capture_output=True,
    ).stdout
    return jwks, signing_input + "." + _b64url(signature)
