//! Runs every ABI area in both environments and judges every check.

use std::collections::BTreeMap;

use crate::areas::{self, AREAS};
use crate::check::{self, Check, Env, Verdict};
use crate::observe::Run;

/// One check's verdict in each environment it applies to.
pub struct Judged {
    pub area: &'static str,
    pub check: Check,
    pub verdicts: BTreeMap<Env, Verdict>,
}

/// Every check of every area, judged.
pub struct AbiResults {
    pub judged: Vec<Judged>,
}

impl AbiResults {
    /// The checks that failed without a recorded gap (or whose gap passes now), as lines.
    pub fn unexpected(&self, area: Option<&str>) -> Vec<String> {
        let mut out = Vec::new();
        for j in self
            .judged
            .iter()
            .filter(|j| area.is_none_or(|a| a == j.area))
        {
            for (env, verdict) in &j.verdicts {
                if let Verdict::Unexpected(detail) = verdict {
                    out.push(format!("{} [{}]: {detail}", j.check.id, env.name()));
                }
            }
        }
        out
    }
}

fn judge(runs: &BTreeMap<(&'static str, Env), Result<Run, String>>) -> AbiResults {
    let mut judged = Vec::new();
    for area in AREAS {
        let mut checks = (area.checks)();
        checks.sort_by_key(|c| c.id);
        for check in checks {
            let mut verdicts = BTreeMap::new();
            for env in Env::ALL {
                if !check.scope.covers(env) {
                    continue;
                }
                let run = runs
                    .get(&(area.name, env))
                    .cloned()
                    .unwrap_or_else(|| Err("not run".into()));
                let outcome = check::outcome(&check, &run);
                verdicts.insert(env, check::verdict(&check, env, &outcome));
            }
            judged.push(Judged {
                area: area.name,
                check,
                verdicts,
            });
        }
    }
    AbiResults { judged }
}

/// Runs the host-abi environment (synchronously: the harness needs no runtime), then the proxy
/// environment on `runtime`, and judges every check.
pub fn run(runtime: &tokio::runtime::Runtime) -> AbiResults {
    let mut runs = BTreeMap::new();
    for area in AREAS {
        let run = areas::run_host(area.name);
        runs.insert((area.name, Env::HostAbi), run.map_err(|e| e.to_string()));
    }
    for area in AREAS {
        let run = runtime.block_on(areas::run_proxy(area.name));
        runs.insert((area.name, Env::Proxy), run.map_err(|e| e.to_string()));
    }
    judge(&runs)
}

/// Judges area `area`'s checks from a log another host wrote while running its probe: every
/// `observed <id> <value>` found in `log` (anywhere in a line, whatever the host prefixes).
/// Checks whose expectation needs what the suite's own runner sent or saw (facts, or
/// observations made on the wire) come out as failures naming what is missing. Returns
/// `(check id, verdict text)` in check order; `None` for an unknown area.
pub fn judge_log(area: &str, log: &str) -> Option<Vec<(&'static str, String)>> {
    let area = AREAS.iter().find(|a| a.name == area)?;
    let mut run = Run::default();
    for line in log.lines() {
        if let Some(at) = line.find("observed ") {
            let rest = &line[at + "observed ".len()..];
            let (id, value) = rest.split_once(' ').unwrap_or((rest, ""));
            run.obs.add(id, value.trim_end());
        }
    }
    let mut checks = (area.checks)();
    checks.sort_by_key(|c| c.id);
    let run = Ok(run);
    Some(
        checks
            .iter()
            .map(|c| {
                let text = match check::outcome(c, &run) {
                    check::Outcome::Pass => "pass".to_string(),
                    check::Outcome::Fail(d) => format!("fail: {d}"),
                };
                (c.id, text)
            })
            .collect(),
    )
}
