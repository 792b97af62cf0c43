//! The live page: a small HTTP server in the binary (`tiny_http`), the page itself
//! embedded at build time (`page/`: HTML, CSS, JavaScript, no CDN).
//!
//! Endpoints (every one needs the token when one is set: `?token=T` or
//! `Authorization: Bearer T`):
//! - `/`: the page;
//! - `/api/events`: server-sent events: `hello` (the state below) on connecting, then
//!   `frame` (a new frame is at `/api/frame.jpg`: seq, width, height, objects, labels),
//!   `record` (kind, t_s, latency_ms, at_s, body: the app's JSON line) and `metrics` (each
//!   second);
//! - `/api/state`: `{title, records, frame, metrics}` as one JSON document;
//! - `/api/metrics`: `{uptime_s, stages, edges, web}`;
//! - `/api/frame.jpg`: the newest frame, JPEG.
//!
//! Each browser gets its own queue of [`CLIENT_QUEUE`] events that drops the oldest when
//! the browser reads too slowly (counted in `web.dropped`), so no browser can hold up the
//! pipeline, and the page's frames are encoded at most [`MAX_FPS`] times a second.

use std::collections::VecDeque;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pipeline::edge::EdgeProbe;
use pipeline::{EdgeConfig, Envelope, Input, Monitor, Output, Recv, StageContext, StageResult};
use serde_json::{Value, json};

use crate::event::{Event, Publishable, Record, Sighting};

const INDEX: &str = include_str!("page/index.html");
const SCRIPT: &str = include_str!("page/app.js");
const STYLE: &str = include_str!("page/style.css");

/// Frames encoded for the page per second, at most: enough to watch, cheap beside the models.
pub const MAX_FPS: f64 = 4.0;
/// Events queued for one browser before its oldest are dropped.
pub const CLIENT_QUEUE: usize = 64;
/// Browsers streaming events at once; more are told to come back later (503).
pub const MAX_CLIENTS: usize = 16;
/// Records kept for a browser that connects late.
const HISTORY: usize = 100;
/// A comment line to each browser this often, so a gone one is noticed.
const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// Metrics go to every browser this often.
const METRICS_EVERY: Duration = Duration::from_secs(1);
/// JPEG quality of the page's frames.
const JPEG_QUALITY: u8 = 80;

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error(
        "--serve {0}: not a loopback address, and no token: anyone on the network could watch the camera. Give --serve-token TOKEN (or --serve-token-file FILE), or serve on 127.0.0.1"
    )]
    NeedsToken(SocketAddr),
    #[error("the serve token may hold only letters, digits and . _ ~ - (1 to 256 of them)")]
    BadToken,
    #[error("cannot serve on {addr}: {message}")]
    Bind { addr: SocketAddr, message: String },
}

/// Where and for whom to serve.
#[derive(Debug, Clone)]
pub struct WebConfig {
    pub addr: SocketAddr,
    /// What the page and the API must present; required off loopback.
    pub token: Option<String>,
    /// The page's heading: which app, on which source.
    pub title: String,
}

/// A newest frame, encoded for the page.
struct Picture {
    jpeg: Arc<Vec<u8>>,
    info: Value,
}

/// A browser streaming events.
struct Client {
    out: Output<Arc<str>>,
    probe: EdgeProbe<Arc<str>>,
}

/// What every request handler and the web stage share.
struct Hub {
    config: WebConfig,
    monitor: Monitor,
    started: Instant,
    records: Mutex<VecDeque<Value>>,
    picture: Mutex<Option<Picture>>,
    clients: Mutex<Vec<Client>>,
    /// Events dropped for browsers that have gone (the live ones' drops are in their probes).
    dropped_gone: AtomicU64,
    sent: AtomicU64,
}

/// The running server; dropping it stops serving.
pub struct Web {
    hub: Arc<Hub>,
    server: Arc<tiny_http::Server>,
    local: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Web {
    /// Checks the address and token, binds, and starts serving (the page shows the
    /// graph's stages and edges from `monitor`).
    pub fn start(config: WebConfig, monitor: Monitor) -> Result<Web, WebError> {
        if let Some(t) = &config.token
            && !valid_token(t)
        {
            return Err(WebError::BadToken);
        }
        if !config.addr.ip().is_loopback() && config.token.is_none() {
            return Err(WebError::NeedsToken(config.addr));
        }
        let server = tiny_http::Server::http(config.addr).map_err(|e| WebError::Bind {
            addr: config.addr,
            message: e.to_string(),
        })?;
        let local = server.server_addr().to_ip().ok_or_else(|| WebError::Bind {
            addr: config.addr,
            message: "not an IP socket".into(),
        })?;
        let server = Arc::new(server);
        let hub = Arc::new(Hub {
            config,
            monitor,
            started: Instant::now(),
            records: Mutex::new(VecDeque::new()),
            picture: Mutex::new(None),
            clients: Mutex::new(Vec::new()),
            dropped_gone: AtomicU64::new(0),
            sent: AtomicU64::new(0),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s) = (hub.clone(), server.clone());
        let serving = std::thread::Builder::new()
            .name("web-server".into())
            .spawn(move || {
                for request in s.incoming_requests() {
                    handle(&h, request);
                }
            });
        let (h, st) = (hub.clone(), stop.clone());
        let ticking = std::thread::Builder::new()
            .name("web-metrics".into())
            .spawn(move || {
                let mut last = Instant::now();
                while !st.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(100));
                    if last.elapsed() >= METRICS_EVERY {
                        h.broadcast("metrics", &h.metrics());
                        last = Instant::now();
                    }
                }
            });
        let threads = [serving, ticking]
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| WebError::Bind {
                addr: local,
                message: format!("cannot start a thread: {e}"),
            })?;
        Ok(Web {
            hub,
            server,
            local,
            stop,
            threads,
        })
    }

    /// The address served on (the port chosen when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The page's address, with its token.
    pub fn url(&self) -> String {
        let host = if self.local.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            self.local.ip().to_string()
        };
        let host = if self.local.is_ipv6() && host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        match &self.hub.config.token {
            Some(t) => format!("http://{host}:{}/?token={t}", self.local.port()),
            None => format!("http://{host}:{}/", self.local.port()),
        }
    }

    /// The web stage: frames (at most [`MAX_FPS`] a second) and records to every browser.
    pub fn stage<T: Publishable>(
        &self,
        ctx: &StageContext,
        input: Input<Envelope<T>>,
    ) -> StageResult {
        let min_gap = Duration::from_secs_f64(1.0 / MAX_FPS);
        let mut last_frame: Option<Instant> = None;
        for item in input {
            ctx.item_in();
            let t_s = item
                .captured
                .saturating_duration_since(self.hub.started)
                .as_secs_f64();
            let Some(event) = item
                .payload
                .event(item.seq, t_s, item.age().as_secs_f64() * 1e3)
            else {
                continue;
            };
            match &event {
                Event::Seen(seen) => {
                    if last_frame.is_some_and(|t| t.elapsed() < min_gap) {
                        continue;
                    }
                    last_frame = Some(Instant::now());
                    match ctx.busy(|| encode(seen)) {
                        Ok(jpeg) => self.hub.show(item.seq, seen, jpeg),
                        Err(e) => eprintln!("warning: frame {} not shown: {e}", item.seq),
                    }
                }
                Event::Said(record) => ctx.busy(|| self.hub.record(item.seq, record)),
            }
            ctx.record_latency(item.captured);
        }
        Ok(())
    }
}

impl Drop for Web {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.server.unblock();
        self.hub
            .clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The frame as JPEG. A frame whose pixels do not fill its size is an error, not the
/// encoder's assertion (a `Frame`'s fields are public).
fn encode(seen: &Sighting) -> Result<Vec<u8>, String> {
    let f = &seen.frame;
    let want = u64::from(f.width) * u64::from(f.height) * 3;
    if f.rgb.len() as u64 != want {
        return Err(format!(
            "{}x{} frame holds {} bytes of RGB, not {want}",
            f.width,
            f.height,
            f.rgb.len()
        ));
    }
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, JPEG_QUALITY)
        .encode(&f.rgb, f.width, f.height, image::ExtendedColorType::Rgb8)
        .map_err(|e| e.to_string())?;
    Ok(jpeg)
}

impl Hub {
    fn show(&self, seq: u64, seen: &Sighting, jpeg: Vec<u8>) {
        let info = json!({
            "seq": seq, "width": seen.frame.width, "height": seen.frame.height,
            "objects": seen.objects, "labels": seen.labels,
        });
        *self.picture.lock().unwrap_or_else(|p| p.into_inner()) = Some(Picture {
            jpeg: Arc::new(jpeg),
            info: info.clone(),
        });
        self.broadcast("frame", &info);
    }

    fn record(&self, seq: u64, r: &Record) {
        // `at_s`: when the page got it (seconds since serving began), for the latency plot.
        let v = json!({
            "seq": seq, "kind": r.kind, "t_s": r.t_s, "latency_ms": r.latency_ms,
            "at_s": self.started.elapsed().as_secs_f64(), "body": r.body,
        });
        {
            let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
            if records.len() == HISTORY {
                records.pop_front();
            }
            records.push_back(v.clone());
        }
        self.broadcast("record", &v);
    }

    /// One server-sent event to every browser; a gone browser is forgotten.
    fn broadcast(&self, event: &str, data: &Value) {
        let message: Arc<str> = sse(event, data).into();
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients.retain(|c| {
            let alive = c.out.send(message.clone()).is_ok();
            if !alive {
                self.dropped_gone
                    .fetch_add(c.probe.stats().dropped, Ordering::Relaxed);
            }
            alive
        });
        self.sent.fetch_add(clients.len() as u64, Ordering::Relaxed);
    }

    fn metrics(&self) -> Value {
        let clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        let dropped = self.dropped_gone.load(Ordering::Relaxed)
            + clients.iter().map(|c| c.probe.stats().dropped).sum::<u64>();
        json!({
            "uptime_s": self.started.elapsed().as_secs_f64(),
            "stages": self.monitor.stages(),
            "edges": self.monitor.edges(),
            "web": {"clients": clients.len(), "sent": self.sent.load(Ordering::Relaxed),
                    "dropped": dropped},
        })
    }

    fn state(&self) -> Value {
        let records: Vec<Value> = self
            .records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        let frame = self
            .picture
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|p| p.info.clone());
        json!({
            "title": self.config.title, "records": records, "frame": frame,
            "metrics": self.metrics(),
        })
    }

    /// The request's token (query or bearer header) against the configured one.
    fn allows(&self, request: &tiny_http::Request, query: &str) -> bool {
        let Some(want) = &self.config.token else {
            return true;
        };
        let from_query = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("token="))
            .map(str::to_owned);
        let from_header = request
            .headers()
            .iter()
            .find(|h| h.field.equiv("Authorization"))
            .and_then(|h| h.value.as_str().strip_prefix("Bearer ").map(str::to_owned));
        [from_query, from_header]
            .into_iter()
            .flatten()
            .any(|got| same(got.as_bytes(), want.as_bytes()))
    }
}

/// Compares in time that does not depend on where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Characters that need no escaping in a URL, so the printed address works as it is.
fn valid_token(t: &str) -> bool {
    (1..=256).contains(&t.len())
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b))
}

fn sse(event: &str, data: &Value) -> String {
    // serde_json writes no raw newline, so the data is one `data:` line.
    format!("event: {event}\ndata: {data}\n\n")
}

fn header(name: &str, value: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes())
        .expect("header names and values here are ASCII constants")
}

fn respond<R: std::io::Read>(request: tiny_http::Request, response: tiny_http::Response<R>) {
    let response = response
        .with_header(header("Cache-Control", "no-store"))
        .with_header(header("X-Content-Type-Options", "nosniff"));
    // A browser that went away mid-answer is no error of ours.
    let _ = request.respond(response);
}

fn text(
    status: u16,
    content_type: &str,
    body: impl Into<Vec<u8>>,
) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    tiny_http::Response::from_data(body.into())
        .with_status_code(status)
        .with_header(header("Content-Type", content_type))
}

fn handle(hub: &Arc<Hub>, request: tiny_http::Request) {
    let url = request.url().to_owned();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    if !hub.allows(&request, query) {
        let body =
            "this page needs its token: open the address percept printed (it ends in ?token=...)\n";
        return respond(request, text(401, "text/plain; charset=utf-8", body));
    }
    if *request.method() != tiny_http::Method::Get {
        return respond(
            request,
            text(405, "text/plain; charset=utf-8", "only GET\n"),
        );
    }
    match path {
        "/" | "/index.html" => respond(request, text(200, "text/html; charset=utf-8", INDEX)),
        "/app.js" => respond(request, text(200, "text/javascript; charset=utf-8", SCRIPT)),
        "/style.css" => respond(request, text(200, "text/css; charset=utf-8", STYLE)),
        "/api/state" => respond(
            request,
            text(200, "application/json", hub.state().to_string()),
        ),
        "/api/metrics" => respond(
            request,
            text(200, "application/json", hub.metrics().to_string()),
        ),
        "/api/frame.jpg" => {
            let jpeg = hub
                .picture
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .map(|p| p.jpeg.clone());
            match jpeg {
                Some(j) => respond(request, text(200, "image/jpeg", j.as_slice())),
                None => respond(
                    request,
                    text(404, "text/plain; charset=utf-8", "no frame yet\n"),
                ),
            }
        }
        "/api/events" => stream(hub, request),
        _ => respond(
            request,
            text(404, "text/plain; charset=utf-8", "not found\n"),
        ),
    }
}

/// Streams events to one browser on a thread of its own, until it goes.
fn stream(hub: &Arc<Hub>, request: tiny_http::Request) {
    let (out, input, probe) = pipeline::edge(EdgeConfig::latest(CLIENT_QUEUE));
    {
        let mut clients = hub.clients.lock().unwrap_or_else(|p| p.into_inner());
        if clients.len() >= MAX_CLIENTS {
            drop(clients);
            let body = format!("{MAX_CLIENTS} pages are open already: close one\n");
            return respond(request, text(503, "text/plain; charset=utf-8", body));
        }
        clients.push(Client { out, probe });
    }
    let hello = sse("hello", &hub.state());
    let spawned = std::thread::Builder::new()
        .name("web-client".into())
        .spawn(move || {
            let mut w = request.into_writer();
            let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n";
            if w.write_all(head.as_bytes())
                .and_then(|()| w.write_all(hello.as_bytes()))
                .and_then(|()| w.flush())
                .is_err()
            {
                return;
            }
            loop {
                let sent = match input.recv_timeout(KEEP_ALIVE) {
                    Recv::Item(m) => w.write_all(m.as_bytes()),
                    Recv::Timeout => w.write_all(b": keep-alive\n\n"),
                    Recv::End => return,
                };
                if sent.and_then(|()| w.flush()).is_err() {
                    // Dropping the input tells the hub at its next broadcast.
                    return;
                }
            }
        });
    if let Err(e) = spawned {
        eprintln!("warning: cannot stream events to a browser: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_whose_pixels_do_not_fill_it_is_an_error() {
        let seen = |width, height, bytes| Sighting {
            frame: pipeline::Frame {
                width,
                height,
                rgb: Arc::new(vec![128u8; bytes]),
            },
            objects: Value::Null,
            labels: Vec::new(),
        };
        let jpeg = encode(&seen(4, 2, 24)).unwrap();
        assert_eq!(&jpeg[..2], b"\xff\xd8");
        let e = encode(&seen(4, 2, 23)).unwrap_err();
        assert!(e.contains("4x2 frame holds 23 bytes"), "{e}");
    }

    #[test]
    fn tokens_are_compared_whole() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
        assert!(valid_token("a-Z_0.9~"));
        assert!(!valid_token("a b"));
        assert!(!valid_token(""));
        assert!(!valid_token("x&token=y"));
    }

    /// A browser that stops reading loses its oldest events; the stage never waits for it.
    #[test]
    fn a_page_that_never_reads_holds_nothing_up() {
        use std::io::Write as _;
        let config = WebConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            token: None,
            title: "t".into(),
        };
        let mut graph = pipeline::Graph::new();
        let web = Arc::new(Web::start(config, graph.monitor()).unwrap());
        let mut stuck = std::net::TcpStream::connect(web.local_addr()).unwrap();
        stuck
            .write_all(b"GET /api/events HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        while web.hub.clients.lock().unwrap().is_empty() {
            assert!(Instant::now() < until, "the page never connected");
            std::thread::sleep(Duration::from_millis(10));
        }
        let (tx, rx) = graph.edge("to-web", EdgeConfig::block(4));
        let w = web.clone();
        graph.spawn("web", move |ctx| w.stage(&ctx, rx)).unwrap();
        let body = json!({"caption": "x".repeat(500)});
        for seq in 0..20_000 {
            let record = Record {
                kind: crate::Kind::Caption,
                t_s: 0.0,
                latency_ms: 1.0,
                body: body.clone(),
            };
            tx.send(Envelope::new(seq, Instant::now(), Event::Said(record)))
                .unwrap();
        }
        drop(tx);
        graph.join().unwrap();
        // 10 MB of events to a socket nobody reads: only dropping lets the stage finish.
        let dropped = web.hub.metrics()["web"]["dropped"].as_u64().unwrap();
        assert!(dropped > 10_000, "dropped {dropped}");
        drop(stuck);
    }

    #[test]
    fn a_public_address_without_a_token_is_refused() {
        let config = WebConfig {
            addr: "0.0.0.0:0".parse().unwrap(),
            token: None,
            title: "t".into(),
        };
        let e = Web::start(config, Monitor::default())
            .err()
            .expect("refused");
        assert!(matches!(e, WebError::NeedsToken(_)), "{e}");
        assert!(e.to_string().contains("--serve-token"), "{e}");
    }
}
