//! `--serve` and `--mqtt` on `describe` and `kiosk`: the flags, and the web and MQTT
//! stages they add to the graph (the publishers themselves are in the `publish` crate).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use pipeline::{Graph, StopHandle};
use publish::Outlets;
use publish::mqtt::{App, Mqtt, MqttConfig};
use publish::web::{Web, WebConfig};

#[derive(Args, Debug, Clone, Default)]
pub struct PublishArgs {
    /// Serve a live page (frame, boxes, captions or replies, metrics) at ADDR: 127.0.0.1:8080
    /// when given without a value, port 0 for any free port (printed on stderr). Off
    /// loopback the page needs --serve-token (or --serve-token-file): anyone who can reach
    /// the address could watch the camera. With --serve the page stays up after the input
    /// ends, until Ctrl-C.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:8080")]
    pub serve: Option<String>,
    /// What the page and its API must be given (`?token=`, or `Authorization: Bearer`):
    /// letters, digits and . _ ~ -
    #[arg(long, value_name = "TOKEN", requires = "serve")]
    pub serve_token: Option<String>,
    /// Read the serve token from FILE (its first line), so it does not show in `ps`.
    #[arg(
        long,
        value_name = "FILE",
        requires = "serve",
        conflicts_with = "serve_token"
    )]
    pub serve_token_file: Option<PathBuf>,
    /// Publish every result as JSON to an MQTT broker, mqtt://[user@]host[:port] (or
    /// mqtts:// for TLS), with Home Assistant discovery. The password comes from $PERCEPT_MQTT_PASSWORD or
    /// --mqtt-password-file. A broker that is down or goes away never stops the pipeline:
    /// messages wait (the oldest dropped past 256) and percept reconnects.
    #[arg(long, value_name = "URL")]
    pub mqtt: Option<String>,
    /// First part of every topic: <prefix>/<device>/caption, ...
    #[arg(
        long,
        value_name = "PREFIX",
        default_value = "percept",
        requires = "mqtt"
    )]
    pub mqtt_prefix: String,
    /// Second part of every topic, and the Home Assistant device's name (default: the host
    /// name).
    #[arg(long, value_name = "NAME", requires = "mqtt")]
    pub mqtt_device: Option<String>,
    /// Read the broker's password from FILE (its first line).
    #[arg(long, value_name = "FILE", requires = "mqtt")]
    pub mqtt_password_file: Option<PathBuf>,
    /// For an mqtts:// broker: the PEM file of the CA that signed its certificate
    /// (default: the system's roots).
    #[arg(long, value_name = "FILE", requires = "mqtt")]
    pub mqtt_ca_file: Option<PathBuf>,
}

/// A CA certificate file, read.
pub fn read_ca(path: &std::path::Path) -> Result<Vec<u8>> {
    let pem = std::fs::read(path)
        .with_context(|| format!("cannot read the CA file {}", path.display()))?;
    if !pem.starts_with(b"-----BEGIN") {
        bail!(
            "{}: not a PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        );
    }
    Ok(pem)
}

/// The publishers a run asked for, started (the web page is being served, the broker
/// being connected to) before the graph's stages are.
pub struct Publishers {
    web: Option<Arc<Web>>,
    mqtt: Option<Arc<Mqtt>>,
}

fn first_line(path: &PathBuf, what: &str) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the {what} file {}", path.display()))?;
    let line = text.lines().next().unwrap_or("").trim().to_owned();
    if line.is_empty() {
        bail!("the {what} file {} is empty", path.display());
    }
    Ok(line)
}

/// `--serve`'s address: an IP and port, or a host name that resolves to one.
pub fn serve_addr(given: &str) -> Result<SocketAddr> {
    given
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .with_context(|| format!("--serve {given}: expected an address such as 127.0.0.1:8080"))
}

impl Publishers {
    pub fn start(args: &PublishArgs, app: App, title: String, graph: &Graph) -> Result<Self> {
        let web = match &args.serve {
            None => None,
            Some(addr) => {
                let token = match (&args.serve_token, &args.serve_token_file) {
                    (Some(t), _) => Some(t.clone()),
                    (None, Some(f)) => Some(first_line(f, "serve token")?),
                    (None, None) => None,
                };
                let config = WebConfig {
                    addr: serve_addr(addr)?,
                    token,
                    title,
                };
                let web = Web::start(config, graph.monitor())?;
                eprintln!("serving the live page on {}", web.url());
                Some(Arc::new(web))
            }
        };
        let mqtt = match &args.mqtt {
            None => None,
            Some(url) => {
                let password = match &args.mqtt_password_file {
                    Some(f) => Some(first_line(f, "MQTT password")?),
                    None => std::env::var("PERCEPT_MQTT_PASSWORD").ok(),
                };
                let config = MqttConfig {
                    url: url.clone(),
                    user: std::env::var("PERCEPT_MQTT_USER").ok(),
                    password,
                    prefix: args.mqtt_prefix.clone(),
                    device: args
                        .mqtt_device
                        .clone()
                        .unwrap_or_else(publish::mqtt::host_name),
                    app,
                    ca: args.mqtt_ca_file.as_deref().map(read_ca).transpose()?,
                };
                let mqtt = Mqtt::connect(&config)?;
                eprintln!(
                    "publishing to {url} under {}/",
                    mqtt.topic("").trim_end_matches('/')
                );
                Some(Arc::new(mqtt))
            }
        };
        Ok(Publishers { web, mqtt })
    }

    /// Adds the `web` and `mqtt` stages to the graph; the apps send their results to the
    /// returned outlets.
    pub fn spawn(&self, graph: &mut Graph) -> Result<Outlets> {
        let mut outlets = Outlets::default();
        if let Some(web) = &self.web {
            let input = outlets.open(graph, "to-web");
            let web = web.clone();
            graph.spawn("web", move |ctx| web.stage(&ctx, input))?;
        }
        if let Some(mqtt) = &self.mqtt {
            let input = outlets.open(graph, "to-mqtt");
            let mqtt = mqtt.clone();
            graph.spawn("mqtt", move |ctx| mqtt.stage(&ctx, input))?;
        }
        Ok(outlets)
    }

    /// After the graph: the MQTT link's counts; with a page, serving on until Ctrl-C.
    pub fn finish(self, stop: &StopHandle) {
        if let Some(mqtt) = &self.mqtt {
            let s = mqtt.stats();
            let n = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
            eprintln!(
                "mqtt: {} messages published, {} dropped while the broker was away, {} connection(s)",
                n(&s.published),
                n(&s.dropped),
                n(&s.connections)
            );
        }
        drop(self.mqtt);
        if let Some(web) = &self.web
            && !stop.is_stopped()
        {
            eprintln!(
                "the input has ended; the page stays up on {}: Ctrl-C to stop",
                web.url()
            );
            while !stop.is_stopped() {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
}
