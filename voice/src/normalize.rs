//! What espeak-ng reads badly, spelled out before phonemisation. espeak reads numbers
//! ("42": forty-two), clock times ("9:30": nine thirty) and "am"/"pm" well, but a price
//! comes out as "dollar twelve point five zero": prices become "12 dollars 50" here.

use std::sync::OnceLock;

use regex::Regex;

fn price() -> &'static Regex {
    static PRICE: OnceLock<Regex> = OnceLock::new();
    PRICE.get_or_init(|| {
        Regex::new(r"([$€£])\s?(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d{2}))?\b").expect("valid regex")
    })
}

/// `text` with prices as words espeak reads as a person would.
pub fn normalize(text: &str) -> String {
    price()
        .replace_all(text, |c: &regex::Captures| {
            let (one, many, cent, cents) = match &c[1] {
                "€" => ("euro", "euros", "cent", "cents"),
                "£" => ("pound", "pounds", "penny", "pence"),
                _ => ("dollar", "dollars", "cent", "cents"),
            };
            let whole = c[2].replace(',', "");
            let mut out = format!("{whole} {}", if whole == "1" { one } else { many });
            if let Some(fraction) = c.get(3).map(|m| m.as_str()).filter(|f| *f != "00") {
                let n = fraction.trim_start_matches('0');
                out += &format!(" {n} {}", if n == "1" { cent } else { cents });
            }
            out
        })
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn prices_become_words() {
        assert_eq!(
            normalize("Tickets cost $12.50, children $5."),
            "Tickets cost 12 dollars 50 cents, children 5 dollars."
        );
        assert_eq!(normalize("£1 or €2.01"), "1 pound or 2 euros 1 cent");
        assert_eq!(normalize("$1,200.00 each"), "1200 dollars each");
        assert_eq!(normalize("Open 9:30 to 17:00."), "Open 9:30 to 17:00.");
    }
}
