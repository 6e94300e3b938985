//! A small HTTP client for the stint API that turns problem+json into readable errors.

use anyhow::{Context, bail};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// API client.
#[derive(Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("token", &"[redacted]")
            .finish()
    }
}

/// An error answer from the server.
#[derive(Debug)]
pub struct ApiFailure {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code.
    pub code: String,
    /// Human detail.
    pub detail: String,
    /// Itemized errors (e.g. an invalid policy's lines and columns).
    pub errors: Option<Vec<Value>>,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.status.as_u16(), self.detail)
    }
}

impl std::error::Error for ApiFailure {}

impl Client {
    /// A client for `base` (e.g. `http://127.0.0.1:8300`) with an optional API key.
    pub fn new(base: &str, token: Option<String>) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            token,
            http,
        })
    }

    fn token(&self) -> anyhow::Result<&str> {
        self.token
            .as_deref()
            .context("no API key: set STINT_TOKEN (or pass --token)")
    }

    /// Sends a request and returns the JSON answer (`Null` for an empty body).
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(self.token()?);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach the stint server at {}", self.base))?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            return Err(ApiFailure {
                status,
                code: v["code"].as_str().unwrap_or("error").to_owned(),
                detail: v["detail"].as_str().unwrap_or(text.as_str()).to_owned(),
                errors: v["errors"].as_array().cloned(),
            }
            .into());
        }
        if text.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).context("the server sent invalid JSON")
    }

    /// GET.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(Method::GET, path, None).await
    }

    /// POST with a JSON body.
    pub async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.call(Method::POST, path, Some(body)).await
    }

    /// RFC 8693 token exchange (no API key: the ID token is the credential).
    pub async fn exchange(&self, id_token: &str, target: &str) -> anyhow::Result<Value> {
        let resp = self
            .http
            .post(format!("{}/oauth2/token", self.base))
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
                ("subject_token", id_token),
                ("subject_token_type", "urn:ietf:params:oauth:token-type:id_token"),
                ("audience", target),
            ])
            .send()
            .await
            .with_context(|| format!("cannot reach the stint server at {}", self.base))?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            anyhow::bail!(
                "token exchange refused ({}): {}",
                v["error"].as_str().unwrap_or("error"),
                v["error_description"].as_str().unwrap_or("")
            );
        }
        Ok(v)
    }

    /// GET of a binary body (e.g. a KRL).
    pub async fn get_bytes(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(self.token()?)
            .send()
            .await
            .with_context(|| format!("cannot reach the stint server at {}", self.base))?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        if !status.is_success() {
            let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            return Err(ApiFailure {
                status,
                code: v["code"].as_str().unwrap_or("error").to_owned(),
                detail: v["detail"].as_str().unwrap_or("request failed").to_owned(),
                errors: None,
            }
            .into());
        }
        Ok(bytes.to_vec())
    }

    /// Follows `GET /v1/events/stream` and prints each event (one line each) until the server goes away.
    pub async fn watch(&self, after: Option<i64>, json: bool) -> anyhow::Result<()> {
        use futures_util::StreamExt;
        let http = reqwest::Client::builder().build()?;
        let mut req = http
            .get(format!("{}/v1/events/stream", self.base))
            .bearer_auth(self.token()?);
        if let Some(a) = after {
            req = req.header("Last-Event-ID", a.to_string());
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach the stint server at {}", self.base))?;
        let status = resp.status();
        if !status.is_success() {
            let v: Value = resp.json().await.unwrap_or(Value::Null);
            return Err(ApiFailure {
                status,
                code: v["code"].as_str().unwrap_or("error").to_owned(),
                detail: v["detail"].as_str().unwrap_or("request failed").to_owned(),
                errors: None,
            }
            .into());
        }
        eprintln!("stint: watching the revocation stream (Ctrl-C to stop)");
        let mut body = resp.bytes_stream();
        let mut buf = String::new();
        let (mut id, mut event, mut data) = (String::new(), String::new(), String::new());
        while let Some(chunk) = body.next().await {
            buf.push_str(&String::from_utf8_lossy(&chunk?));
            while let Some(nl) = buf.find('\n') {
                let line: String = buf.drain(..=nl).collect();
                let line = line.trim_end_matches(['\n', '\r']);
                if line.is_empty() {
                    if !data.is_empty() {
                        if json {
                            println!("{data}");
                        } else {
                            let v: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
                            println!(
                                "{id}\t{event}\t{}\t{}\treason={}\tjtis={}",
                                v["at"].as_str().unwrap_or(""),
                                v["sid"].as_str().unwrap_or(""),
                                v["reason"].as_str().unwrap_or(""),
                                v["jtis"]
                            );
                        }
                    }
                    id.clear();
                    event.clear();
                    data.clear();
                } else if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
        }
        Ok(())
    }

    /// PUT with a JSON body.
    pub async fn put(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.call(Method::PUT, path, Some(body)).await
    }

    /// DELETE.
    pub async fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.call(Method::DELETE, path, None).await
    }
}

/// Parses a duration: `90`, `90s`, `15m`, `1h`, `1h30m`, `2d`.
pub fn parse_duration(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    if s.is_empty() {
        bail!("empty duration");
    }
    if let Ok(n) = s.parse::<u64>() {
        return Ok(n);
    }
    let mut total: u64 = 0;
    let mut num = String::new();
    for ch in s.chars() {
        if ch.is_ascii_digit() {
            num.push(ch);
            continue;
        }
        let unit = match ch {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => bail!("bad duration `{s}`: use e.g. 90s, 15m, 1h, 1h30m"),
        };
        let n: u64 = num
            .parse()
            .map_err(|_| anyhow::anyhow!("bad duration `{s}`: a unit needs a number before it"))?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| anyhow::anyhow!("duration `{s}` is too long"))?;
        num.clear();
    }
    if !num.is_empty() {
        bail!("bad duration `{s}`: the last number has no unit");
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90").ok(), Some(90));
        assert_eq!(parse_duration("15m").ok(), Some(900));
        assert_eq!(parse_duration("1h30m").ok(), Some(5400));
        assert_eq!(parse_duration("2d").ok(), Some(172_800));
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("1h30").is_err());
    }
}
