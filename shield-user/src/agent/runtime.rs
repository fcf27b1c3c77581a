//! What operators change at runtime through shieldctl, apart from bans:
//! allowlist entries (always persisted) and limit overrides (persisted on
//! request, possibly timed). Both outlive reloads; only persisted ones
//! outlive restarts.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{
    config::LimitSet,
    net::Cidr,
    policy::LimitOverride,
    statefile::{self, StateFileError},
};

pub const ALLOW_FILE: &str = "allow.json";
pub const OVERRIDES_FILE: &str = "limit-overrides.json";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowFile {
    version: u32,
    allow: Vec<Cidr>,
}

/// A runtime limit override.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActiveOverride {
    pub target: String,
    #[serde(with = "limitset_serde")]
    pub limits: LimitSet,
    /// Reverts by itself at this time; `None` until removed (or restart).
    pub expires_unix_ms: Option<u64>,
    pub persisted: bool,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OverridesFile {
    version: u32,
    overrides: Vec<ActiveOverride>,
}

/// Runtime state with its files under `state_dir`.
#[derive(Debug)]
pub struct RuntimeState {
    dir: PathBuf,
    pub allow: Vec<Cidr>,
    pub overrides: Vec<ActiveOverride>,
    /// `shieldctl dry-run on|off`; wins over the config until restart.
    pub dry_run: Option<bool>,
}

impl RuntimeState {
    /// Reads the persisted allowlist and overrides. A file that does not
    /// parse into its schema (not JSON, or one entry that is not a CIDR or
    /// a rate) is moved aside and reported through `warn`, as every state
    /// file is (`statefile::read`): dropping it in silence would let the
    /// next `allow add` or `limits set --persist` overwrite the only copy.
    pub fn load(state_dir: &Path, warn: &mut dyn FnMut(String)) -> Result<Self, StateFileError> {
        fn read<T: serde::de::DeserializeOwned>(
            path: &Path,
            warn: &mut dyn FnMut(String),
        ) -> Result<Option<T>, StateFileError> {
            match statefile::read(path) {
                Ok(v) => Ok(v),
                Err(e @ StateFileError::Corrupt { .. }) => {
                    warn(e.to_string());
                    Ok(None)
                }
                Err(e) => Err(e),
            }
        }
        let allow = read::<AllowFile>(&state_dir.join(ALLOW_FILE), warn)?
            .map(|f| f.allow)
            .unwrap_or_default();
        let overrides = read::<OverridesFile>(&state_dir.join(OVERRIDES_FILE), warn)?
            .map(|f| f.overrides)
            .unwrap_or_default();
        Ok(RuntimeState {
            dir: state_dir.to_path_buf(),
            allow,
            overrides,
            dry_run: None,
        })
    }

    pub fn save_allow(&self) -> Result<(), StateFileError> {
        statefile::write(
            &self.dir.join(ALLOW_FILE),
            &AllowFile {
                version: 1,
                allow: self.allow.clone(),
            },
        )
    }

    pub fn save_overrides(&self) -> Result<(), StateFileError> {
        statefile::write(
            &self.dir.join(OVERRIDES_FILE),
            &OverridesFile {
                version: 1,
                overrides: self
                    .overrides
                    .iter()
                    .filter(|o| o.persisted)
                    .cloned()
                    .collect(),
            },
        )
    }

    /// The overrides in force at `now_unix_ms`, oldest first (later win).
    pub fn live_overrides(&self, now_unix_ms: u64) -> Vec<LimitOverride> {
        self.overrides
            .iter()
            .filter(|o| o.expires_unix_ms.is_none_or(|e| e > now_unix_ms))
            .map(|o| LimitOverride {
                target: o.target.clone(),
                limits: o.limits,
            })
            .collect()
    }

    /// Drops expired overrides; true when any went.
    pub fn expire(&mut self, now_unix_ms: u64) -> bool {
        let before = self.overrides.len();
        self.overrides
            .retain(|o| o.expires_unix_ms.is_none_or(|e| e > now_unix_ms));
        before != self.overrides.len()
    }
}

/// LimitSet as `{"packets": "1000/s", "packet_burst": 2000, ...}`.
mod limitset_serde {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::config::{LimitSet, Rate, format_rate, parse_rate};

    #[derive(Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Wire {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        packets: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        packet_burst: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        connections: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        connection_burst: Option<u64>,
    }

    pub fn serialize<S: Serializer>(l: &LimitSet, s: S) -> Result<S::Ok, S::Error> {
        Wire {
            packets: l.packets.as_ref().map(format_rate),
            packet_burst: l.packet_burst,
            connections: l.connections.as_ref().map(format_rate),
            connection_burst: l.connection_burst,
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<LimitSet, D::Error> {
        let w = Wire::deserialize(d)?;
        let rate = |s: Option<String>| -> Result<Option<Rate>, D::Error> {
            s.map(|s| parse_rate(&s).map_err(serde::de::Error::custom))
                .transpose()
        };
        Ok(LimitSet {
            packets: rate(w.packets)?,
            packet_burst: w.packet_burst,
            connections: rate(w.connections)?,
            connection_burst: w.connection_burst,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Rate;

    #[test]
    fn persisted_overrides_and_allow_entries_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = RuntimeState::load(dir.path(), &mut |w| panic!("{w}")).unwrap();
        st.allow.push("192.0.2.0/24".parse().unwrap());
        st.save_allow().unwrap();
        st.overrides.push(ActiveOverride {
            target: "default".into(),
            limits: LimitSet {
                packets: Some(Rate {
                    count: 10,
                    per: Duration::from_secs(1),
                }),
                ..LimitSet::default()
            },
            expires_unix_ms: None,
            persisted: true,
        });
        st.overrides.push(ActiveOverride {
            target: "temp".into(),
            limits: LimitSet::default(),
            expires_unix_ms: Some(5),
            persisted: false,
        });
        st.save_overrides().unwrap();
        let back = RuntimeState::load(dir.path(), &mut |w| panic!("{w}")).unwrap();
        assert_eq!(back.allow, st.allow);
        assert_eq!(
            back.overrides,
            vec![st.overrides[0].clone()],
            "only persisted ones"
        );
        assert_eq!(st.live_overrides(10).len(), 1, "the timed one expired");
        assert!(st.expire(10));
        assert_eq!(st.overrides.len(), 1);
    }

    /// Valid JSON whose schema is wrong (one entry that is no CIDR, one
    /// rate that does not parse) is set aside and reported like a file
    /// that is not JSON at all, never dropped in silence: the next save
    /// would overwrite it.
    #[test]
    fn a_file_with_one_bad_entry_is_set_aside_and_reported() {
        for (file, body) in [
            (
                ALLOW_FILE,
                r#"{"version":1,"allow":["192.0.2.0/24","not-a-cidr"]}"#,
            ),
            (
                OVERRIDES_FILE,
                r#"{"version":1,"overrides":[{"target":"default","limits":{"packets":"fast"},"expires_unix_ms":null,"persisted":true}]}"#,
            ),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(file);
            std::fs::write(&path, body).unwrap();
            let mut warned = Vec::new();
            let st = RuntimeState::load(dir.path(), &mut |w| warned.push(w)).unwrap();
            assert!(st.allow.is_empty() && st.overrides.is_empty());
            assert_eq!(warned.len(), 1, "{file}: {warned:?}");
            assert!(warned[0].contains(file), "{}", warned[0]);
            assert!(!path.exists(), "{file} left in place, to be overwritten");
            let aside: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!("{file}.corrupt-")))
                .collect();
            assert_eq!(aside.len(), 1, "{file}: {aside:?}");
            let kept = std::fs::read_to_string(dir.path().join(&aside[0])).unwrap();
            assert_eq!(kept, body);
        }
    }
}
