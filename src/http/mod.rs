//! HTTP for every daemon: a tiny_http server wrapper and a small blocking client.
//!
//! What it is: [`server`] runs a handler `Fn(&Request) -> Response` on a few
//! threads behind tiny_http, with bounded request bodies, a `/metrics` helper and a
//! graceful stop tied to [`crate::daemon::Shutdown`]; [`client`] speaks HTTP/1.1
//! over `std::net::TcpStream` with connect, I/O and total deadlines and a body cap
//! (Content-Length, chunked, or read-to-close). MPS peers, QSDs (MPS and snapshot
//! fetches), UAS and history reuse both.
//!
//! What it is not: a router framework or a TLS client (HTTPS peers go through a
//! reverse proxy until the client grows TLS). No async runtime.
//!
//! spec: http.md.

pub mod client;
pub mod server;

pub use client::{Client, ClientError, HttpResponse};
pub use server::{HttpServer, Request, Response, ServerConfig, ServerError};

/// Content type of the Prometheus text exposition format.
pub const CONTENT_TYPE_METRICS: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of one-line error and status bodies.
pub const CONTENT_TYPE_TEXT: &str = "text/plain; charset=utf-8";
/// Content type of raw binary bodies (one update payload).
pub const CONTENT_TYPE_OCTETS: &str = "application/octet-stream";

/// The `/metrics` answer for a registry (spec: http.md §1).
pub fn metrics_response(registry: &crate::metrics::Registry) -> Response {
    Response::new(200, CONTENT_TYPE_METRICS, registry.render().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::Shutdown;
    use std::sync::Arc;

    fn serve(body_max: usize) -> HttpServer {
        let handler: server::Handler = Arc::new(|r: &Request| match r.segments().as_slice() {
            ["echo"] => Response::new(200, CONTENT_TYPE_OCTETS, r.body.clone()),
            ["q"] => Response::text(200, r.query_param("a").unwrap_or("-")),
            ["panic"] => panic!("handler bug"),
            _ => Response::not_found("no such resource"),
        });
        HttpServer::spawn(
            "127.0.0.1:0".parse().unwrap(),
            "test",
            ServerConfig {
                threads: 2,
                body_max,
            },
            Shutdown::new(),
            handler,
        )
        .unwrap()
    }

    #[test]
    fn client_and_server_round_trip() {
        let s = serve(1000);
        let base = format!("http://{}", s.local_addr());
        let c = Client::default();
        let r = c.get(&format!("{base}/q?a=42")).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"42\n"[..]));
        assert_eq!(r.header("content-type"), Some(CONTENT_TYPE_TEXT));
        let r = c
            .post(&format!("{base}/echo"), CONTENT_TYPE_OCTETS, &[1, 2, 3])
            .unwrap();
        assert_eq!(r.body, [1, 2, 3]);
        assert_eq!(c.get(&format!("{base}/nope")).unwrap().status, 404);
        let r = c
            .post(&format!("{base}/echo"), CONTENT_TYPE_OCTETS, &[0u8; 1001])
            .unwrap();
        assert_eq!(r.status, 413);
        assert_eq!(c.get(&format!("{base}/panic")).unwrap().status, 500);
        // The worker survived the panic.
        assert_eq!(c.get(&format!("{base}/q?a=1")).unwrap().status, 200);
        let small = Client {
            body_max: 2,
            ..Client::default()
        };
        assert!(matches!(
            small.get(&format!("{base}/q?a=12345")),
            Err(ClientError::TooLarge { max: 2 })
        ));
        let addr = s.local_addr();
        s.stop();
        let quick = Client {
            total_timeout: std::time::Duration::from_millis(500),
            ..Client::default()
        };
        assert!(quick.get(&format!("http://{addr}/q?a=1")).is_err());
    }

    #[test]
    fn metrics_route_renders_the_registry() {
        let reg = crate::metrics::Registry::new();
        reg.counter("ivip_x_total", "x").add(2);
        let r = metrics_response(&reg);
        assert_eq!(r.content_type, CONTENT_TYPE_METRICS);
        assert!(
            String::from_utf8(r.body)
                .unwrap()
                .contains("ivip_x_total 2")
        );
    }
}
