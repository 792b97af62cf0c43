//! Publishing to an MQTT broker (`rumqttc`), with Home Assistant's MQTT discovery.
//!
//! Topics, under `<prefix>/<device>/` (`percept/<hostname>/` by default):
//! - `caption`: describe's caption line (the JSON `--json` prints);
//! - `detections`: `{seq, objects, labels}` for each frame the encoders saw;
//! - `person`: `ON` or `OFF` (retained), when that changes;
//! - `transcript`: `{seq, t_s, transcript}` for each utterance the kiosk heard;
//! - `answer`, `action`: the kiosk's reply line (the JSON `--json` prints);
//! - `text`: a graph's text lines (`{seq, text}`);
//! - `status`: `online`, or `offline` (retained; the broker says `offline` for us if we
//!   vanish: the last will).
//!
//! Discovery (retained, under `homeassistant/`), sent again on every connection since a
//! restarted broker may have lost it: describe a `sensor` for the last caption and a
//! `binary_sensor` (occupancy) for a person in view; the kiosk sensors for the last
//! transcript and answer; a graph a sensor for its last line of text.
//!
//! The pipeline never waits for the broker: the stage keeps at most [`BACKLOG`] messages,
//! dropping the oldest (counted) while the broker is away, and the connection thread
//! reconnects with a backoff of [`FIRST_RETRY`] doubling up to [`LAST_RETRY`].
//!
//! `mqtts://` (port 8883 by default) is TLS through the system's OpenSSL, checking the
//! broker's certificate against the system's roots or a given CA file. Credentials never
//! travel in the URL's password part (it would show in `ps`): the user may, the password
//! comes from the environment or a file.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pipeline::{Envelope, Input, Recv, StageContext, StageResult};
use rumqttc::{
    Client, Event as Net, LastWill, MqttOptions, Outgoing, Packet, QoS, TlsConfiguration, Transport,
};
use serde_json::{Value, json};

use crate::event::{Event, Kind, Publishable, Record, Sighting};

/// Messages kept while the broker is away or slow; older ones are dropped and counted.
pub const BACKLOG: usize = 256;
/// Waits between connection attempts: from this, doubling...
pub const FIRST_RETRY: Duration = Duration::from_millis(250);
/// ...up to this.
pub const LAST_RETRY: Duration = Duration::from_secs(2);
/// At the end of a run, how long queued messages may take to go out.
const GRACE: Duration = Duration::from_secs(3);
/// Requests rumqttc queues between our stage and its event loop.
const CHANNEL: usize = 64;
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Home Assistant's default discovery prefix.
pub const DISCOVERY_PREFIX: &str = "homeassistant";

#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error(
        "--mqtt {0}: expected mqtt://[user@]host[:port] or mqtts://[user@]host[:port] (the password comes from PERCEPT_MQTT_PASSWORD or --mqtt-password-file)"
    )]
    BadUrl(String),
    #[error("--mqtt-ca-file is for mqtts:// brokers; {0} is not one")]
    CaWithoutTls(String),
    #[error(
        "--mqtt {0}: put the password in PERCEPT_MQTT_PASSWORD or --mqtt-password-file, not in the URL"
    )]
    PasswordInUrl(String),
    #[error("cannot start the MQTT connection's thread: {0}")]
    Thread(String),
    #[error("MQTT topic part {0:?}: use letters, digits, '-' and '_' only")]
    BadTopic(String),
}

/// Which Home Assistant entities a run announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum App {
    Describe,
    Kiosk,
    Graph,
}

impl App {
    fn name(self) -> &'static str {
        match self {
            App::Describe => "describe",
            App::Kiosk => "kiosk",
            App::Graph => "run",
        }
    }
}

#[derive(Debug, Clone)]
pub struct MqttConfig {
    /// `mqtt://[user@]host[:port]`.
    pub url: String,
    pub user: Option<String>,
    pub password: Option<String>,
    /// First part of every topic.
    pub prefix: String,
    /// Second part: this device's name (default: the host name).
    pub device: String,
    pub app: App,
    /// For `mqtts://`: the PEM certificate of the CA that signed the broker's (default:
    /// the system's roots).
    pub ca: Option<Vec<u8>>,
}

/// The broker's address, read from the URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub tls: bool,
}

impl Broker {
    pub fn parse(url: &str) -> Result<Broker, MqttError> {
        let bad = || MqttError::BadUrl(url.to_owned());
        let (tls, rest) = match (url.strip_prefix("mqtt://"), url.strip_prefix("mqtts://")) {
            (Some(rest), _) => (false, rest),
            (None, Some(rest)) => (true, rest),
            (None, None) => return Err(bad()),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (user, hostport) = match rest.rsplit_once('@') {
            Some((u, _)) if u.contains(':') => return Err(MqttError::PasswordInUrl(url.into())),
            Some((u, h)) if !u.is_empty() => (Some(u.to_owned()), h),
            Some(_) => return Err(bad()),
            None => (None, rest),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            // An IPv6 address in brackets holds colons of its own.
            Some((h, p)) if !p.contains(']') => (h, p.parse::<u16>().map_err(|_| bad())?),
            _ => (hostport, if tls { 8883 } else { 1883 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains('/') || port == 0 {
            return Err(bad());
        }
        Ok(Broker {
            host: host.to_owned(),
            port,
            user,
            tls,
        })
    }
}

/// One message to the broker.
#[derive(Debug, Clone, PartialEq)]
struct Message {
    topic: String,
    payload: Vec<u8>,
    retain: bool,
}

/// What the connection thread and the stage know of the link.
#[derive(Debug, Default)]
pub struct LinkStats {
    pub connected: AtomicBool,
    /// Successful connections (the first and every reconnection).
    pub connections: AtomicU64,
    pub published: AtomicU64,
    /// Messages dropped while the broker was away or slow.
    pub dropped: AtomicU64,
}

/// A connection to a broker (made, and remade, in the background).
pub struct Mqtt {
    client: Client,
    base: String,
    app: App,
    person: Mutex<Option<bool>>,
    stats: Arc<LinkStats>,
    stop: Arc<AtomicBool>,
    connection: Option<JoinHandle<()>>,
    started: Instant,
}

/// A topic part as MQTT and Home Assistant's object ids both take it.
fn check_part(part: &str) -> Result<(), MqttError> {
    let fine = !part.is_empty()
        && part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if fine {
        Ok(())
    } else {
        Err(MqttError::BadTopic(part.to_owned()))
    }
}

/// This machine's name as a topic part: what `device` defaults to.
pub fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let name: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() {
        "percept".into()
    } else {
        name
    }
}

impl Mqtt {
    /// Starts connecting: the broker need not be up yet; messages wait (up to
    /// [`BACKLOG`]) until it is.
    pub fn connect(config: &MqttConfig) -> Result<Mqtt, MqttError> {
        let broker = Broker::parse(&config.url)?;
        check_part(&config.prefix)?;
        check_part(&config.device)?;
        let base = format!("{}/{}", config.prefix, config.device);
        let id = format!("percept-{}-{}", config.device, std::process::id());
        let mut options = MqttOptions::new(id, broker.host.clone(), broker.port);
        options.set_keep_alive(KEEP_ALIVE);
        options.set_last_will(LastWill::new(
            format!("{base}/status"),
            "offline",
            QoS::AtLeastOnce,
            true,
        ));
        if let Some(user) = config.user.clone().or(broker.user.clone()) {
            options.set_credentials(user, config.password.clone().unwrap_or_default());
        }
        match (&config.ca, broker.tls) {
            (Some(_), false) => return Err(MqttError::CaWithoutTls(config.url.clone())),
            (Some(ca), true) => {
                options.set_transport(Transport::tls_with_config(TlsConfiguration::SimpleNative {
                    ca: ca.clone(),
                    client_auth: None,
                }))
            }
            (None, true) => {
                options.set_transport(Transport::tls_with_config(TlsConfiguration::Native))
            }
            (None, false) => &mut options,
        };
        let (client, mut connection) = Client::new(options, CHANNEL);
        let announcements = Arc::new(discovery(&base, &config.device, config.app));
        let stats = Arc::new(LinkStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (c, a, s, st) = (
            client.clone(),
            announcements.clone(),
            stats.clone(),
            stop.clone(),
        );
        let where_ = format!("{}:{}", broker.host, broker.port);
        let thread = std::thread::Builder::new()
            .name("mqtt".into())
            .spawn(move || {
                let mut retry = FIRST_RETRY;
                let mut told = false;
                for event in connection.iter() {
                    match event {
                        Ok(Net::Incoming(Packet::ConnAck(_))) => {
                            s.connected.store(true, Ordering::Release);
                            s.connections.fetch_add(1, Ordering::Relaxed);
                            if told {
                                eprintln!("mqtt: connected to {where_} again");
                            }
                            told = false;
                            retry = FIRST_RETRY;
                            for m in a.iter() {
                                let _ = c.try_publish(&m.topic, QoS::AtLeastOnce, m.retain, m.payload.clone());
                            }
                        }
                        Ok(Net::Outgoing(Outgoing::Publish(_))) => {
                            s.published.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Net::Outgoing(Outgoing::Disconnect)) => break,
                        Ok(_) => {}
                        Err(e) => {
                            s.connected.store(false, Ordering::Release);
                            if st.load(Ordering::Acquire) {
                                break;
                            }
                            if !told {
                                eprintln!("mqtt: no broker at {where_} ({e}): retrying, the pipeline goes on");
                                told = true;
                            }
                            sleep_unless(&st, retry);
                            retry = (retry * 2).min(LAST_RETRY);
                        }
                    }
                }
            })
            .map_err(|e| MqttError::Thread(e.to_string()))?;
        Ok(Mqtt {
            client,
            base,
            app: config.app,
            person: Mutex::new(None),
            stats,
            stop,
            connection: Some(thread),
            started: Instant::now(),
        })
    }

    pub fn stats(&self) -> &LinkStats {
        &self.stats
    }

    /// The topic a message of `part` goes to.
    pub fn topic(&self, part: &str) -> String {
        format!("{}/{part}", self.base)
    }

    /// The MQTT stage: every event as its messages, kept (up to [`BACKLOG`]) until the
    /// broker takes them.
    pub fn stage<T: Publishable>(
        &self,
        ctx: &StageContext,
        input: Input<Envelope<T>>,
    ) -> StageResult {
        let mut backlog = VecDeque::new();
        loop {
            match input.recv_timeout(Duration::from_millis(50)) {
                Recv::Item(item) => {
                    ctx.item_in();
                    let t_s = item
                        .captured
                        .saturating_duration_since(self.started)
                        .as_secs_f64();
                    let age_ms = item.age().as_secs_f64() * 1e3;
                    let event = item.payload.event(item.seq, t_s, age_ms);
                    for m in event.iter().flat_map(|e| self.messages(item.seq, e)) {
                        if backlog.len() == BACKLOG {
                            backlog.pop_front();
                            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                        }
                        backlog.push_back(m);
                    }
                    ctx.record_latency(item.captured);
                }
                Recv::Timeout => {}
                Recv::End => break,
            }
            self.flush(&mut backlog);
        }
        let started = Instant::now();
        while !backlog.is_empty() && started.elapsed() < GRACE {
            self.flush(&mut backlog);
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stats
            .dropped
            .fetch_add(backlog.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Hands what rumqttc will take to it, while connected.
    fn flush(&self, backlog: &mut VecDeque<Message>) {
        while self.stats.connected.load(Ordering::Acquire) {
            let Some(m) = backlog.front() else { return };
            let qos = if m.retain {
                QoS::AtLeastOnce
            } else {
                QoS::AtMostOnce
            };
            if self
                .client
                .try_publish(&m.topic, qos, m.retain, m.payload.clone())
                .is_err()
            {
                return;
            }
            backlog.pop_front();
        }
    }

    fn messages(&self, seq: u64, event: &Event) -> Vec<Message> {
        let m = |part: &str, v: &Value, retain| Message {
            topic: self.topic(part),
            payload: v.to_string().into_bytes(),
            retain,
        };
        match event {
            Event::Said(r) => self.said(seq, r, m),
            Event::Seen(seen) => {
                let mut out = vec![m(
                    "detections",
                    &json!({"seq": seq, "objects": seen.objects, "labels": seen.labels}),
                    false,
                )];
                if self.app == App::Describe {
                    out.extend(self.person_change(seen));
                }
                out
            }
        }
    }

    fn said(
        &self,
        seq: u64,
        r: &Record,
        m: impl Fn(&str, &Value, bool) -> Message,
    ) -> Vec<Message> {
        let mut out = Vec::new();
        if let Some(t) = r.body.get("transcript") {
            out.push(m(
                "transcript",
                &json!({"seq": seq, "t_s": r.t_s, "transcript": t}),
                false,
            ));
        }
        if r.kind != Kind::Transcript {
            out.push(m(r.kind.name(), &r.body, false));
        }
        out
    }

    fn person_change(&self, seen: &Sighting) -> Option<Message> {
        let now = seen.person();
        let mut last = self.person.lock().unwrap_or_else(|p| p.into_inner());
        if *last == Some(now) {
            return None;
        }
        *last = Some(now);
        Some(Message {
            topic: self.topic("person"),
            payload: if now { b"ON".to_vec() } else { b"OFF".to_vec() },
            retain: true,
        })
    }
}

impl Drop for Mqtt {
    /// Says `offline` and disconnects, waiting (briefly) for the connection thread.
    fn drop(&mut self) {
        if self.stats.connected.load(Ordering::Acquire) {
            let _ =
                self.client
                    .try_publish(self.topic("status"), QoS::AtLeastOnce, true, "offline");
        }
        self.stop.store(true, Ordering::Release);
        let _ = self.client.try_disconnect();
        if let Some(t) = self.connection.take() {
            let _ = t.join();
        }
    }
}

fn sleep_unless(stop: &AtomicBool, total: Duration) {
    let until = Instant::now() + total;
    while Instant::now() < until && !stop.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The retained messages sent on every connection: Home Assistant's discovery configs
/// for this app's entities, then `online`.
fn discovery(base: &str, device: &str, app: App) -> Vec<Message> {
    let dev = json!({
        "identifiers": [format!("percept_{device}")],
        "name": format!("percept {device}"),
        "manufacturer": "percept",
        "model": format!("percept {}", app.name()),
        "sw_version": env!("CARGO_PKG_VERSION"),
    });
    let sensor = |object: &str, name: &str, field: &str, icon: &str| {
        let config = json!({
            "name": name,
            "unique_id": format!("percept_{device}_{object}"),
            "object_id": format!("percept_{device}_{object}"),
            "state_topic": format!("{base}/{object}"),
            "value_template": format!("{{{{ value_json.{field} | truncate(250) }}}}"),
            "json_attributes_topic": format!("{base}/{object}"),
            "availability_topic": format!("{base}/status"),
            "icon": icon,
            "device": dev,
        });
        (format!("sensor/percept_{device}/{object}"), config)
    };
    let mut configs = match app {
        App::Describe => vec![sensor("caption", "Caption", "caption", "mdi:cctv")],
        App::Kiosk => vec![
            sensor(
                "transcript",
                "Last transcript",
                "transcript",
                "mdi:microphone",
            ),
            sensor("answer", "Last answer", "answer", "mdi:message-reply-text"),
        ],
        App::Graph => vec![sensor("text", "Text", "text", "mdi:text")],
    };
    if app == App::Describe {
        configs.push((
            format!("binary_sensor/percept_{device}/person"),
            json!({
                "name": "Person in view",
                "unique_id": format!("percept_{device}_person"),
                "object_id": format!("percept_{device}_person"),
                "state_topic": format!("{base}/person"),
                "payload_on": "ON",
                "payload_off": "OFF",
                "device_class": "occupancy",
                "availability_topic": format!("{base}/status"),
                "device": dev,
            }),
        ));
    }
    let mut out: Vec<Message> = configs
        .into_iter()
        .map(|(path, config)| Message {
            topic: format!("{DISCOVERY_PREFIX}/{path}/config"),
            payload: config.to_string().into_bytes(),
            retain: true,
        })
        .collect();
    out.push(Message {
        topic: format!("{base}/status"),
        payload: b"online".to_vec(),
        retain: true,
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        let b = Broker::parse("mqtt://broker.lan").unwrap();
        assert_eq!(
            (b.host.as_str(), b.port, b.user),
            ("broker.lan", 1883, None)
        );
        let b = Broker::parse("mqtt://ha@10.0.0.2:1884/").unwrap();
        assert_eq!(
            (b.host.as_str(), b.port, b.user.as_deref()),
            ("10.0.0.2", 1884, Some("ha"))
        );
        let b = Broker::parse("mqtt://[::1]:1885").unwrap();
        assert_eq!((b.host.as_str(), b.port, b.tls), ("::1", 1885, false));
        let b = Broker::parse("mqtts://broker.lan").unwrap();
        assert_eq!((b.port, b.tls), (8883, true));
        assert!(matches!(
            Broker::parse("mqtt://u:pw@x"),
            Err(MqttError::PasswordInUrl(_))
        ));
        for bad in [
            "http://x",
            "mqtt://",
            "mqtt://x:99999",
            "mqtt://x:0",
            "mqtt://x/y",
        ] {
            assert!(
                matches!(Broker::parse(bad), Err(MqttError::BadUrl(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn describe_announces_a_caption_sensor_and_a_person_sensor() {
        let d = discovery("percept/cam1", "cam1", App::Describe);
        let topics: Vec<&str> = d.iter().map(|m| m.topic.as_str()).collect();
        assert_eq!(
            topics,
            [
                "homeassistant/sensor/percept_cam1/caption/config",
                "homeassistant/binary_sensor/percept_cam1/person/config",
                "percept/cam1/status",
            ]
        );
        assert!(d.iter().all(|m| m.retain));
        let caption: Value = serde_json::from_slice(&d[0].payload).unwrap();
        assert_eq!(caption["state_topic"], "percept/cam1/caption");
        assert_eq!(
            caption["value_template"],
            "{{ value_json.caption | truncate(250) }}"
        );
        let person: Value = serde_json::from_slice(&d[1].payload).unwrap();
        assert_eq!(person["device_class"], "occupancy");
    }

    #[test]
    fn topic_parts_are_checked() {
        assert!(check_part("kitchen-cam_2").is_ok());
        for bad in ["", "a/b", "a+b", "#", "a b"] {
            assert!(check_part(bad).is_err(), "{bad}");
        }
        assert!(check_part(&host_name()).is_ok());
    }
}
