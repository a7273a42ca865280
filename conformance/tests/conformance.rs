//! The conformance suite as tests. The suite runs once per test process (every test here reads
//! the same run): every probe on host-abi and through the proxy, the registry categories on
//! wasmesh's registry and on Debian's `docker-registry`, and the SDK languages' examples. Each
//! ABI area is a test that fails on a check that failed without a recorded gap (or a recorded
//! gap that passes now); `matrix_is_current` fails when `conformance/MATRIX.md` is not what
//! this run renders.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::sync::OnceLock;

use wasmesh_conformance::areas::AREAS;
use wasmesh_conformance::check::Env;
use wasmesh_conformance::checklist;
use wasmesh_conformance::gaps::GAPS;
use wasmesh_conformance::languages::Exercised;
use wasmesh_conformance::matrix::{self, REGENERATE, Status};
use wasmesh_conformance::registry::tests::Outcome;
use wasmesh_conformance::registry::{self, DOCKER_REGISTRY_GAPS, RegistryRun};
use wasmesh_conformance::suite::{self, SuiteResult};

fn suite() -> &'static SuiteResult {
    static SUITE: OnceLock<Result<SuiteResult, String>> = OnceLock::new();
    match SUITE.get_or_init(|| suite::run().map_err(|e| e.to_string())) {
        Ok(result) => result,
        Err(e) => panic!("the conformance suite could not run: {e}"),
    }
}

fn in_ci() -> bool {
    std::env::var_os("CI").is_some()
}

/// Straight to stderr: the harness captures the output of passing tests.
fn notice(message: &str) {
    let _ = writeln!(std::io::stderr(), "\n*** {message} ***\n");
}

fn area(name: &str) {
    let unexpected = suite().abi.unexpected(Some(name));
    assert!(
        unexpected.is_empty(),
        "area {name}: checks failed without a recorded gap (fix the host, or record the gap in conformance/src/gaps.rs with its reason):\n  {}",
        unexpected.join("\n  ")
    );
}

#[test]
fn integration() {
    area("integration");
}

#[test]
fn lifecycle() {
    area("lifecycle");
}

#[test]
fn logging() {
    area("logging");
}

#[test]
fn configuration() {
    area("configuration");
}

#[test]
fn headers() {
    area("headers");
}

#[test]
fn bodies() {
    area("bodies");
}

#[test]
fn trailers() {
    area("trailers");
}

#[test]
fn local_response() {
    area("local-response");
}

#[test]
fn properties() {
    area("properties");
}

#[test]
fn http_callout() {
    area("http-callout");
}

#[test]
fn grpc() {
    area("grpc");
}

#[test]
fn tick() {
    area("tick");
}

#[test]
fn shared_data() {
    area("shared-data");
}

#[test]
fn shared_queue() {
    area("shared-queue");
}

#[test]
fn metrics() {
    area("metrics");
}

#[test]
fn foreign() {
    area("foreign");
}

#[test]
fn tcp() {
    area("tcp");
}

#[test]
fn abi_v0_1_0() {
    area("abi-v0-1-0");
}

#[test]
fn bad_args() {
    area("bad-args");
}

#[test]
fn every_area_is_a_test_here() {
    let here = [
        "integration",
        "lifecycle",
        "logging",
        "configuration",
        "headers",
        "bodies",
        "trailers",
        "local-response",
        "properties",
        "http-callout",
        "grpc",
        "tick",
        "shared-data",
        "shared-queue",
        "metrics",
        "foreign",
        "tcp",
        "abi-v0-1-0",
        "bad-args",
    ];
    let areas: Vec<&str> = AREAS.iter().map(|a| a.name).collect();
    assert_eq!(areas, here, "add a test for each new area");
}

#[test]
fn checks_are_unique_and_prove_checklist_items() {
    let mut ids = BTreeSet::new();
    for area in AREAS {
        for check in (area.checks)() {
            assert!(ids.insert(check.id), "check {} is defined twice", check.id);
            assert!(
                !check.proves.is_empty(),
                "check {} proves no checklist item",
                check.id
            );
            for item in check.proves {
                assert!(
                    checklist::find(item).is_some(),
                    "check {} names {item}, which is not in the checklist",
                    check.id
                );
            }
        }
    }
    for gap in GAPS {
        assert!(
            ids.contains(gap.check),
            "gaps.rs names check {}, which does not exist",
            gap.check
        );
    }
    let names: Vec<&str> = registry::tests::TESTS
        .iter()
        .flat_map(|(_, n)| n.iter().copied())
        .collect();
    for gap in DOCKER_REGISTRY_GAPS {
        assert!(
            names.contains(&gap.test),
            "the reference's gap names test {}, which does not exist",
            gap.test
        );
    }
}

#[test]
fn every_checklist_item_is_proven_in_both_environments() {
    let judged = &suite().abi.judged;
    let mut problems = Vec::new();
    for item in checklist::all() {
        for env in Env::ALL {
            match matrix::status(judged, item, env) {
                Status::Unproven => problems.push(format!(
                    "{} [{}]: no check proves it",
                    item.name,
                    env.name()
                )),
                Status::Unexpected(ids) => problems.push(format!(
                    "{} [{}]: unexpected failures in {}",
                    item.name,
                    env.name(),
                    ids.join(", ")
                )),
                _ => {}
            }
        }
    }
    assert!(
        problems.is_empty(),
        "checklist items not proven:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn registry_passes_every_category() {
    let results = &suite().registry;
    let tested = match &results.tested {
        RegistryRun::Ran(tested) => tested,
        RegistryRun::NotRun(why) => panic!(
            "the registry under test ({}) did not run: {why}",
            results.target
        ),
    };
    let failed: Vec<String> = tested
        .iter()
        .filter(|t| t.outcome != Outcome::Pass)
        .map(|t| format!("{} / {}: {:?}", t.category, t.test, t.outcome))
        .collect();
    assert!(
        failed.is_empty(),
        "{} fails OCI conformance tests:\n  {}",
        results.target,
        failed.join("\n  ")
    );
}

#[test]
fn reference_registry_matches_its_known_gaps() {
    let tested = match &suite().registry.reference {
        RegistryRun::Ran(tested) => tested,
        RegistryRun::NotRun(why) => {
            assert!(
                !in_ci(),
                "the reference registry did not run, and CI is set: {why}"
            );
            notice(&format!("SKIPPED the reference registry: {why}"));
            return;
        }
    };
    let mut surprises = Vec::new();
    for t in tested {
        let gap = registry::reference_gap(t.test);
        match (&t.outcome, gap) {
            (Outcome::Pass, None) => {}
            (outcome, Some(g)) if outcome.name() == g.outcome => {}
            (outcome, Some(g)) => surprises.push(format!(
                "{}: {:?}, but its known gap says {} ({}): update DOCKER_REGISTRY_GAPS",
                t.test, outcome, g.outcome, g.reason
            )),
            (outcome, None) => surprises.push(format!("{}: {outcome:?}, not a known gap", t.test)),
        }
    }
    assert!(
        surprises.is_empty(),
        "docker-registry differs from its recorded gaps:\n  {}",
        surprises.join("\n  ")
    );
}

#[test]
fn sdk_languages() {
    let mut failures = Vec::new();
    for language in &suite().languages {
        failures.extend(language.failures());
        for (env, result) in &language.results {
            if let Exercised::NotExercised(why) = result {
                notice(&format!(
                    "{} not exercised in {}: {why}",
                    language.language,
                    env.name()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "guest SDK languages failed:\n  {}",
        failures.join("\n  ")
    );
}

#[test]
fn matrix_is_current() {
    if std::env::var_os(registry::REGISTRY_VAR).is_some() {
        notice(
            "SKIPPED matrix_is_current: the matrix describes wasmesh's registry, not the one WASMESH_CONFORMANCE_REGISTRY names",
        );
        return;
    }
    let result = suite();
    let missing_tools = result.languages.iter().any(|l| {
        l.results
            .values()
            .any(|r| matches!(r, Exercised::NotExercised(_)))
    }) || matches!(result.registry.reference, RegistryRun::NotRun(_));
    if missing_tools && !in_ci() {
        notice(
            "SKIPPED matrix_is_current: a toolchain or docker-registry is missing here (./setup.sh installs them); under CI this is compared",
        );
        return;
    }
    let rendered = matrix::render(result);
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/MATRIX.md");
    let current = std::fs::read_to_string(path).unwrap_or_default();
    if current != rendered {
        let first = current
            .lines()
            .zip(rendered.lines())
            .position(|(a, b)| a != b)
            .map(|i| i + 1)
            .unwrap_or_else(|| current.lines().count().min(rendered.lines().count()) + 1);
        panic!(
            "conformance/MATRIX.md is out of date (first difference at line {first}); regenerate it with `{REGENERATE}` and commit it.\n  checked in: {:?}\n  this run:   {:?}",
            current.lines().nth(first - 1).unwrap_or(""),
            rendered.lines().nth(first - 1).unwrap_or("")
        );
    }
}
