//! What one run of a probe produced: its observations (from its log lines, and what the
//! runner saw on the wire), and the facts of that run the expectations may refer to (the
//! client's address, the configuration it gave, …).

use std::collections::BTreeMap;

use crate::capture::Line;

/// Observed values by check id, in the order they were observed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observations(BTreeMap<String, Vec<String>>);

impl Observations {
    pub fn add(&mut self, id: impl Into<String>, value: impl Into<String>) {
        self.0.entry(id.into()).or_default().push(value.into());
    }

    pub fn get(&self, id: &str) -> &[String] {
        self.0.get(id).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Adds the observations in `lines`: `observed <id> <value>` gives `<id>` = `<value>`,
    /// and `<id>@level` = the level the host logged the line at.
    pub fn add_lines(&mut self, lines: &[Line]) {
        for line in lines {
            let Some(rest) = line.message.strip_prefix("observed ") else {
                continue;
            };
            let (id, value) = rest.split_once(' ').unwrap_or((rest, ""));
            self.add(id, value);
            self.add(format!("{id}@level"), line.level);
        }
    }

    /// Every id with its values.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Vec<String>)> {
        self.0.iter()
    }

    pub fn merge(&mut self, other: Observations) {
        for (id, values) in other.0 {
            self.0.entry(id).or_default().extend(values);
        }
    }
}

/// Facts of one run, by name.
pub type Facts = BTreeMap<String, String>;

/// One run of an area in one environment.
#[derive(Debug, Clone, Default)]
pub struct Run {
    pub obs: Observations,
    pub facts: Facts,
}

impl Run {
    pub fn fact(&mut self, name: &str, value: impl Into<String>) {
        self.facts.insert(name.to_string(), value.into());
    }

    /// Adds the observations in the lines `plugin` logged, as the log capture has them.
    pub fn lines(&mut self, plugin: &str) {
        self.obs.add_lines(&crate::capture::of(plugin));
    }

    /// Adds the observations in the lines the harness's plugin logged.
    pub fn harness(&mut self, harness: &wasmesh_sdk_test::Harness) {
        self.obs.add_lines(&crate::host_env::harness_lines(harness));
    }
}
