//! Known gaps: checks that fail for a reason someone has looked at, recorded with that reason
//! so the matrix shows them (as `fail` or `not supported`) instead of the suite failing. A gap
//! that starts passing fails the suite until its entry is removed, so this list stays true.

use crate::check::{Env, Scope};

/// How a known gap shows in the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapKind {
    /// The host does it, differently from the spec or Envoy: a bug to fix.
    Fail,
    /// The host does not do it at all, by design or not yet.
    NotSupported,
}

impl GapKind {
    pub fn name(self) -> &'static str {
        match self {
            GapKind::Fail => "fail",
            GapKind::NotSupported => "not supported",
        }
    }
}

/// One known gap.
#[derive(Debug, Clone, Copy)]
pub struct Gap {
    pub check: &'static str,
    pub scope: Scope,
    pub kind: GapKind,
    pub reason: &'static str,
}

pub const GAPS: &[Gap] = &[];

/// The known gap for `check` in `env`, if there is one.
pub fn find(check: &str, env: Env) -> Option<&'static Gap> {
    GAPS.iter()
        .find(|g| g.check == check && g.scope.covers(env))
}
