//! Renders `MATRIX.md` from a suite run: deterministic (no timings, no addresses, fixed
//! order), so the checked-in file can be compared with a fresh rendering.

use std::fmt::Write as _;

use crate::abi::Judged;
use crate::areas::AREAS;
use crate::check::{Env, Verdict};
use crate::checklist::{self, Item};
use crate::gaps::{GAPS, GapKind};
use crate::languages::Exercised;
use crate::registry::tests::{Outcome, TESTS};
use crate::registry::{DOCKER_REGISTRY_GAPS, RegistryRun, reference_gap};
use crate::suite::SuiteResult;

/// The command that regenerates the matrix.
pub const REGENERATE: &str = "cargo run -p wasmesh-conformance -- report";

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// An item's status in one environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Pass,
    Fail(Vec<&'static str>),
    NotSupported(String),
    /// It passes, but parts of it (the listed checks) are not supported.
    PassExcept(Vec<&'static str>),
    /// A check proving it failed without a recorded gap: the suite fails.
    Unexpected(Vec<&'static str>),
    /// No check proves it here: the suite fails.
    Unproven,
}

impl Status {
    pub fn show(&self) -> String {
        match self {
            Status::Pass => "pass".into(),
            Status::Fail(ids) => format!("**fail** ({})", ids.join(", ")),
            Status::NotSupported(why) => format!("not supported: {why}"),
            Status::PassExcept(ids) => format!("pass, except not supported: {}", ids.join(", ")),
            Status::Unexpected(ids) => format!("**FAIL, unexpected** ({})", ids.join(", ")),
            Status::Unproven => "**not proven**".into(),
        }
    }
}

/// The checks that prove `item` (in any environment).
pub fn proving<'a>(judged: &'a [Judged], item: &Item) -> Vec<&'a Judged> {
    judged
        .iter()
        .filter(|j| j.check.proves.contains(&item.name))
        .collect()
}

/// The status of `item` in `env`.
pub fn status(judged: &[Judged], item: &Item, env: Env) -> Status {
    if let Some((scope, why)) = item.not_supported
        && scope.covers(env)
    {
        return Status::NotSupported(why.to_string());
    }
    let verdicts: Vec<(&'static str, &Verdict)> = proving(judged, item)
        .into_iter()
        .filter_map(|j| j.verdicts.get(&env).map(|v| (j.check.id, v)))
        .collect();
    if verdicts.is_empty() {
        return Status::Unproven;
    }
    let ids = |f: &dyn Fn(&Verdict) -> bool| -> Vec<&'static str> {
        verdicts
            .iter()
            .filter(|(_, v)| f(v))
            .map(|(id, _)| *id)
            .collect()
    };
    let unexpected = ids(&|v| matches!(v, Verdict::Unexpected(_)));
    if !unexpected.is_empty() {
        return Status::Unexpected(unexpected);
    }
    let failed = ids(&|v| matches!(v, Verdict::Gap(GapKind::Fail, _)));
    if !failed.is_empty() {
        return Status::Fail(failed);
    }
    let unsupported = ids(&|v| matches!(v, Verdict::Gap(GapKind::NotSupported, _)));
    if unsupported.is_empty() {
        Status::Pass
    } else if unsupported.len() == verdicts.len() {
        Status::NotSupported(format!("see known gaps ({})", unsupported.join(", ")))
    } else {
        Status::PassExcept(unsupported)
    }
}

fn verdict_cell(verdict: Option<&Verdict>) -> String {
    match verdict {
        None => "—".into(),
        Some(Verdict::Pass) => "pass".into(),
        Some(Verdict::Gap(kind, _)) => format!("**{}** (known gap)", kind.name()),
        Some(Verdict::Unexpected(detail)) => format!("**FAIL, unexpected**: {}", cell(detail)),
    }
}

fn items_table(out: &mut String, judged: &[Judged], items: &[Item]) {
    out.push_str(
        "| area | kind | name | host-abi | proxy | proven by |\n|---|---|---|---|---|---|\n",
    );
    for item in items {
        let mut by: Vec<&str> = proving(judged, item).iter().map(|j| j.check.id).collect();
        by.sort_unstable();
        let _ = writeln!(
            out,
            "| {} | {} | `{}` | {} | {} | {} |",
            item.area,
            item.kind.name(),
            item.name,
            cell(&status(judged, item, Env::HostAbi).show()),
            cell(&status(judged, item, Env::Proxy).show()),
            if by.is_empty() {
                "—".to_string()
            } else {
                by.iter()
                    .map(|id| format!("`{id}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        );
    }
}

fn count(judged: &[Judged], items: &[Item], env: Env) -> String {
    let statuses: Vec<Status> = items.iter().map(|i| status(judged, i, env)).collect();
    let n = |f: fn(&Status) -> bool| statuses.iter().filter(|s| f(s)).count();
    let mut parts = vec![format!("{} pass", n(|s| *s == Status::Pass))];
    for (label, k) in [
        ("fail", n(|s| matches!(s, Status::Fail(_)))),
        ("not supported", n(|s| matches!(s, Status::NotSupported(_)))),
        (
            "pass except parts not supported",
            n(|s| matches!(s, Status::PassExcept(_))),
        ),
        (
            "unexpected failures",
            n(|s| matches!(s, Status::Unexpected(_))),
        ),
        ("not proven", n(|s| *s == Status::Unproven)),
    ] {
        if k > 0 {
            parts.push(format!("{k} {label}"));
        }
    }
    format!("{} items: {}", items.len(), parts.join(", "))
}

fn outcome_cell(run: &RegistryRun, test: &str, reference: bool) -> String {
    match run {
        RegistryRun::NotRun(why) => format!("not run: {}", cell(why)),
        RegistryRun::Ran(tested) => {
            match tested.iter().find(|t| t.test == test).map(|t| &t.outcome) {
                None => "—".into(),
                Some(Outcome::Pass) => "pass".into(),
                Some(o) => {
                    let gap = if reference {
                        reference_gap(test).filter(|g| g.outcome == o.name())
                    } else {
                        None
                    };
                    match (o, gap) {
                        (_, Some(_)) => format!("{} (known gap)", o.name()),
                        (Outcome::Unsupported(why), None) => {
                            format!("**unsupported, unexpected**: {}", cell(why))
                        }
                        (Outcome::Fail(why), None) => format!("**FAIL**: {}", cell(why)),
                        (Outcome::Pass, None) => "pass".into(),
                    }
                }
            }
        }
    }
}

fn registry_count(run: &RegistryRun) -> String {
    match run {
        RegistryRun::NotRun(_) => "not run".into(),
        RegistryRun::Ran(tested) => {
            let pass = tested.iter().filter(|t| t.outcome == Outcome::Pass).count();
            format!(
                "{} tests: {pass} pass, {} other",
                tested.len(),
                tested.len() - pass
            )
        }
    }
}

fn exercised(e: Option<&Exercised>) -> String {
    match e {
        None => "—".into(),
        Some(Exercised::Pass) => "pass".into(),
        Some(Exercised::PassWithGaps(1)) => "pass (1 known host gap)".to_string(),
        Some(Exercised::PassWithGaps(n)) => format!("pass ({n} known host gaps)"),
        Some(Exercised::Fail(d)) => format!("**FAIL**: {}", cell(d)),
        Some(Exercised::NotExercised(why)) => format!("not exercised: {}", cell(why)),
    }
}

/// The matrix for `result`.
pub fn render(result: &SuiteResult) -> String {
    let judged = &result.abi.judged;
    let mut out = String::new();
    let _ = write!(
        out,
        "# wasmesh conformance matrix\n\n\
Generated from the conformance suite's runs by `{REGENERATE}`; never edit it by hand \
(`cargo test -p wasmesh-conformance` fails when it is out of date). What the suite is and how \
to run it: [README.md](README.md).\n\n\
Environments: **host-abi** is `wasmesh-host` alone, driven by the SDK's deterministic test \
harness; **proxy** is the real proxy (`wasmesh_proxy::server::Server`) in process, driven by \
HTTP, gRPC and TCP peers over loopback sockets. Every probe reports what it observed; the \
suite compares it with the value the proxy-wasm spec (v0.2.1) or Envoy gives (the *source* of \
each check).\n\n"
    );
    out.push_str("## Summary\n\n| | host-abi | proxy |\n|---|---|---|\n");
    let _ = writeln!(
        out,
        "| ABI v0.2.1 checklist | {} | {} |",
        count(judged, checklist::V0_2_1, Env::HostAbi),
        count(judged, checklist::V0_2_1, Env::Proxy)
    );
    let _ = writeln!(
        out,
        "| ABI v0.1.0 / v0.2.0 variants | {} | {} |",
        count(judged, checklist::VARIANTS, Env::HostAbi),
        count(judged, checklist::VARIANTS, Env::Proxy)
    );
    let checks_in = |env: Env| {
        let all: Vec<&Verdict> = judged.iter().filter_map(|j| j.verdicts.get(&env)).collect();
        let pass = all.iter().filter(|v| ***v == Verdict::Pass).count();
        let gaps = all.iter().filter(|v| matches!(v, Verdict::Gap(..))).count();
        let unexpected = all.len() - pass - gaps;
        let noun = if gaps == 1 { "gap" } else { "gaps" };
        let mut text = format!("{} checks: {pass} pass, {gaps} known {noun}", all.len());
        if unexpected > 0 {
            let _ = write!(text, ", {unexpected} unexpected failures");
        }
        text
    };
    let _ = writeln!(
        out,
        "| checks | {} | {} |",
        checks_in(Env::HostAbi),
        checks_in(Env::Proxy)
    );
    let _ = writeln!(
        out,
        "\nRegistry conformance: {} on {}; {} on the reference (Debian `docker-registry`).\n",
        registry_count(&result.registry.tested),
        cell(&result.registry.target),
        registry_count(&result.registry.reference)
    );

    out.push_str("## proxy-wasm ABI v0.2.1 checklist\n\nEvery host function, callback and type of the checklist, and the checks that prove it.\n\n");
    items_table(&mut out, judged, checklist::V0_2_1);
    out.push_str("\n## ABI v0.1.0 and v0.2.0 variants\n\n");
    items_table(&mut out, judged, checklist::VARIANTS);

    out.push_str("\n## Known gaps\n\nChecks that fail for a known reason (`conformance/src/gaps.rs`), until the host is fixed.\n\n| check | where | status | reason |\n|---|---|---|---|\n");
    let mut gaps: Vec<_> = GAPS.iter().collect();
    gaps.sort_by_key(|g| g.check);
    for g in gaps {
        let scope = match g.scope {
            crate::check::Scope::Both => "host-abi, proxy".to_string(),
            crate::check::Scope::Only(env) => env.name().to_string(),
        };
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} |",
            g.check,
            scope,
            g.kind.name(),
            cell(g.reason)
        );
    }
    if GAPS.is_empty() {
        out.push_str("| — | | | |\n");
    }

    out.push_str("\n## Checks\n\nBy area; each area's probe is the crate `conformance/probes/<area>` (or the WAT files of `probes/integration`).\n");
    for area in AREAS {
        let _ = writeln!(out, "\n### {} (`{}`)\n", area.title, area.name);
        out.push_str("| check | expected | source | host-abi | proxy |\n|---|---|---|---|---|\n");
        for j in judged.iter().filter(|j| j.area == area.name) {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} |",
                j.check.id,
                cell(&j.check.expect.describe()),
                cell(j.check.source),
                verdict_cell(j.verdicts.get(&Env::HostAbi)),
                verdict_cell(j.verdicts.get(&Env::Proxy)),
            );
        }
    }

    out.push_str("\n## Registry conformance (OCI distribution spec)\n\n");
    let _ = writeln!(
        out,
        "The categories and test names of the upstream suite (`opencontainers/distribution-spec` `conformance/`), ported to Rust (`conformance/src/registry/`). Registry under test: {}. Reference: Debian's `docker-registry` (CNCF distribution 2.8), whose known gaps are recorded below, not failed.\n",
        cell(&result.registry.target)
    );
    out.push_str("| category | test | registry under test | docker-registry (reference) |\n|---|---|---|---|\n");
    for (category, names) in TESTS {
        for name in *names {
            let _ = writeln!(
                out,
                "| {category} | `{name}` | {} | {} |",
                outcome_cell(&result.registry.tested, name, false),
                outcome_cell(&result.registry.reference, name, true),
            );
        }
    }
    out.push_str("\nThe reference's known gaps:\n\n| test | outcome | reason |\n|---|---|---|\n");
    for g in DOCKER_REGISTRY_GAPS {
        let _ = writeln!(out, "| `{}` | {} | {} |", g.test, g.outcome, cell(g.reason));
    }
    if DOCKER_REGISTRY_GAPS.is_empty() {
        out.push_str("| — | | |\n");
    }

    out.push_str("\n## Guest SDK languages\n\nThe languages whose filters this run exercised, with which filters, and how they did (the Rust and WAT rows are the probes above; the other languages' rows are the SDK's example filters, which set a request header the upstream must see and a response header the client must see).\n\n");
    out.push_str(
        "| language | SDK | filters | ABI | host-abi | proxy |\n|---|---|---|---|---|---|\n",
    );
    for l in &result.languages {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            l.language,
            cell(&l.sdk),
            l.filters
                .iter()
                .map(|f| format!("`{f}`"))
                .collect::<Vec<_>>()
                .join(", "),
            if l.abi.is_empty() {
                "—".to_string()
            } else {
                l.abi.clone()
            },
            exercised(l.results.get(&Env::HostAbi)),
            exercised(l.results.get(&Env::Proxy)),
        );
    }
    out
}
