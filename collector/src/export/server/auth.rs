//! Basic auth and response headers from the web config, as an axum middleware (the checks of
//! exporter-toolkit's `webHandler.ServeHTTP`).
//!
//! Every request re-checks the web config file ([`WebConfigHandle::current`]); an invalid file
//! answers 500. With `basic_auth_users`, a request without valid credentials gets 401 and
//! `WWW-Authenticate: Basic`. An unknown user is compared against a dummy hash, so the answer
//! takes as long as for a known one. bcrypt runs on the blocking pool, one comparison at a time;
//! outcomes are cached (at most [`CACHE_SIZE`] entries, keyed by a SHA-256 of user, hash and
//! password, so no password is kept in clear).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

use super::web_config::{WebConfigHandle, DUMMY_HASH};

/// Most cached bcrypt outcomes (exporter-toolkit: 100).
pub const CACHE_SIZE: usize = 100;

/// State of the auth middleware.
#[derive(Debug)]
pub struct Auth {
    web: Arc<WebConfigHandle>,
    cache: Mutex<HashMap<[u8; 32], bool>>,
    bcrypt: tokio::sync::Mutex<()>,
}

impl Auth {
    /// Auth from the web config.
    pub fn new(web: Arc<WebConfigHandle>) -> Arc<Self> {
        Arc::new(Self {
            web,
            cache: Mutex::new(HashMap::new()),
            bcrypt: tokio::sync::Mutex::new(()),
        })
    }

    fn cache_get(&self, key: &[u8; 32]) -> Option<bool> {
        self.cache.lock().ok().and_then(|c| c.get(key).copied())
    }

    fn cache_set(&self, key: [u8; 32], ok: bool) {
        if let Ok(mut c) = self.cache.lock() {
            if c.len() >= CACHE_SIZE {
                // Drop a tenth; HashMap's per-process random hashing makes it an arbitrary tenth.
                let drop: Vec<[u8; 32]> = c.keys().take(CACHE_SIZE / 10).copied().collect();
                for k in drop {
                    c.remove(&k);
                }
            }
            c.insert(key, ok);
        }
    }

    /// Whether `user`/`pass` match `users` (bcrypt, cached).
    async fn check(
        &self,
        users: &std::collections::BTreeMap<String, String>,
        user: &str,
        pass: &str,
    ) -> bool {
        let (hash, valid_user) = match users.get(user) {
            Some(h) => (h.as_str(), true),
            None => (DUMMY_HASH, false),
        };
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        for part in [user.as_bytes(), hash.as_bytes(), pass.as_bytes()] {
            ctx.update(&(part.len() as u64).to_le_bytes());
            ctx.update(part);
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(ctx.finish().as_ref());
        let ok = match self.cache_get(&key) {
            Some(ok) => ok,
            None => {
                let _one_at_a_time = self.bcrypt.lock().await;
                let (pass, hash) = (pass.to_owned(), hash.to_owned());
                let ok = tokio::task::spawn_blocking(move || {
                    bcrypt::verify(pass.as_bytes(), &hash).unwrap_or(false)
                })
                .await
                .unwrap_or(false);
                self.cache_set(key, ok);
                ok
            }
        };
        ok && valid_user
    }
}

/// `user:password` from an `Authorization: Basic …` header.
fn basic_credentials(v: &HeaderValue) -> Option<(String, String)> {
    let s = v.to_str().ok()?;
    let (scheme, b64) = s.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}

/// The middleware: web config headers on every response, basic auth when users are set.
pub async fn middleware(State(auth): State<Arc<Auth>>, req: Request, next: Next) -> Response {
    let settings = match auth.web.current() {
        Ok(s) => s,
        Err(_) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error\n").into_response()
        }
    };
    let authorized = if settings.users.is_empty() {
        true
    } else {
        match req.headers().get(AUTHORIZATION).and_then(basic_credentials) {
            Some((u, p)) => auth.check(&settings.users, &u, &p).await,
            None => false,
        }
    };
    let mut resp = if authorized {
        next.run(req).await
    } else {
        let mut r = (StatusCode::UNAUTHORIZED, "Unauthorized\n").into_response();
        r.headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
        r
    };
    for (k, v) in &settings.headers {
        resp.headers_mut().insert(k.clone(), v.clone());
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_basic_credentials() {
        let v = HeaderValue::from_static("Basic cHJvbTpzM2NyZXQ6eA==");
        assert_eq!(
            basic_credentials(&v),
            Some(("prom".into(), "s3cret:x".into()))
        );
        assert_eq!(
            basic_credentials(&HeaderValue::from_static("Bearer x")),
            None
        );
        assert_eq!(
            basic_credentials(&HeaderValue::from_static("Basic !!")),
            None
        );
    }
}
