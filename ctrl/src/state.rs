//! The state file: the running configuration, written after every accepted
//! change so a restarted daemon carries on where it stopped. It is the
//! configuration file's schema ([`crate::config`]), so it can be read,
//! checked (`vpngw --check`) and used as a startup file. It holds keys:
//! readable by root only (mode 0600).
//!
//! A write never leaves a file that fails to load, whenever the process is
//! killed: the text goes to a temporary file beside it, which is synced,
//! then renamed over the old one (atomic on POSIX file systems), and the
//! directory is synced so the rename itself survives a crash.
//!
//! Beside it, the sequence marks (`<state>.seq`): for each outbound SA
//! (by SPI and peer), a sequence number it may resume from after a restart
//! or when it is made again. A static-keyed SA that restarted at 1 would
//! have every packet dropped as a replay by its peer, and would repeat
//! nonces under its key; the marks are written every second, each a
//! projection ahead of the SA's counter (twice the last second's packets,
//! at least 65,536), so a daemon killed at any moment resumes above every
//! number it used.

use crate::config::Config;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

const HEADER: &str = "# vpngw state: the running configuration, written by the daemon after every\n\
                      # accepted change. Same schema as the configuration file.\n";

/// Writes `cfg` to `path` atomically, mode 0600.
pub fn save(path: &Path, cfg: &Config) -> std::io::Result<()> {
    write_atomically(path, (HEADER.to_string() + &cfg.to_toml()).as_bytes())
}

/// `bytes` to `path` through a synced temporary file and a rename; mode 0600.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = temporary(path);
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Reads the state file, if there is one (`Ok(None)`: none yet). A
/// temporary file left by a write that was cut short is ignored.
pub fn load(path: &Path) -> Result<Option<Config>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => text.parse().map(Some).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Where an outbound SA may resume its sequence numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqMark {
    pub spi: u32,
    pub resume_at: u64,
}

/// The sequence marks' file beside the state file `state`.
pub fn marks_path(state: &Path) -> PathBuf {
    let mut name = state.file_name().unwrap_or_default().to_os_string();
    name.push(".seq");
    state.with_file_name(name)
}

/// Writes the marks (by `SPI@peer`) atomically, like the state file.
pub fn save_marks(path: &Path, marks: &BTreeMap<String, SeqMark>) -> std::io::Result<()> {
    write_atomically(path, (serde_json::to_string_pretty(marks).expect("marks serialize") + "\n").as_bytes())
}

/// The marks, if the file is there and readable (none otherwise: a fresh
/// start).
pub fn load_marks(path: &Path) -> Result<BTreeMap<String, SeqMark>, String> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn temporary(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CustomerGateway;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn saves_atomically_and_privately_and_loads_back() {
        let dir = std::env::temp_dir().join(format!("vpngw-state-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.toml");
        assert_eq!(load(&path).unwrap(), None);
        let mut cfg = Config::default();
        cfg.customer_gateways.push(CustomerGateway { name: "idc1".into(), address: "198.51.100.1".parse().unwrap() });
        save(&path, &cfg).unwrap();
        assert_eq!(load(&path).unwrap(), Some(cfg.clone()));
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(!temporary(&path).exists(), "the temporary file is renamed away");
        // A half-written temporary file (a kill during a write) does not
        // disturb what loads.
        std::fs::write(temporary(&path), "[[gateway]]\nname = ").unwrap();
        assert_eq!(load(&path).unwrap(), Some(cfg));
        std::fs::write(&path, "[[gateway]\n").unwrap();
        assert!(load(&path).unwrap_err().contains("state.toml"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
