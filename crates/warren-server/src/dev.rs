//! Development mode: an HS256 secret the server makes in its state directory on first start,
//! and tokens minted with it (`warren token`, the tokens printed at start, the CLI's own).

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;
use warren_core::{Error, Result, UserId};

/// File name of the development secret in the state directory.
pub const DEV_SECRET_FILE: &str = "dev-secret";
/// Issuer of development tokens.
pub const DEV_ISSUER: &str = "warren-dev";
/// Audience of development tokens.
pub const DEV_AUDIENCE: &str = "warren";
/// Shortest HS256 secret accepted, bytes.
pub const MIN_SECRET_BYTES: usize = 32;

/// Where the development secret of `state_dir` lives.
pub fn secret_path(state_dir: &Path) -> PathBuf {
    state_dir.join(DEV_SECRET_FILE)
}

/// Reads a secret file: its content without the final newline. Refuses a file other users
/// can read, or one shorter than [`MIN_SECRET_BYTES`].
pub fn read_secret(path: &Path) -> Result<Vec<u8>> {
    let md = std::fs::metadata(path).map_err(|e| Error::io(format!("reading the JWT secret {}", path.display()), e))?;
    if md.permissions().mode() & 0o077 != 0 {
        return Err(Error::InvalidRequest(format!(
            "the JWT secret {} can be read by other users (mode {:o}): chmod 600 it",
            path.display(),
            md.permissions().mode() & 0o777
        )));
    }
    if md.uid() != nix::unistd::geteuid().as_raw() {
        return Err(Error::InvalidRequest(format!(
            "the JWT secret {} belongs to uid {}, not to this process: chown it",
            path.display(),
            md.uid()
        )));
    }
    let mut s = std::fs::read(path).map_err(|e| Error::io(format!("reading the JWT secret {}", path.display()), e))?;
    while s.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        s.pop();
    }
    check_secret(&s, &path.display().to_string())?;
    Ok(s)
}

/// Refuses secrets too short to resist guessing.
pub fn check_secret(s: &[u8], what: &str) -> Result<()> {
    if s.len() < MIN_SECRET_BYTES {
        return Err(Error::InvalidRequest(format!(
            "the HS256 secret {what} is {} bytes: use at least {MIN_SECRET_BYTES} random bytes (e.g. `openssl rand -hex 32`)",
            s.len()
        )));
    }
    Ok(())
}

/// The development secret of `state_dir`, made on first use: 32 random bytes as hex, mode
/// 0600, written atomically (a temporary file linked into place, so two processes starting at
/// once agree on one secret).
pub fn load_or_create_secret(state_dir: &Path) -> Result<Vec<u8>> {
    let path = secret_path(state_dir);
    if path.exists() {
        return read_secret(&path);
    }
    std::fs::create_dir_all(state_dir)
        .map_err(|e| Error::io(format!("creating the state directory {}", state_dir.display()), e))?;
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| Error::Internal(format!("no randomness for the development secret: {e}")))?;
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = state_dir.join(format!(".{DEV_SECRET_FILE}.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(hex.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        match std::fs::hard_link(&tmp, &path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()), // another process won
            Err(e) => Err(e),
        }
    };
    let r = write();
    let _ = std::fs::remove_file(&tmp);
    r.map_err(|e| Error::io(format!("writing the development secret {}", path.display()), e))?;
    if let Ok(d) = std::fs::File::open(state_dir) {
        let _ = d.sync_all();
    }
    tracing::info!(path = %path.display(), "created the development JWT secret");
    read_secret(&path)
}

/// What to put in a minted token.
#[derive(Clone, Debug)]
pub struct MintOptions {
    /// The user (goes into `user_claim`).
    pub user: UserId,
    /// Grant operator access (sets `admin_claim` to `admin_value`).
    pub admin: bool,
    /// Lifetime.
    pub ttl: Duration,
    /// `iss`, if any.
    pub issuer: Option<String>,
    /// `aud`, if any.
    pub audience: Option<String>,
    /// The claim naming the user.
    pub user_claim: String,
    /// The admin claim.
    pub admin_claim: String,
    /// The admin claim's value.
    pub admin_value: String,
}

impl MintOptions {
    /// A development token for `user`, valid for `ttl`.
    pub fn dev(user: UserId, admin: bool, ttl: Duration) -> Self {
        Self {
            user,
            admin,
            ttl,
            issuer: Some(DEV_ISSUER.into()),
            audience: Some(DEV_AUDIENCE.into()),
            user_claim: "sub".into(),
            admin_claim: "scope".into(),
            admin_value: "warren:admin".into(),
        }
    }
}

/// Mints an HS256 token signed with `secret`.
pub fn mint(secret: &[u8], o: &MintOptions) -> Result<String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut claims = serde_json::Map::new();
    claims.insert(o.user_claim.clone(), json!(o.user.as_str()));
    claims.insert("iat".into(), json!(now));
    claims.insert("nbf".into(), json!(now));
    claims.insert("exp".into(), json!(now + o.ttl.as_secs().max(1)));
    if let Some(iss) = &o.issuer {
        claims.insert("iss".into(), json!(iss));
    }
    if let Some(aud) = &o.audience {
        claims.insert("aud".into(), json!(aud));
    }
    if o.admin {
        claims.insert(o.admin_claim.clone(), json!(o.admin_value));
    }
    encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret))
        .map_err(|e| Error::Internal(format!("signing a token: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_made_once_private_and_reused() {
        let t = tempfile::tempdir().expect("tempdir");
        let a = load_or_create_secret(t.path()).expect("create");
        let b = load_or_create_secret(t.path()).expect("reuse");
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
        let md = std::fs::metadata(secret_path(t.path())).expect("stat");
        assert_eq!(md.permissions().mode() & 0o777, 0o600);
        let leftovers: Vec<_> = std::fs::read_dir(t.path())
            .expect("ls")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
        std::fs::set_permissions(secret_path(t.path()), std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = load_or_create_secret(t.path()).expect_err("world-readable secret").to_string();
        assert!(e.contains("chmod 600"), "{e}");
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(check_secret(b"short", "x").is_err());
        assert!(check_secret(&[7u8; 32], "x").is_ok());
    }
}
