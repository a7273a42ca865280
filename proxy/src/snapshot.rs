//! The immutable snapshot requests read: routes, clusters and loaded filter chains, built whole
//! from one configuration before anything uses it.
//!
//! A new snapshot shares with the running one whatever did not change: a cluster with the same
//! settings keeps its pools, health and outlier state; a cluster whose endpoints changed keeps
//! the pooled connections of the endpoints it still has; a plugin with the same definition and
//! module keeps its VM replicas. So a reload costs what it changes, and changing one chain
//! neither drops connections nor resets other filters.

use std::collections::HashMap;
use std::sync::Arc;

use crate::cluster::Cluster;
use crate::config::{ByName, Config};
use crate::filter::source::Sources;
use crate::filter::{self, Chain, LoadMode};
use crate::route::RouteTable;
use crate::server::StartError;

/// Everything a request needs to be routed.
pub struct Snapshot {
    pub generation: u64,
    pub config: Arc<Config>,
    pub route_tables: ByName<Arc<RouteTable>>,
    pub clusters: ByName<Arc<Cluster>>,
    /// Loaded filter chains by name.
    pub chains: HashMap<String, Arc<Chain>>,
    /// How this snapshot's `oci://` plugins are fetched (kept by the next snapshot when the
    /// `registry` settings stay the same).
    pub sources: Arc<Sources>,
}

impl Snapshot {
    /// Builds a snapshot, sharing unchanged parts with `previous`.
    pub async fn build(
        config: Config,
        generation: u64,
        previous: Option<&Snapshot>,
        mode: LoadMode,
    ) -> Result<Snapshot, StartError> {
        let mut route_tables = ByName::default();
        for rc in &config.routes {
            route_tables.insert(rc.name.clone(), Arc::new(RouteTable::build(rc)?));
        }
        let mut clusters = ByName::default();
        for cc in &config.clusters {
            let before = previous.and_then(|p| p.clusters.get(&cc.name));
            clusters.insert(cc.name.clone(), Cluster::build_from(cc, before)?);
        }
        let sources = match previous {
            Some(p) if p.sources.matches(&config.registry) => p.sources.clone(),
            _ => Arc::new(Sources::new(&config.registry)),
        };
        let no_chains = HashMap::new();
        let chains = filter::load_chains(
            &config.filter_chains,
            &sources,
            previous.map_or(&no_chains, |p| &p.chains),
            mode,
        )
        .await?;
        Ok(Snapshot {
            generation,
            config: Arc::new(config),
            route_tables,
            clusters,
            chains,
            sources,
        })
    }

    /// Starts health checks and idle-connection sweeps of clusters that do not run them yet.
    pub fn start_background_tasks(&self) {
        for cluster in self.clusters.values() {
            cluster.start_background_tasks();
        }
    }
}
