//! MCP session ids the gateway issues to models.
//!
//! A session id is `<uuid>.<issued unix seconds>.<tag>`, where the tag is the first 128 bits of
//! an HMAC-SHA256 over the model id, the uuid and the issue time. The gateway can then check on any instance,
//! without a store read, that a session id is its own, belongs to the calling model and has
//! not expired.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use time::OffsetDateTime;

type HmacSha256 = Hmac<Sha256>;

/// Length of the tag: 128 bits leave a forger one chance in 2^128 per guess.
const TAG_BYTES: usize = 16;

/// Why a presented session id was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// Not issued by this gateway for this model, or malformed.
    #[error("unknown session id; send `initialize` to start a new session")]
    Unknown,
    /// Issued for this model but older than the session lifetime.
    #[error("session expired; send `initialize` to start a new session")]
    Expired,
}

/// Issues and checks session ids.
#[derive(Clone)]
pub struct SessionIssuer {
    secret: Vec<u8>,
    ttl: Duration,
}

impl std::fmt::Debug for SessionIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionIssuer").field("ttl", &self.ttl).finish_non_exhaustive()
    }
}

impl SessionIssuer {
    /// Creates an issuer; ids stay valid for `ttl`.
    pub fn new(secret: &[u8], ttl: Duration) -> Self {
        Self { secret: secret.to_vec(), ttl }
    }

    /// Issues a new session id for `model_id`.
    pub fn issue(&self, model_id: &str, now: OffsetDateTime) -> String {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let issued = now.unix_timestamp();
        let tag = self.tag(model_id, &id, issued);
        format!("{id}.{issued}.{tag}")
    }

    /// Checks that `session_id` was issued to `model_id` and has not expired.
    pub fn verify(&self, session_id: &str, model_id: &str, now: OffsetDateTime) -> Result<(), SessionError> {
        let mut parts = session_id.split('.');
        let (Some(id), Some(issued), Some(tag), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(SessionError::Unknown);
        };
        // Only the spelling `issue` writes is accepted: leading zeros, a sign or upper-case hex
        // would verify too, and each spelling would count as a separate session in limits and
        // traces.
        let issued_text = issued;
        let issued: i64 = issued.parse().map_err(|_| SessionError::Unknown)?;
        let canonical_tag =
            tag.len() == 2 * TAG_BYTES && tag.bytes().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'));
        if issued.to_string() != issued_text || !canonical_tag {
            return Err(SessionError::Unknown);
        }
        let Ok(tag) = hex::decode(tag) else { return Err(SessionError::Unknown) };

        if tag.len() != TAG_BYTES || self.mac(model_id, id, issued).verify_truncated_left(&tag).is_err() {
            return Err(SessionError::Unknown);
        }
        let age = now.unix_timestamp().saturating_sub(issued);
        if age < 0 || u64::try_from(age).unwrap_or(u64::MAX) > self.ttl.as_secs() {
            return Err(SessionError::Expired);
        }
        Ok(())
    }

    fn tag(&self, model_id: &str, id: &str, issued: i64) -> String {
        let digest = self.mac(model_id, id, issued).finalize().into_bytes();
        hex::encode(digest.get(..TAG_BYTES).unwrap_or_default())
    }

    #[expect(clippy::expect_used, reason = "HMAC accepts keys of any length, so this cannot fail")]
    fn mac(&self, model_id: &str, id: &str, issued: i64) -> HmacSha256 {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.secret).expect("hmac key of any length");
        // Length prefixes keep `model|id` pairs from colliding across different splits.
        for part in [model_id.as_bytes(), id.as_bytes(), issued.to_string().as_bytes()] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);

    #[test]
    fn session_id_checks() {
        let issuer = SessionIssuer::new(b"secret", Duration::from_secs(60));
        let id = issuer.issue("gpt-4o", NOW);
        assert_eq!(issuer.verify(&id, "gpt-4o", NOW), Ok(()));
        assert_eq!(issuer.verify(&id, "mistral", NOW), Err(SessionError::Unknown));
        assert_eq!(issuer.verify(&id, "gpt-4o", NOW + time::Duration::seconds(61)), Err(SessionError::Expired));
        assert_eq!(
            SessionIssuer::new(b"other", Duration::from_secs(60)).verify(&id, "gpt-4o", NOW),
            Err(SessionError::Unknown)
        );
        for bad in ["", "abc", "a.b.c", "a.1.zz", &format!("{id}.x")] {
            assert_eq!(issuer.verify(bad, "gpt-4o", NOW), Err(SessionError::Unknown), "{bad}");
        }
    }

    #[test]
    fn session_id_has_one_spelling() {
        let issuer = SessionIssuer::new(b"secret", Duration::from_secs(60));
        let id = issuer.issue("gpt-4o", NOW);
        let mut parts = id.split('.');
        let (Some(uuid), Some(issued), Some(tag)) = (parts.next(), parts.next(), parts.next()) else {
            panic!("issued id has three parts: {id}");
        };
        let respelled = [
            format!("{uuid}.0{issued}.{tag}"),
            format!("{uuid}.+{issued}.{tag}"),
            format!("{uuid}.{issued}.{}", tag.to_uppercase()),
            format!("{uuid}.{issued}.{tag}00"),
        ];
        for other in &respelled {
            assert_eq!(issuer.verify(other, "gpt-4o", NOW), Err(SessionError::Unknown), "{other}");
        }
    }
}
