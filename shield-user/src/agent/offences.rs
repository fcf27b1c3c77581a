//! The autoban offence history in `state_dir/offences.json`: how often each
//! source was autobanned, so a repeat offence after a restart or a reboot
//! still gets the longer ban.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{
    events::Offence,
    net::Cidr,
    statefile::{self, StateFileError},
};

pub const FILE: &str = "offences.json";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    net: Cidr,
    count: u32,
    until_unix_ms: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: u32,
    offences: Vec<Entry>,
}

/// The saved history; a corrupt file is moved aside and reported through
/// `warn`, and the history starts empty.
pub fn load(
    state_dir: &Path,
    warn: &mut dyn FnMut(String),
) -> Result<Vec<(Cidr, Offence)>, StateFileError> {
    match statefile::read::<File>(&state_dir.join(FILE)) {
        Ok(f) => Ok(f
            .map(|f| {
                f.offences
                    .into_iter()
                    .map(|e| {
                        let o = Offence {
                            count: e.count,
                            until_unix_ms: e.until_unix_ms,
                        };
                        (e.net, o)
                    })
                    .collect()
            })
            .unwrap_or_default()),
        Err(e @ StateFileError::Corrupt { .. }) => {
            warn(e.to_string());
            Ok(Vec::new())
        }
        Err(e) => Err(e),
    }
}

pub fn save<'a>(
    state_dir: &Path,
    offences: impl Iterator<Item = (&'a Cidr, &'a Offence)>,
) -> Result<(), StateFileError> {
    let mut offences: Vec<Entry> = offences
        .map(|(net, o)| Entry {
            net: *net,
            count: o.count,
            until_unix_ms: o.until_unix_ms,
        })
        .collect();
    offences.sort_by_key(|e| e.net);
    statefile::write(
        &state_dir.join(FILE),
        &File {
            version: 1,
            offences,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_history_loads_back_and_garbage_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path(), &mut |w| panic!("{w}")).unwrap().is_empty());
        let net: Cidr = "192.0.2.1".parse().unwrap();
        let o = Offence {
            count: 3,
            until_unix_ms: 42,
        };
        save(dir.path(), [(&net, &o)].into_iter()).unwrap();
        assert_eq!(
            load(dir.path(), &mut |w| panic!("{w}")).unwrap(),
            vec![(net, o)]
        );
        std::fs::write(dir.path().join(FILE), "{not json").unwrap();
        let mut warned = Vec::new();
        assert!(
            load(dir.path(), &mut |w| warned.push(w))
                .unwrap()
                .is_empty()
        );
        assert_eq!(warned.len(), 1, "{warned:?}");
    }
}
