//! The one HTTP probe of the workspace's tests, testbeds and tools: a plain HTTP/1.0 `GET` to a
//! loopback server (etcd's `/health`, the controller's `/readyz` and `/metrics`), with timeouts,
//! so that a server that accepts and never answers fails the probe instead of hanging it.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long connecting may take.
const CONNECT: Duration = Duration::from_secs(2);
/// How long the whole exchange may take (a large `/metrics` included).
const EXCHANGE: Duration = Duration::from_secs(10);

/// `GET path` on `addr` over plain HTTP/1.0 (no TLS): the status code and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    get_within(addr, path, EXCHANGE).await
}

/// [`http_get`] with the whole exchange limited to `limit`.
async fn get_within(addr: SocketAddr, path: &str, limit: Duration) -> Result<(u16, String)> {
    let mut stream = tokio::time::timeout(CONNECT, tokio::net::TcpStream::connect(addr))
        .await
        .with_context(|| format!("connecting to {addr}: no answer within {CONNECT:?}"))?
        .with_context(|| format!("connecting to {addr}"))?;
    let exchange = async {
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::Ok(String::from_utf8_lossy(&response).into_owned())
    };
    let response = tokio::time::timeout(limit, exchange)
        .await
        .with_context(|| format!("GET {path} on {addr}: no answer within {limit:?}"))??;
    parse(&response).with_context(|| format!("GET {path} on {addr}: {response:?}"))
}

/// The status code and body of an HTTP/1.x response.
fn parse(response: &str) -> Result<(u16, String)> {
    let code = response
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .context("no HTTP status line")?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_gives_its_code_and_body() {
        let (code, body) =
            parse("HTTP/1.0 503 Service Unavailable\r\nA: b\r\n\r\nnot\r\nready").unwrap();
        assert_eq!((code, body.as_str()), (503, "not\r\nready"));
        assert!(parse("garbage").is_err());
    }

    #[tokio::test]
    async fn a_server_that_never_answers_fails_the_probe() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(socket);
        });
        let error = get_within(addr, "/readyz", Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(
            format!("{error:#}").contains("no answer within"),
            "{error:#}"
        );
        held.abort();
    }
}
