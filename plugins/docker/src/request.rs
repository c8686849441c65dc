//! `POST /build` made by hand over the daemon's socket. bollard 0.19 sends
//! `memory`, `memswap` and `shmsize` as 32-bit numbers, while the Engine API
//! takes 64-bit ones (`docker build --memory 4g`); this request carries
//! bollard's own query for everything else and the three limits at full
//! width. The answer is the same stream of JSON messages bollard reads,
//! turned into the same items (`BuildInfo`, or bollard's errors), so the
//! builder handles both alike.

use std::{io, pin::Pin, task::Poll};

use bollard::{errors::Error as DockerError, models::BuildInfo, query_parameters};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Body as _, Frame, Incoming};

/// The most of one message (or of an error answer) kept before it is
/// refused: a daemon that never ends a message must not fill memory.
const MESSAGE_LIMIT: usize = 16 << 20;

/// The request body: the context archive, as it is read.
type Body = StreamBody<Pin<Box<dyn Stream<Item = io::Result<Frame<Bytes>>> + Send>>>;

/// The three limits the Engine API takes as 64-bit numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// `memory`, in bytes.
    pub memory: Option<i64>,
    /// `memswap`, in bytes; -1 for unlimited.
    pub memswap: Option<i64>,
    /// `shmsize`, in bytes.
    pub shmsize: Option<i64>,
}

/// The request's query: bollard's serialisation of `options` (which must
/// leave the three limits unset) and `limits` after it.
pub fn query(options: &query_parameters::BuildImageOptions, limits: Limits) -> String {
    let mut query = serde_urlencoded::to_string(options).unwrap_or_default();
    for (name, value) in [
        ("memory", limits.memory),
        ("memswap", limits.memswap),
        ("shmsize", limits.shmsize),
    ] {
        if let Some(value) = value {
            query.push_str(&format!("&{name}={value}"));
        }
    }
    query
}

/// A connection to the daemon at `host`, whichever socket kind it is.
trait Socket: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Socket for T {}

async fn connect(host: &str) -> io::Result<Box<dyn Socket>> {
    use kiln_distribution::engine::{endpoint, Endpoint};
    Ok(match endpoint(host).map_err(io::Error::other)? {
        Endpoint::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
        Endpoint::Tcp(addr) => Box::new(tokio::net::TcpStream::connect(addr).await?),
    })
}

/// Send `POST /v<version>/build?<query>` to `host` with `body` (the
/// context archive) and return the daemon's messages as they arrive.
/// Dropping the stream closes the connection, which stops the build.
pub async fn build(
    host: &str,
    version: &bollard::ClientVersion,
    query: &str,
    body: impl Stream<Item = io::Result<Bytes>> + Send + 'static,
) -> Result<Messages, DockerError> {
    let socket = connect(host).await.map_err(DockerError::from)?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(socket))
            .await
            .map_err(DockerError::from)?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let driver = AbortOnDrop(driver);
    let path = format!(
        "/v{}.{}/build?{query}",
        version.major_version, version.minor_version
    );
    let frames: Body = StreamBody::new(Box::pin(body.map(|chunk| chunk.map(Frame::data))));
    let request = hyper::Request::post(path)
        .header(hyper::header::HOST, "docker")
        .header(hyper::header::CONTENT_TYPE, "application/x-tar")
        .header(hyper::header::USER_AGENT, "kiln")
        .body(frames)
        .map_err(DockerError::from)?;
    let answer = sender
        .send_request(request)
        .await
        .map_err(DockerError::from)?;
    let status = answer.status();
    let mut body = answer.into_body();
    if !status.is_success() {
        let mut text = Vec::new();
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame.map_err(DockerError::from)?.into_data() else {
                continue;
            };
            text.extend_from_slice(&data[..data.len().min(MESSAGE_LIMIT - text.len())]);
            if text.len() >= MESSAGE_LIMIT {
                break;
            }
        }
        let message = serde_json::from_slice::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| Some(v.get("message")?.as_str()?.to_string()))
            .unwrap_or_else(|| String::from_utf8_lossy(&text).trim().to_string());
        return Err(DockerError::DockerResponseServerError {
            status_code: status.as_u16(),
            message,
        });
    }
    Ok(Messages {
        body,
        buffer: Vec::new(),
        ended: false,
        _driver: driver,
        _sender: sender,
    })
}

/// Aborts the connection's task when the answer is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The daemon's build messages: JSON values one after another (each on
/// its own line, as the daemon sends them, or not).
pub struct Messages {
    body: Incoming,
    buffer: Vec<u8>,
    ended: bool,
    _driver: AbortOnDrop,
    _sender: hyper::client::conn::http1::SendRequest<Body>,
}

/// The first whole message in `buffer`, taken out of it: `None` while it
/// holds only part of one.
fn take_message(buffer: &mut Vec<u8>) -> Option<Result<BuildInfo, DockerError>> {
    let start = buffer.iter().position(|b| !b.is_ascii_whitespace())?;
    let mut values =
        serde_json::Deserializer::from_slice(&buffer[start..]).into_iter::<BuildInfo>();
    let item = match values.next()? {
        Ok(info) => Ok(info),
        Err(e) if e.is_eof() => return None,
        Err(e) => Err(DockerError::JsonDataError {
            message: e.to_string(),
            column: e.column(),
        }),
    };
    let used = match &item {
        Ok(_) => start + values.byte_offset(),
        // What cannot be read is dropped whole.
        Err(_) => buffer.len(),
    };
    buffer.drain(..used);
    Some(item.and_then(|info| match info.error.clone() {
        Some(error) => Err(DockerError::DockerStreamError { error }),
        None => Ok(info),
    }))
}

impl Stream for Messages {
    type Item = Result<BuildInfo, DockerError>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(item) = take_message(&mut self.buffer) {
                return Poll::Ready(Some(item));
            }
            if self.ended {
                let rest = std::mem::take(&mut self.buffer);
                return Poll::Ready((!rest.iter().all(u8::is_ascii_whitespace)).then(|| {
                    Err(DockerError::JsonDataError {
                        message: "the daemon's answer ended inside a message".into(),
                        column: 0,
                    })
                }));
            }
            if self.buffer.len() > MESSAGE_LIMIT {
                self.buffer.clear();
                self.ended = true;
                return Poll::Ready(Some(Err(DockerError::JsonDataError {
                    message: format!("a message of the daemon's longer than {MESSAGE_LIMIT} bytes"),
                    column: 0,
                })));
            }
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => self.ended = true,
                Poll::Ready(Some(Err(e))) => {
                    self.ended = true;
                    self.buffer.clear();
                    return Poll::Ready(Some(Err(DockerError::from(e))));
                }
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_go_at_full_width_after_bollards_query() {
        let options = query_parameters::BuildImageOptions {
            dockerfile: "Dockerfile".into(),
            t: Some("a:b".into()),
            ..Default::default()
        };
        let q = query(
            &options,
            Limits {
                memory: Some(4 << 30),
                memswap: Some(-1),
                shmsize: None,
            },
        );
        assert!(q.starts_with("dockerfile=Dockerfile&t=a%3Ab"), "{q}");
        assert!(q.ends_with("&memory=4294967296&memswap=-1"), "{q}");
        assert!(!q.contains("shmsize"), "{q}");
    }

    #[test]
    fn messages_are_read_whole_however_they_are_cut() {
        let text =
            b"{\"stream\":\"Step 1/2\"}\r\n{\"stream\":\"x\"}{\"aux\":{\"ID\":\"sha256:ab\"}}\n \
                     {\"error\":\"boom\",\"errorDetail\":{\"message\":\"boom\"}}\n{\"str";
        for cut in 1..text.len() {
            let mut buffer = Vec::new();
            let mut got = Vec::new();
            for part in [&text[..cut], &text[cut..]] {
                buffer.extend_from_slice(part);
                while let Some(item) = take_message(&mut buffer) {
                    got.push(item);
                }
            }
            assert_eq!(got.len(), 4, "cut at {cut}");
            assert_eq!(
                got[0]
                    .as_ref()
                    .ok()
                    .and_then(|i| i.stream.clone())
                    .as_deref(),
                Some("Step 1/2")
            );
            assert!(got[2].as_ref().is_ok_and(|i| i.aux.is_some()));
            assert!(
                matches!(&got[3], Err(DockerError::DockerStreamError { error }) if error == "boom")
            );
            assert_eq!(buffer.trim_ascii_start(), b"{\"str");
        }
        let mut junk = b"<html>".to_vec();
        assert!(matches!(
            take_message(&mut junk),
            Some(Err(DockerError::JsonDataError { .. }))
        ));
        assert!(junk.is_empty());
    }
}
