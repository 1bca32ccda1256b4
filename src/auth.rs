//! Authentication (SPEC section 3): JWT verification for connection and subscription
//! tokens, minting for `switchyard token`, and signed `resume` tokens that give an
//! anonymous client its session id back. Tokens are never logged.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::channel::Identity;
use crate::config::{Config, ConfigError};
#[cfg(test)]
use crate::ids::new_session_id;
use crate::ids::random_hex;

const LEEWAY_SECS: u64 = 30;

/// Why a token was refused. `reason()` is the `switchyard_auth_failures_total` label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Not a JWT, or its header cannot be read (this includes `alg: none`).
    #[error("malformed token")]
    Malformed,
    /// The header names an algorithm this node is not configured for.
    #[error("token algorithm not allowed")]
    AlgorithmNotAllowed,
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token not valid yet")]
    NotYetValid,
    /// Signature, issuer or audience did not verify.
    #[error("invalid token")]
    Invalid,
    #[error("token has no `exp` claim")]
    MissingExp,
    #[error("token has no `sub` or `user_id` claim")]
    MissingSubject,
    /// A subscription token used for another channel or user, or a connection token
    /// that carries a `channel` claim.
    #[error("token not valid for this use")]
    WrongUse,
    /// Issued before a revocation of its user (`/api/revoke`).
    #[error("token revoked")]
    Revoked,
}

impl AuthError {
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Malformed => "malformed",
            AuthError::AlgorithmNotAllowed => "algorithm",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::Invalid => "invalid",
            AuthError::MissingExp => "missing_exp",
            AuthError::MissingSubject => "missing_sub",
            AuthError::Revoked => "revoked",
            AuthError::WrongUse => "wrong_use",
        }
    }
}

/// Accepts `"42"` and `42` alike: several seed platforms put numeric user ids in tokens.
fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        S(String),
        N(serde_json::Number),
    }
    Ok(Option::<Id>::deserialize(d)?.map(|id| match id {
        Id::S(s) => s,
        Id::N(n) => n.to_string(),
    }))
}

#[derive(Debug, Deserialize)]
struct RawClaims {
    #[serde(default, deserialize_with = "string_or_number")]
    sub: Option<String>,
    #[serde(default, deserialize_with = "string_or_number")]
    user_id: Option<String>,
    exp: Option<u64>,
    iat: Option<u64>,
    #[serde(default, deserialize_with = "string_or_number")]
    tenant_id: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
    info: Option<Box<RawValue>>,
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default)]
    allow: Vec<String>,
    channel: Option<String>,
}

/// What a verified connection token says about its user.
#[derive(Debug, Clone)]
pub struct ConnClaims {
    pub user_id: String,
    pub tenant_id: Option<String>,
    pub roles: Vec<String>,
    pub info: Option<Arc<RawValue>>,
    pub channels: Vec<String>,
    pub allow: Vec<String>,
    /// Expiry as seconds since the Unix epoch.
    pub exp: u64,
    /// Issue time, when the token says (revocations refuse tokens without one).
    pub iat: Option<u64>,
}

impl ConnClaims {
    pub fn identity(&self, session_id: Option<Arc<str>>) -> Identity {
        Identity {
            user_id: Some(Arc::from(self.user_id.as_str())),
            session_id,
            tenant_id: self.tenant_id.clone(),
            roles: self.roles.clone(),
            allow: self.allow.clone(),
            info: self.info.clone(),
        }
    }
}

/// Claims of a token minted by `switchyard token`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MintClaims {
    pub sub: String,
    pub exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<serde_json::Value>,
    /// Issue time; `mint` sets it to now when absent (revocations compare with it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Verifies and mints tokens with the node's configured keys.
pub struct Auth {
    secret: Option<(DecodingKey, EncodingKey)>,
    public: Option<(DecodingKey, Vec<Algorithm>)>,
    issuer: Option<String>,
    audience: Option<String>,
    resume_key: Vec<u8>,
    resume_ttl: Duration,
}

fn load_public_key(path: &str) -> Result<(DecodingKey, Vec<Algorithm>), ConfigError> {
    let key_err = |message: String| ConfigError::Key {
        key: "auth.jwt_public_key_file".into(),
        message,
    };
    let pem = std::fs::read(path).map_err(|e| key_err(format!("cannot read {path}: {e}")))?;
    if let Ok(k) = DecodingKey::from_rsa_pem(&pem) {
        use Algorithm::*;
        return Ok((k, vec![RS256, RS384, RS512, PS256, PS384, PS512]));
    }
    if let Ok(k) = DecodingKey::from_ec_pem(&pem) {
        return Ok((k, vec![Algorithm::ES256, Algorithm::ES384]));
    }
    if let Ok(k) = DecodingKey::from_ed_pem(&pem) {
        return Ok((k, vec![Algorithm::EdDSA]));
    }
    Err(key_err(format!(
        "{path} holds no RSA, EC or Ed25519 public key in PEM"
    )))
}

impl Auth {
    pub fn from_config(config: &Config) -> Result<Auth, ConfigError> {
        let a = &config.auth;
        let secret = (!a.jwt_secret.is_empty()).then(|| {
            (
                DecodingKey::from_secret(a.jwt_secret.as_bytes()),
                EncodingKey::from_secret(a.jwt_secret.as_bytes()),
            )
        });
        let public = if a.jwt_public_key_file.is_empty() {
            None
        } else {
            Some(load_public_key(&a.jwt_public_key_file)?)
        };
        // Resume tokens must verify on every node, so the key derives from shared config.
        let seed = [&a.resume_secret, &a.jwt_secret, &config.api.key]
            .into_iter()
            .find(|s| !s.is_empty())
            .cloned()
            .unwrap_or_else(|| random_hex(32));
        let resume_key = Sha256::digest(format!("switchyard-resume:{seed}").as_bytes()).to_vec();
        Ok(Auth {
            secret,
            public,
            issuer: (!a.issuer.is_empty()).then(|| a.issuer.clone()),
            audience: (!a.audience.is_empty()).then(|| a.audience.clone()),
            resume_key,
            resume_ttl: a.resume_ttl,
        })
    }

    fn decode(&self, token: &str) -> Result<RawClaims, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        let alg = header.alg;
        let key = match alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                self.secret.as_ref().map(|(d, _)| d)
            }
            _ => self
                .public
                .as_ref()
                .filter(|(_, algs)| algs.contains(&alg))
                .map(|(d, _)| d),
        }
        .ok_or(AuthError::AlgorithmNotAllowed)?;
        // The key is chosen by the configured algorithms only: `kid`, `jku`, `x5u` and
        // an embedded `jwk` in the header are never read.
        let mut v = Validation::new(alg);
        v.leeway = LEEWAY_SECS;
        v.validate_nbf = true;
        // jsonwebtoken checks `iss`/`aud` only when present: configured, they must be.
        let mut required = vec!["exp"];
        match &self.audience {
            Some(aud) => {
                v.set_audience(&[aud]);
                required.push("aud");
            }
            None => v.validate_aud = false,
        }
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss]);
            required.push("iss");
        }
        v.set_required_spec_claims(&required);
        use jsonwebtoken::errors::ErrorKind;
        let data =
            jsonwebtoken::decode::<RawClaims>(token, key, &v).map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                ErrorKind::MissingRequiredClaim(c) if c == "exp" => AuthError::MissingExp,
                ErrorKind::MissingRequiredClaim(_) => AuthError::Invalid,
                ErrorKind::InvalidAlgorithm => AuthError::AlgorithmNotAllowed,
                ErrorKind::InvalidToken
                | ErrorKind::Base64(_)
                | ErrorKind::Json(_)
                | ErrorKind::Utf8(_) => AuthError::Malformed,
                _ => AuthError::Invalid,
            })?;
        Ok(data.claims)
    }

    /// Verifies a connection token (header, query or `auth` message).
    pub fn verify_connection(&self, token: &str) -> Result<ConnClaims, AuthError> {
        let c = self.decode(token)?;
        if c.channel.is_some() {
            return Err(AuthError::WrongUse);
        }
        let user_id = c
            .sub
            .or(c.user_id)
            .filter(|s| !s.is_empty())
            .ok_or(AuthError::MissingSubject)?;
        Ok(ConnClaims {
            user_id,
            tenant_id: c.tenant_id,
            roles: c.roles,
            info: c.info.map(Arc::from),
            channels: c.channels,
            allow: c.allow,
            exp: c.exp.ok_or(AuthError::MissingExp)?,
            iat: c.iat,
        })
    }

    /// Verifies a subscription token `{sub, channel, exp}` for this channel and identity.
    pub fn verify_subscription(
        &self,
        token: &str,
        channel: &str,
        who: &Identity,
    ) -> Result<(), AuthError> {
        let c = self.decode(token)?;
        let sub = c.sub.or(c.user_id).ok_or(AuthError::MissingSubject)?;
        let sub_matches = who.user_id.as_deref() == Some(sub.as_str())
            || who.session_id.as_deref() == Some(sub.as_str());
        if c.channel.as_deref() == Some(channel) && sub_matches {
            Ok(())
        } else {
            Err(AuthError::WrongUse)
        }
    }

    /// Mints an HS256 token (for `switchyard token`, development and tests).
    pub fn mint(&self, claims: &MintClaims) -> Result<String, String> {
        let (_, enc) = self.secret.as_ref().ok_or(
            "minting needs auth.jwt_secret (set it in --config or SWITCHYARD_AUTH__JWT_SECRET)",
        )?;
        let claims = MintClaims {
            iat: claims.iat.or(Some(unix_now())),
            ..claims.clone()
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, enc)
            .map_err(|e| e.to_string())
    }

    fn resume_sig(&self, body: &str) -> String {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.resume_key)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(body.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// When a session created now stops being resumable (Unix seconds).
    pub fn resume_deadline(&self) -> u64 {
        unix_now() + self.resume_ttl.as_secs()
    }

    /// A token that gives `session_id` back on reconnect until `exp` (Unix seconds,
    /// fixed when the session was created: resuming never extends it):
    /// `<session>.<exp>.<hmac>`.
    pub fn issue_resume(&self, session_id: &str, exp: u64) -> String {
        let body = format!("{session_id}.{exp}");
        let sig = self.resume_sig(&body);
        format!("{body}.{sig}")
    }

    /// The session id and expiry of a valid, unexpired resume token; `None` for
    /// anything else.
    pub fn check_resume(&self, token: &str) -> Option<(String, u64)> {
        let (body, sig) = token.rsplit_once('.')?;
        let (session, exp) = body.split_once('.')?;
        let expected = self.resume_sig(body);
        // Compare in constant time: a timing leak would let a client forge a session.
        let ok = expected.len() == sig.len()
            && expected
                .bytes()
                .zip(sig.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        let exp: u64 = exp.parse().ok()?;
        (ok && exp > unix_now()
            && session.len() == 32
            && session.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| (session.to_owned(), exp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        let c = Config::from_toml("auth.jwt_secret = 'k'").expect("config");
        Auth::from_config(&c).expect("auth")
    }

    fn claims(sub: &str, exp: u64) -> MintClaims {
        MintClaims {
            sub: sub.into(),
            exp,
            ..MintClaims::default()
        }
    }

    #[test]
    fn verifies_and_rejects() {
        let a = auth();
        let good = a.mint(&claims("42", unix_now() + 60)).expect("mint");
        assert_eq!(a.verify_connection(&good).expect("valid").user_id, "42");
        let old = a.mint(&claims("42", unix_now() - 120)).expect("mint");
        assert_eq!(a.verify_connection(&old).unwrap_err(), AuthError::Expired);
        // alg: none, unsigned.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(format!(r#"{{"sub":"1","exp":{}}}"#, unix_now() + 60))
        );
        assert!(a.verify_connection(&none).is_err());
        let mut forged = good.clone();
        forged.pop();
        forged.push(if good.ends_with('A') { 'B' } else { 'A' });
        assert!(a.verify_connection(&forged).is_err());
        let no_exp = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": "1"}),
            &EncodingKey::from_secret(b"k"),
        )
        .expect("encode");
        assert_eq!(
            a.verify_connection(&no_exp).unwrap_err(),
            AuthError::MissingExp
        );
    }

    #[test]
    fn resume_round_trip_and_tamper() {
        let a = auth();
        let sid = new_session_id();
        let exp = a.resume_deadline();
        let t = a.issue_resume(&sid, exp);
        assert_eq!(a.check_resume(&t), Some((sid.clone(), exp)));
        assert_eq!(a.check_resume(&a.issue_resume(&sid, unix_now() - 1)), None);
        let other = new_session_id();
        let tampered = t.replacen(&sid, &other, 1);
        assert_eq!(a.check_resume(&tampered), None);
        assert_eq!(a.check_resume("garbage"), None);
    }
}
