//! `auth-file`: decides SMTP AUTH (RFC 4954) against argon2 password hashes
//! (PHC strings, RFC 9106 Argon2) listed in the plugin's configuration.
//! Valid credentials are accepted; a wrong password and an unknown user get
//! the same 535 reply and cost the same one hash verification (no user
//! enumeration by reply or by timing); an authorization identity other than
//! the user name is refused (no proxy authorization). Input: the decoded
//! credentials from the host (client-controlled) and the operator's
//! configuration (hashes validated at init). Never logs a password or hash.

use std::collections::BTreeMap;

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params};
use postern_sdk::prelude::*;

/// What to do with a user name that is not in `users`.
#[derive(Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnUnknownUser {
    /// `535 5.7.8`, like a wrong password.
    #[default]
    Reject,
    /// No opinion: a later auth plugin decides (when every plugin passes
    /// the host fails the authentication with the same 535).
    Pass,
}

/// `[plugin.config]` of `auth-file`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// User name → argon2 PHC string (`postern hash-password`).
    pub users: BTreeMap<String, String>,
    #[serde(default)]
    pub on_unknown_user: OnUnknownUser,
}

/// Verified against when the user is unknown, so that an unknown user costs
/// the same as a known one with the default parameters
/// (`m=19456,t=2,p=1`, what `postern hash-password` writes). Its password is
/// random and forgotten; nothing ever matches it.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$6DMuH7H4vLtmEM99N/4AVg$ger32N8tlGckobGqPgZSSg4pxcNUi6kSfAWRQ7rI8Qs";

/// The one reply for every refusal (RFC 4954 §6).
pub const INVALID_TEXT: &str = "Authentication credentials invalid";

/// `535 5.7.8 Authentication credentials invalid`.
pub fn invalid() -> Verdict {
    reject(535, "5.7.8", INVALID_TEXT)
}

/// How one attempt ended (for the log line and the tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The password matches.
    Ok,
    /// Known user, wrong password.
    WrongPassword,
    /// Not in `users`.
    UnknownUser,
    /// An authorization identity other than the user name was given.
    AuthzidMismatch,
}

pub struct AuthFile {
    users: BTreeMap<String, String>,
    on_unknown_user: OnUnknownUser,
}

/// Check one configured entry: a PHC string for argon2id/argon2i/argon2d
/// with valid parameters, a salt and a hash. Errors name the user, never the
/// hash.
fn check_entry(user: &str, phc: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "users[{user:?}]: {why}; generate a hash with `echo -n PASSWORD | postern hash-password`"
        ))
    };
    let hash = match PasswordHash::new(phc.trim()) {
        Ok(h) => h,
        Err(e) => return bad(&format!("not a PHC password hash string ({e})")),
    };
    if Algorithm::try_from(hash.algorithm).is_err() {
        return bad(&format!(
            "unsupported algorithm {:?} (argon2id, argon2i or argon2d)",
            hash.algorithm.as_str()
        ));
    }
    if let Err(e) = Params::try_from(&hash) {
        return bad(&format!("invalid argon2 parameters ({e})"));
    }
    if hash.salt.is_none() || hash.hash.is_none() {
        return bad("the PHC string has no salt or no hash");
    }
    Ok(())
}

impl Plugin for AuthFile {
    type Config = Config;
    fn new(config: Config) -> Result<Self, String> {
        if config.users.is_empty() && cfg!(target_arch = "wasm32") {
            // Allowed (a fresh installation has no accounts yet): every AUTH
            // then fails with 535 5.7.8.
            postern_sdk::host::log::warn("users is empty: every AUTH attempt will fail");
        }
        for (user, phc) in &config.users {
            if user.is_empty() {
                return Err("users: an empty user name is not allowed".into());
            }
            check_entry(user, phc)?;
        }
        let users = config
            .users
            .into_iter()
            .map(|(u, h)| (u, h.trim().to_string()))
            .collect();
        Ok(AuthFile {
            users,
            on_unknown_user: config.on_unknown_user,
        })
    }
}

/// Whether `password` matches the PHC string `phc` (validated at init).
/// Constant-time comparison inside the argon2 crate.
fn verify(phc: &str, password: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(hash) => Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok(),
        Err(_) => false,
    }
}

impl AuthFile {
    /// Decide on one set of credentials. Pure apart from the hash work:
    /// exactly one argon2 verification, whether or not the user exists.
    pub fn check(&self, credentials: &Credentials) -> Outcome {
        if let Some(authzid) = &credentials.authzid
            && !authzid.is_empty()
            && *authzid != credentials.username
        {
            return Outcome::AuthzidMismatch;
        }
        match self.users.get(&credentials.username) {
            Some(phc) if verify(phc, &credentials.password) => Outcome::Ok,
            Some(_) => Outcome::WrongPassword,
            None => {
                // Same cost as a known user: no timing oracle for user names.
                let _ = verify(DUMMY_HASH, &credentials.password);
                Outcome::UnknownUser
            }
        }
    }

    /// The verdict for an outcome.
    pub fn verdict(&self, outcome: Outcome) -> Verdict {
        match outcome {
            Outcome::Ok => accept(),
            Outcome::UnknownUser if self.on_unknown_user == OnUnknownUser::Pass => pass(),
            Outcome::WrongPassword | Outcome::UnknownUser | Outcome::AuthzidMismatch => invalid(),
        }
    }
}

impl Auth for AuthFile {
    fn on_auth(&self, _session: &Session, credentials: &Credentials) -> Verdict {
        let outcome = self.check(credentials);
        let user = credentials.username.as_str();
        let verdict = self.verdict(outcome);
        match (outcome, &verdict) {
            (Outcome::Ok, _) => log::with(Level::Info, "auth ok", &[("user", user)]),
            (_, Verdict::Pass) => log::with(
                Level::Debug,
                "auth unknown user, left to the next auth plugin",
                &[("user", user)],
            ),
            _ => log::with(Level::Info, "auth failed", &[("user", user)]),
        }
        verdict
    }
}

export_plugin!(AuthFile, [auth], recycle);

#[cfg(test)]
mod tests;
