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

pub(super) fn save(state_dir: &Path, p: &Policy) -> Result<(), StateFileError> {
    statefile::write(
        &state_dir.join(FILE),
        &Ids {
            tiers: p.tiers.clone(),
            classes: p.classes.clone(),
        },
    )
}
