//! The policy in force on a mount, and its reloads (SIGHUP, `durafs reload`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use tracing::{info, warn};

use crate::policy::{Diagnostic, Policy};

/// The mount's current policy. Opens take a snapshot ([`ActivePolicy::get`]);
/// a reload swaps in a new policy for opens from then on, and never touches
/// files already open.
#[derive(Debug)]
pub struct ActivePolicy {
    path: Option<PathBuf>,
    current: RwLock<Arc<Policy>>,
    state: Mutex<ReloadState>,
}

#[derive(Debug)]
struct ReloadState {
    loaded_at: SystemTime,
    reloads: u64,
    last_error: Option<String>,
}

/// A successful reload.
#[derive(Debug)]
pub struct Reloaded {
    /// how many rules the new policy has
    pub rules: usize,
    /// its warnings
    pub warnings: Vec<Diagnostic>,
}

impl ActivePolicy {
    /// `policy`, read from `path` (None: the built-in policy).
    pub fn new(policy: Policy, path: Option<PathBuf>) -> Self {
        ActivePolicy {
            path,
            current: RwLock::new(Arc::new(policy)),
            state: Mutex::new(ReloadState {
                loaded_at: SystemTime::now(),
                reloads: 0,
                last_error: None,
            }),
        }
    }

    /// The policy in force now.
    pub fn get(&self) -> Arc<Policy> {
        self.current.read().expect("policy lock poisoned").clone()
    }

    /// The file a reload re-reads (None: the built-in policy).
    pub fn path(&self) -> Option<&PathBuf> {
        self.path.as_ref()
    }

    /// When the policy in force was loaded, how many reloads succeeded, and
    /// the error of the last failed one (cleared by a success).
    pub fn reload_state(&self) -> (SystemTime, u64, Option<String>) {
        let s = self.state.lock().expect("policy state poisoned");
        (s.loaded_at, s.reloads, s.last_error.clone())
    }

    /// Re-reads the policy file. A valid policy applies to opens from now
    /// on; an invalid one is refused with its diagnostics (logged too) and
    /// the old policy stays in force.
    pub fn reload(&self) -> Result<Reloaded, String> {
        let Some(path) = &self.path else {
            let msg = "no policy file: the mount uses the built-in default policy, which cannot change (mount with --policy FILE to reload one)".to_string();
            info!("reload: {msg}");
            return Err(msg);
        };
        match Policy::load(path) {
            Ok((p, warnings)) => {
                for w in &warnings {
                    warn!("policy {}: {}", path.display(), one_line(&w.to_string()));
                }
                let rules = p.rules().len();
                *self.current.write().expect("policy lock poisoned") = Arc::new(p);
                let mut s = self.state.lock().expect("policy state poisoned");
                s.loaded_at = SystemTime::now();
                s.reloads += 1;
                s.last_error = None;
                info!(
                    "reloaded policy {} ({rules} rules); it applies to files opened from now on",
                    path.display()
                );
                Ok(Reloaded { rules, warnings })
            }
            Err(e) => {
                let msg = e.to_string();
                warn!(
                    "reload of {} refused, the old policy stays in force: {}",
                    path.display(),
                    one_line(&msg)
                );
                self.state.lock().expect("policy state poisoned").last_error = Some(msg.clone());
                Err(msg)
            }
        }
    }
}

/// A multi-line diagnostic on one log line.
fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "|")
        .collect::<Vec<_>>()
        .join(" ")
}
