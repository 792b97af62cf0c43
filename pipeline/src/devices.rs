//! What live sources share: the error for a device that is missing or went away, and
//! what a graph does about it (fail, or warn and run without it when it is optional).

/// A live device that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    #[error("no {what} found; available: {}", list(.available))]
    NotFound {
        what: &'static str,
        available: Vec<String>,
    },
    #[error("cannot open {what} '{name}': {reason}")]
    Open {
        what: &'static str,
        name: String,
        reason: String,
    },
    #[error("{what} '{name}' stopped: {reason}")]
    Lost {
        what: &'static str,
        name: String,
        reason: String,
    },
}

/// A cpal device's name as listed to the user (microphones and speakers alike).
#[cfg(feature = "mic")]
pub(crate) fn device_name(d: &cpal::Device) -> String {
    use cpal::traits::DeviceTrait;
    d.description()
        .map(|d| d.name().to_string())
        .unwrap_or_else(|_| "unnamed device".into())
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// Whether a graph can run without a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Presence {
    #[default]
    Required,
    Optional,
}

/// Opens a device, or, when it is optional and missing, warns and gives `None` so the
/// rest of the graph runs without it.
pub fn open_or_skip<T>(
    presence: Presence,
    open: impl FnOnce() -> Result<T, DeviceError>,
) -> Result<Option<T>, DeviceError> {
    match (open(), presence) {
        (Ok(device), _) => Ok(Some(device)),
        (Err(e), Presence::Optional) => {
            eprintln!("warning: {e}; the graph runs without it");
            Ok(None)
        }
        (Err(e), Presence::Required) => Err(e),
    }
}
