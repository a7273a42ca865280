//! Checks: what the suite expects a probe to observe, where that expectation comes from, and
//! which checklist items a passing check proves. Known gaps (`gaps.rs`) turn an expected
//! failure into a recorded one; a gap that starts passing is reported so it gets removed.

use crate::gaps::{self, GapKind};
use crate::observe::{Facts, Run};

/// Where a probe runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Env {
    /// `wasmesh-host` alone, driven by the SDK's deterministic harness.
    HostAbi,
    /// The real proxy in process, driven by HTTP and TCP clients on loopback.
    Proxy,
}

impl Env {
    pub const ALL: [Env; 2] = [Env::HostAbi, Env::Proxy];

    pub fn name(self) -> &'static str {
        match self {
            Env::HostAbi => "host-abi",
            Env::Proxy => "proxy",
        }
    }
}

/// Which environments a check (or a gap) applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Both,
    Only(Env),
}

impl Scope {
    pub fn covers(self, env: Env) -> bool {
        match self {
            Scope::Both => true,
            Scope::Only(e) => e == env,
        }
    }
}

/// What a check expects of the values observed under its id.
#[derive(Clone, Copy)]
pub enum Expect {
    /// At least one value, every one equal to this.
    Eq(&'static str),
    /// At least one value, every one equal to the run's fact of this name (described by the
    /// text: what the run sent or set up).
    Fact(&'static str, &'static str),
    /// At least one value, and the function (described by the text) accepts them all.
    Holds(&'static str, fn(&str, &Facts) -> bool),
    /// Nothing observed.
    Absent,
}

impl Expect {
    /// What the expectation says, for the matrix.
    pub fn describe(&self) -> String {
        match self {
            Expect::Eq(v) => format!("`{v}`"),
            Expect::Fact(_, d) => (*d).to_string(),
            Expect::Holds(d, _) => (*d).to_string(),
            Expect::Absent => "never observed".into(),
        }
    }
}

/// One check.
#[derive(Clone)]
pub struct Check {
    pub id: &'static str,
    pub expect: Expect,
    /// Where the expected value comes from (spec section, Envoy behaviour).
    pub source: &'static str,
    /// The checklist items (host functions, callbacks, types) it proves.
    pub proves: &'static [&'static str],
    pub scope: Scope,
}

impl Check {
    pub fn new(id: &'static str, expect: Expect, source: &'static str) -> Check {
        Check {
            id,
            expect,
            source,
            proves: &[],
            scope: Scope::Both,
        }
    }

    pub fn proves(mut self, items: &'static [&'static str]) -> Check {
        self.proves = items;
        self
    }

    pub fn only(mut self, env: Env) -> Check {
        self.scope = Scope::Only(env);
        self
    }
}

/// `Check::new(id, Expect::Eq(value), source)`.
pub fn eq(id: &'static str, value: &'static str, source: &'static str) -> Check {
    Check::new(id, Expect::Eq(value), source)
}

/// How a check came out in one environment, before known gaps are applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    /// What was observed instead.
    Fail(String),
}

/// How a check came out in one environment, known gaps applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// A known gap: recorded in the matrix with its reason, not a test failure.
    Gap(GapKind, &'static str),
    /// A failure nobody recorded, or a recorded gap that passes now: a test failure.
    Unexpected(String),
}

fn shown(values: &[String]) -> String {
    match values {
        [] => "nothing".into(),
        [one] => format!("`{one}`"),
        many => many
            .iter()
            .map(|v| format!("`{v}`"))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// Compares what a run observed for `check` with its expectation.
pub fn outcome(check: &Check, run: &Result<Run, String>) -> Outcome {
    let run = match run {
        Ok(run) => run,
        Err(e) => return Outcome::Fail(format!("the run failed: {e}")),
    };
    let values = run.obs.get(check.id);
    let ok = match check.expect {
        Expect::Eq(v) => !values.is_empty() && values.iter().all(|x| x == v),
        Expect::Fact(name, _) => match run.facts.get(name) {
            Some(v) => !values.is_empty() && values.iter().all(|x| x == v),
            None => return Outcome::Fail(format!("the run recorded no fact `{name}`")),
        },
        Expect::Holds(_, f) => !values.is_empty() && values.iter().all(|x| f(x, &run.facts)),
        Expect::Absent => values.is_empty(),
    };
    if ok {
        Outcome::Pass
    } else {
        let expected = match check.expect {
            Expect::Fact(name, _) => {
                format!("`{}`", run.facts.get(name).map_or("", String::as_str))
            }
            other => other.describe(),
        };
        Outcome::Fail(format!("expected {expected}, observed {}", shown(values)))
    }
}

/// The verdict for `check` in `env`, with the known gaps applied.
pub fn verdict(check: &Check, env: Env, outcome: &Outcome) -> Verdict {
    let gap = gaps::find(check.id, env);
    match (outcome, gap) {
        (Outcome::Pass, None) => Verdict::Pass,
        (Outcome::Pass, Some(_)) => Verdict::Unexpected(format!(
            "passes in {}, but conformance/src/gaps.rs lists it as a known gap: remove the entry",
            env.name()
        )),
        (Outcome::Fail(_), Some(gap)) => Verdict::Gap(gap.kind, gap.reason),
        (Outcome::Fail(detail), None) => Verdict::Unexpected(detail.clone()),
    }
}
