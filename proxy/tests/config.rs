//! `wasmesh validate` and `wasmesh run` on bad configuration: every error listed with
//! file:line: field, a non-zero exit, and nothing started.

mod support;

use support::validate;

#[test]
fn every_error_is_listed_with_line_and_field() {
    let yaml = r#"listeners:
  - name: main
    address: "127.0.0.1:notaport"
    route_config: missing
routes:
  - name: main
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: { prefix: "/" }
            cluster: nowhere
clusters: []
"#;
    let (ok, out, path) = validate(yaml);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("{path}:3: listeners[0].address")),
        "{out}"
    );
    assert!(
        out.contains(&format!("{path}:4: listeners[0].route_config")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "{path}:12: routes[0].virtual_hosts[0].routes[0].cluster"
        )),
        "{out}"
    );
}

#[test]
fn unknown_field_is_named() {
    let yaml = "listeners: []\nclusters:\n  - name: c\n    endpoints: [\"127.0.0.1:1\"]\n    lb_polcy: random\n";
    let (ok, out, path) = validate(yaml);
    assert!(!ok);
    assert!(out.contains(&format!("{path}:5")), "{out}");
    assert!(out.contains("lb_polcy"), "{out}");
}

#[test]
fn missing_certificate_file_is_named() {
    let yaml = r#"listeners:
  - name: tls
    address: "127.0.0.1:0"
    route_config: main
    tls:
      certificates:
        - cert_file: /nonexistent/server.pem
          key_file: /nonexistent/server.key
routes:
  - name: main
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: { prefix: "/" }
            cluster: c
clusters:
  - name: c
    endpoints: ["127.0.0.1:1"]
"#;
    let (ok, out, _) = validate(yaml);
    assert!(!ok);
    assert!(out.contains("/nonexistent/server.pem"), "{out}");
}

#[test]
fn run_refuses_an_invalid_config() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, "listeners: 5\n").expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wasmesh"))
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("listeners"), "{stderr}");
}
