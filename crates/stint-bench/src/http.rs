//! A minimal HTTP/1.1 client over hyper: one keep-alive TCP connection per [`Conn`] (one per worker),
//! `TCP_NODELAY`, reconnecting after a failure. Plain `http://` only: the benchmark runs on loopback.

use std::fmt;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;

use crate::load::OpError;

/// Where a server listens: `http://host[:port]`, without a path.
#[derive(Clone, PartialEq, Eq)]
pub struct BaseUrl {
    authority: String,
    connect_to: String,
}

impl BaseUrl {
    /// Parses `http://host[:port][/]`.
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let bad = || UrlError { url: url.to_owned() };
        let uri: Uri = url.parse().map_err(|_| bad())?;
        if uri.scheme_str() != Some("http") || !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(bad());
        }
        let authority = uri.authority().ok_or_else(bad)?;
        let port = authority.port_u16().unwrap_or(80);
        Ok(Self {
            authority: authority.as_str().to_owned(),
            connect_to: format!("{}:{port}", authority.host()),
        })
    }
}

impl fmt::Debug for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}", self.authority)
    }
}

impl fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}", self.authority)
    }
}

/// A base URL that is not `http://host[:port]`.
#[derive(Debug, thiserror::Error)]
#[error("`{url}` is not a plain `http://host[:port]` URL")]
pub struct UrlError {
    url: String,
}

/// How a request proves its caller.
#[derive(Debug, Clone, Copy)]
pub enum Auth<'a> {
    /// No credentials.
    None,
    /// `Authorization: Bearer <key>` (stint).
    Bearer(&'a str),
    /// `X-Vault-Token: <token>` (OpenBao).
    VaultToken(&'a str),
}

/// A request body.
#[derive(Debug, Clone)]
pub enum Body {
    /// No body.
    Empty,
    /// `application/json`.
    Json(Bytes),
    /// `application/x-www-form-urlencoded`.
    Form(Bytes),
}

impl Body {
    /// A JSON body.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self, OpError> {
        serde_json::to_vec(value)
            .map(|v| Self::Json(v.into()))
            .map_err(|e| OpError::new(e.to_string()))
    }

    /// A form body from name–value pairs.
    pub fn form(pairs: &[(&str, &str)]) -> Self {
        let mut out = String::new();
        for (i, (name, value)) in pairs.iter().enumerate() {
            if i > 0 {
                out.push('&');
            }
            form_encode(name, &mut out);
            out.push('=');
            form_encode(value, &mut out);
        }
        Self::Form(out.into())
    }
}

/// An answer, read in full.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status.
    pub status: StatusCode,
    /// The body.
    pub body: Bytes,
}

impl Response {
    /// Fails unless the status is one of `expected`.
    pub fn expect(self, expected: &[u16]) -> Result<Self, OpError> {
        if expected.contains(&self.status.as_u16()) {
            return Ok(self);
        }
        let body = String::from_utf8_lossy(&self.body[..self.body.len().min(200)]).into_owned();
        Err(OpError::new(format!(
            "status {} (expected {expected:?}): {body}",
            self.status.as_u16()
        )))
    }

    /// The body as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, OpError> {
        serde_json::from_slice(&self.body).map_err(|e| OpError::new(format!("bad JSON answer: {e}")))
    }
}

/// One keep-alive connection to a server.
#[derive(Debug)]
pub struct Conn {
    base: BaseUrl,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    /// A connection to `base`, opened now (so the first measured request does not pay for it).
    pub async fn open(base: &BaseUrl) -> Result<Self, OpError> {
        let mut conn = Self {
            base: base.clone(),
            sender: None,
        };
        conn.ready().await?;
        Ok(conn)
    }

    async fn ready(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, OpError> {
        if self.sender.as_ref().is_some_and(|s| s.is_closed()) {
            self.sender = None;
        }
        let sender = match self.sender.take() {
            Some(sender) => sender,
            None => {
                let stream = TcpStream::connect(&self.base.connect_to)
                    .await
                    .map_err(|e| OpError::new(format!("connect {}: {e}", self.base)))?;
                stream
                    .set_nodelay(true)
                    .map_err(|e| OpError::new(e.to_string()))?;
                let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| OpError::new(format!("handshake: {e}")))?;
                tokio::spawn(connection);
                sender
            }
        };
        Ok(self.sender.insert(sender))
    }

    /// Sends one request and reads the whole answer. After a transport error the next request reconnects.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        auth: Auth<'_>,
        body: Body,
    ) -> Result<Response, OpError> {
        let mut request = Request::builder().method(method).uri(path);
        let host = HeaderValue::from_str(&self.base.authority).map_err(|e| OpError::new(e.to_string()))?;
        request = request.header(HOST, host);
        request = match auth {
            Auth::None => request,
            Auth::Bearer(key) => request.header(AUTHORIZATION, format!("Bearer {key}")),
            Auth::VaultToken(token) => request.header("x-vault-token", token),
        };
        let (request, body) = match body {
            Body::Empty => (request, Bytes::new()),
            Body::Json(b) => (request.header(CONTENT_TYPE, "application/json"), b),
            Body::Form(b) => (
                request.header(CONTENT_TYPE, "application/x-www-form-urlencoded"),
                b,
            ),
        };
        let request = request
            .body(Full::new(body))
            .map_err(|e| OpError::new(format!("bad request: {e}")))?;
        let sender = self.ready().await?;
        let result = async {
            sender.ready().await?;
            let response = sender.send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>(Response { status, body })
        }
        .await;
        result.map_err(|e| {
            self.sender = None;
            OpError::new(format!("http: {e}"))
        })
    }

    /// `POST` a JSON body.
    pub async fn post_json<T: Serialize + ?Sized>(
        &mut self,
        path: &str,
        auth: Auth<'_>,
        body: &T,
    ) -> Result<Response, OpError> {
        self.send(Method::POST, path, auth, Body::json(body)?).await
    }

    /// `POST` a form.
    pub async fn post_form(
        &mut self,
        path: &str,
        auth: Auth<'_>,
        pairs: &[(&str, &str)],
    ) -> Result<Response, OpError> {
        self.send(Method::POST, path, auth, Body::form(pairs)).await
    }

    /// `GET` a path.
    pub async fn get(&mut self, path: &str, auth: Auth<'_>) -> Result<Response, OpError> {
        self.send(Method::GET, path, auth, Body::Empty).await
    }
}

/// `application/x-www-form-urlencoded`: unreserved bytes as is, space as `+`, the rest `%XX`.
fn form_encode(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => out.push(char::from(b)),
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 15)]));
            }
        }
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let u = BaseUrl::parse("http://127.0.0.1:8300").unwrap();
        assert_eq!(
            (u.authority.as_str(), u.connect_to.as_str()),
            ("127.0.0.1:8300", "127.0.0.1:8300")
        );
        assert_eq!(u.to_string(), "http://127.0.0.1:8300");
        let u = BaseUrl::parse("http://localhost/").unwrap();
        assert_eq!(u.connect_to, "localhost:80");
        let u = BaseUrl::parse("http://[::1]:8200").unwrap();
        assert_eq!(u.connect_to, "[::1]:8200");
        for bad in [
            "https://x:1",
            "127.0.0.1:8300",
            "http://x:1/v1",
            "ftp://x",
            "http://x:1/?a=b",
        ] {
            assert!(BaseUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn form_bodies_are_url_encoded() {
        let Body::Form(b) = Body::form(&[("token", "a.b_c-d"), ("x y", "1+2=3&ü")]) else {
            panic!()
        };
        assert_eq!(&b[..], b"token=a.b_c-d&x+y=1%2B2%3D3%26%C3%BC");
    }
}
