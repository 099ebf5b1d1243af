//! A stand-in for Microsoft Entra ID's token endpoint, on a free loopback port, for the
//! Azure workload identity flow: `POST /<tenant>/oauth2/v2.0/token` with the form
//! object_store sends (`client_id`, `client_assertion_type` jwt-bearer,
//! `client_assertion` = the federated token file's content, `scope`
//! `https://storage.azure.com/.default`, `grant_type` `client_credentials`) gets an
//! access token; anything else gets 401 and is counted.
//!
//! The access token is a JWT with what Azurite's `--oauth basic` checks: issuer
//! `https://sts.windows.net/<tenant>/`, audience `https://storage.azure.com`, `nbf` and
//! `exp` around now. It is not signed (Azurite does not check signatures; Azure would).
//! So what is tested is object_store's half: it reads the token file, asks the
//! authority host for a token with exactly this form, and sends that token to storage.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::http1::{self, Request};

use base64::Engine;

pub struct TokenEndpoint {
    pub port: u16,
    pub tenant_id: String,
    pub client_id: String,
    /// Requests answered with a token, and requests refused.
    pub issued: Arc<AtomicUsize>,
    pub refused: Arc<AtomicUsize>,
}

impl TokenEndpoint {
    /// Issues tokens to `client_id` of `tenant_id` presenting `assertion`.
    pub fn start(tenant_id: &str, client_id: &str, assertion: &str) -> TokenEndpoint {
        let issued = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let want = Want {
            path: format!("/{tenant_id}/oauth2/v2.0/token"),
            tenant_id: tenant_id.to_owned(),
            client_id: client_id.to_owned(),
            assertion: assertion.to_owned(),
        };
        let (i, r) = (issued.clone(), refused.clone());
        let port = http1::serve(move |request| answer(request, &want, &i, &r));
        TokenEndpoint {
            port,
            tenant_id: tenant_id.to_owned(),
            client_id: client_id.to_owned(),
            issued,
            refused,
        }
    }

    /// What `AZURE_AUTHORITY_HOST` takes: `http://127.0.0.1:<port>`.
    pub fn authority(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

struct Want {
    path: String,
    tenant_id: String,
    client_id: String,
    assertion: String,
}

/// One request: a token for the right form, else 401. Counted before the answer goes
/// out, so a test that sees the client's result sees the count too.
fn answer(request: Request, want: &Want, issued: &AtomicUsize, refused: &AtomicUsize) {
    let form = parse_form(&String::from_utf8_lossy(&request.body));
    let field = |k: &str| form.get(k).map(String::as_str);
    let good = request.method == "POST"
        && request.path == want.path
        && field("client_id") == Some(want.client_id.as_str())
        && field("client_assertion_type")
            == Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
        && field("client_assertion") == Some(want.assertion.as_str())
        && field("scope") == Some("https://storage.azure.com/.default")
        && field("grant_type") == Some("client_credentials");
    if good { issued } else { refused }.fetch_add(1, Ordering::SeqCst);
    let (status, body) = if good {
        let token = access_token(&want.tenant_id, &want.client_id);
        (
            "200 OK",
            serde_json::json!({"token_type": "Bearer", "expires_in": 3600, "access_token": token})
                .to_string(),
        )
    } else {
        (
            "401 Unauthorized",
            r#"{"error":"invalid_client","error_description":"AADSTS700213: no matching federated identity record"}"#.to_owned(),
        )
    };
    request.respond(status, &body);
}

/// An unsigned JWT with the claims Azurite checks.
fn access_token(tenant_id: &str, client_id: &str) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let now = chrono::Utc::now().timestamp();
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
    let claims = serde_json::json!({
        "aud": "https://storage.azure.com",
        "iss": format!("https://sts.windows.net/{tenant_id}/"),
        "nbf": now - 60,
        "iat": now - 60,
        "exp": now + 3600,
        "appid": client_id,
        "tid": tenant_id,
        "oid": "00000000-0000-0000-0000-00000000b0a7",
        "ver": "1.0",
    });
    format!(
        "{}.{}.{}",
        b64.encode(header.to_string()),
        b64.encode(claims.to_string()),
        b64.encode("unsigned")
    )
}

/// `application/x-www-form-urlencoded` → fields.
fn parse_form(body: &str) -> HashMap<String, String> {
    body.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
