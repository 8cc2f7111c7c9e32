//! Finding the PostgreSQL client programs (`pg_dump`, `pg_dumpall`, `pg_restore`, `psql`) and
//! checking that they are new enough for the server: `pg_dump` refuses a newer server, so sbk
//! names the version to install rather than passing the failure on.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};

/// Where to look: an explicit folder (`--pg-bin`, `SBK_PG_BIN`), else Debian's versioned folders
/// (`/usr/lib/postgresql/N/bin`, newest first), else `PATH`.
#[derive(Clone, Debug, Default)]
pub struct Tools {
    pub bindir: Option<PathBuf>,
}

/// A located program and its major version.
#[derive(Clone, Debug)]
pub struct Program {
    pub path: PathBuf,
    pub major: u32,
    /// `--version` output, e.g. `pg_dump (PostgreSQL) 15.18`.
    pub version: String,
}

const INSTALL_HINT: &str = "install the PostgreSQL client programs (Debian/Ubuntu: `apt-get install postgresql-client`; RHEL/Fedora: `dnf install postgresql`; macOS: `brew install libpq`), or point --pg-bin (SBK_PG_BIN) at the folder that holds them";

impl Tools {
    /// Finds `name` at a version of at least `min_major` (the server's major version).
    pub fn find(&self, name: &str, min_major: u32) -> Result<Program> {
        let candidates = self.candidates(name);
        if candidates.is_empty() {
            return Err(Error::Postgres(format!(
                "{name} was not found{}: {INSTALL_HINT}",
                match &self.bindir {
                    Some(d) => format!(" in {}", d.display()),
                    None => String::new(),
                }
            )));
        }
        let mut newest: Option<Program> = None;
        for path in candidates {
            let program = version_of(&path)?;
            if program.major >= min_major {
                return Ok(program);
            }
            if newest.as_ref().is_none_or(|n| program.major > n.major) {
                newest = Some(program);
            }
        }
        let found = newest.expect("at least one candidate");
        Err(Error::Postgres(format!(
            "{} is version {} but the server is PostgreSQL {min_major}: {name} must be at least as new as the server. Install the version-{min_major} client programs (Debian/Ubuntu: `apt-get install postgresql-client-{min_major}`), or point --pg-bin (SBK_PG_BIN) at them",
            found.path.display(),
            found.major
        )))
    }

    fn candidates(&self, name: &str) -> Vec<PathBuf> {
        if let Some(dir) = &self.bindir {
            let p = dir.join(name);
            return if p.is_file() { vec![p] } else { Vec::new() };
        }
        let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let v = e.file_name().to_str()?.parse::<u32>().ok()?;
                let p = e.path().join("bin").join(name);
                p.is_file().then_some((v, p))
            })
            .collect();
        debian.sort_by_key(|d| std::cmp::Reverse(d.0));
        let mut out: Vec<PathBuf> = debian.into_iter().map(|(_, p)| p).collect();
        if let Some(path) = std::env::var_os("PATH") {
            out.extend(
                std::env::split_paths(&path)
                    .map(|d| d.join(name))
                    .filter(|p| p.is_file()),
            );
        }
        out
    }
}

/// Runs `path --version` and reads the major version.
fn version_of(path: &Path) -> Result<Program> {
    let out = Command::new(path)
        .arg("--version")
        .output()
        .map_err(|e| Error::Postgres(format!("cannot run {}: {e}", path.display())))?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let major = parse_major(&text).ok_or_else(|| {
        Error::Postgres(format!(
            "cannot read the version of {} from {text:?}",
            path.display()
        ))
    })?;
    Ok(Program {
        path: path.to_path_buf(),
        major,
        version: text,
    })
}

/// The major version in `pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)` (or `9.6.24`:
/// before 10 the major version had two parts; they are all older than anything supported).
pub fn parse_major(version_line: &str) -> Option<u32> {
    let v = version_line
        .split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))?;
    let digits: String = v.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// The major version of a `server_version_num` (`150018` → 15).
pub fn server_major(version_num: i32) -> u32 {
    (version_num / 10000).max(0) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(
            parse_major("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"),
            Some(15)
        );
        assert_eq!(parse_major("pg_restore (PostgreSQL) 17beta2"), Some(17));
        assert_eq!(parse_major("psql (PostgreSQL) 9.6.24"), Some(9));
        assert_eq!(parse_major("nonsense"), None);
        assert_eq!(server_major(150018), 15);
        assert_eq!(server_major(90624), 9);
    }

    #[test]
    fn missing_and_too_old_programs_say_what_to_install() {
        let dir = tempfile::tempdir().unwrap();
        let tools = Tools {
            bindir: Some(dir.path().to_path_buf()),
        };
        let e = tools.find("pg_dump", 15).unwrap_err().to_string();
        assert!(e.contains("apt-get install postgresql-client"), "{e}");
        // The machine's real pg_dump, asked for a server newer than it.
        if let Some(real) = Tools::default().candidates("pg_dump").first() {
            let tools = Tools {
                bindir: real.parent().map(Path::to_path_buf),
            };
            let have = tools.find("pg_dump", 0).unwrap().major;
            let e = tools.find("pg_dump", have + 1).unwrap_err().to_string();
            assert!(
                e.contains(&format!("postgresql-client-{}", have + 1)),
                "{e}"
            );
        }
    }
}
