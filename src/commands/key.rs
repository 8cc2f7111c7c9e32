//! `sbk key list|add|passwd|remove`.

use chrono::{DateTime, FixedOffset};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::Id;
use crate::repository::FileType;
use crate::repository::{Actor, Repository};
use crate::repository::{KdfParams, MasterKey};

/// A key as listed.
#[derive(Debug, Serialize)]
pub struct KeyView {
    pub id: Id,
    pub short_id: String,
    /// Whether this key unlocked the repository now.
    pub current: bool,
    pub role: String,
    pub created: DateTime<FixedOffset>,
    pub host: String,
    pub username: String,
}

/// Lists keys.
pub fn list(repo: &Repository) -> Result<Vec<KeyView>> {
    Ok(repo
        .list_keys()?
        .into_iter()
        .map(|(id, k)| KeyView {
            id,
            short_id: id.short(),
            current: id == repo.key_id(),
            role: k.role,
            created: k.created,
            host: k.host,
            username: k.username,
        })
        .collect())
}

/// Adds a key for another password.
pub fn add(repo: &Repository, new_password: &[u8], kdf: KdfParams) -> Result<Id> {
    repo.add_key(new_password, kdf, &Actor::current())
}

/// Replaces the current key with one for a new password (add first, then remove the old one).
pub fn passwd(repo: &Repository, new_password: &[u8], kdf: KdfParams) -> Result<Id> {
    let id = repo.add_key(new_password, kdf, &Actor::current())?;
    repo.remove_key(&repo.key_id())?;
    Ok(id)
}

/// Removes a key by ID prefix; refuses the last one.
pub fn remove(repo: &Repository, prefix: &str) -> Result<Id> {
    let id = repo.resolve(FileType::Key, prefix)?;
    repo.remove_key(&id)?;
    Ok(id)
}

/// The first line of a recovery sheet.
const SHEET_TITLE: &str = "sbk recovery sheet";

fn grouped(bytes: &[u8]) -> String {
    let h = hex::encode(bytes);
    h.as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).expect("hex"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The sheet's checksum: the first 4 bytes of BLAKE3 over both keys, to catch a mistyped line.
fn sheet_check(key: &MasterKey) -> [u8; 4] {
    let mut h = blake3::Hasher::new();
    h.update(b"sbk recovery sheet v1");
    h.update(&key.encrypt);
    h.update(&key.id_key);
    h.finalize().as_bytes()[..4].try_into().expect("4 bytes")
}

/// The repository's master key as a paper recovery sheet: with it, `key import --recovery`
/// adds a key for a new password when every password is lost. Whoever holds it can read
/// every backup.
pub fn recovery_sheet(repo: &Repository) -> String {
    let key = repo.key();
    format!(
        "{SHEET_TITLE}\n\
         repository: {location}\n\
         repository id: {id}\n\
         printed: {now}\n\
         \n\
         Anyone holding this sheet can read every backup in this repository: keep it on\n\
         paper, offline, like the password it stands in for. When every password is lost:\n\
         sbk -r <repository> key import --recovery, then type or paste the three lines below.\n\
         \n\
         encrypt  {encrypt}\n\
         id_key   {id_key}\n\
         check    {check}\n",
        location = repo.location(),
        id = repo.config().id,
        now = chrono::Local::now().format("%Y-%m-%d %H:%M %z"),
        encrypt = grouped(&key.encrypt),
        id_key = grouped(&key.id_key),
        check = grouped(&sheet_check(key)),
    )
}

/// Reads the `encrypt`, `id_key` and `check` lines of a recovery sheet (other lines are
/// ignored; spaces inside a value do not matter).
pub fn parse_recovery_sheet(text: &str) -> Result<MasterKey> {
    let value = |name: &str| -> Result<Vec<u8>> {
        let line = text
            .lines()
            .map(str::trim)
            .find_map(|l| {
                l.strip_prefix(name)
                    .filter(|rest| rest.starts_with(char::is_whitespace))
            })
            .ok_or_else(|| Error::Invalid(format!("the recovery sheet has no `{name}` line")))?;
        let digits: String = line.chars().filter(|c| !c.is_whitespace()).collect();
        hex::decode(&digits)
            .map_err(|_| Error::Invalid(format!("the `{name}` line is not hexadecimal")))
    };
    let encrypt: [u8; 32] = value("encrypt")?
        .try_into()
        .map_err(|_| Error::Invalid("the `encrypt` line must have 64 digits".into()))?;
    let id_key: [u8; 32] = value("id_key")?
        .try_into()
        .map_err(|_| Error::Invalid("the `id_key` line must have 64 digits".into()))?;
    let key = MasterKey { encrypt, id_key };
    if value("check")? != sheet_check(&key) {
        return Err(Error::Invalid(
            "the recovery sheet's check does not match its keys: a digit was mistyped".into(),
        ));
    }
    Ok(key)
}

/// Adds a key for `new_password` to the repository the sheet belongs to.
pub fn import_recovery(
    storage: crate::repository::open::Storage,
    sheet: &str,
    new_password: &[u8],
    kdf: KdfParams,
) -> Result<Id> {
    let key = parse_recovery_sheet(sheet)?;
    let repo = Repository::open_with_master_key(storage, key)?;
    repo.add_key(new_password, kdf, &Actor::current())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sheet_lines_round_trip_and_catch_a_typo() {
        let key = MasterKey {
            encrypt: [7; 32],
            id_key: std::array::from_fn(|i| i as u8),
        };
        let lines = format!(
            "junk\nencrypt  {}\n  id_key {}\ncheck {}\n",
            grouped(&key.encrypt),
            grouped(&key.id_key),
            grouped(&sheet_check(&key))
        );
        let back = parse_recovery_sheet(&lines).unwrap();
        assert_eq!((back.encrypt, back.id_key), (key.encrypt, key.id_key));
        let typo = lines.replacen("0001", "0010", 1);
        let e = parse_recovery_sheet(&typo).unwrap_err().to_string();
        assert!(e.contains("mistyped"), "{e}");
        assert!(parse_recovery_sheet("encrypt 00").is_err());
    }
}
