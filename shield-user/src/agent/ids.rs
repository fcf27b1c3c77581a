//! Tier and class ids by name, kept in `state_dir` so a restarted agent
//! gives every port rule the class id its buckets are keyed by.

use std::path::Path;

use serde::{Deserialize, Serialize};
use shield_common::maps::GlobalConfig;

use crate::{
    policy::Policy,
    statefile::{self, StateFileError},
};

pub(super) const FILE: &str = "policy-ids.json";

#[derive(Serialize, Deserialize)]
struct Ids {
    tiers: Vec<String>,
    classes: Vec<String>,
}

/// A policy skeleton carrying only the names, for `Runtime::previous`.
pub(super) fn load(state_dir: &Path) -> Option<Policy> {
    let ids: Ids = match statefile::read(&state_dir.join(FILE)) {
        Ok(v) => v?,
        Err(e) => {
            tracing::warn!("{e}");
            return None;
        }
    };
    Some(Policy {
        global: GlobalConfig::default(),
        sources: Default::default(),
        ports: Default::default(),
        limits: Default::default(),
        resolved: Default::default(),
        tiers: ids.tiers,
        classes: ids.classes,
        warnings: Vec::new(),
    })
}

/// The names of `p`'s ids as of now, and the blocking write of them for
/// the writer to run without the agent's lock (agent/writer.rs).
pub(super) fn save_later(
    state_dir: &Path,
    p: &Policy,
) -> impl FnOnce() -> Result<(), StateFileError> + Send + 'static {
    let path = state_dir.join(FILE);
    let ids = Ids {
        tiers: p.tiers.clone(),
        classes: p.classes.clone(),
    };
    move || statefile::write(&path, &ids)
}
