//! The policy file as written: serde structs with the span of every value.
//!
//! Values that have a syntax of their own (sizes, durations, the sync
//! trigger, one glob or a list) are checked while deserializing, so their
//! errors carry the exact span of the offending value.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use toml::Spanned;

use super::{Advice, SyncMethod, SyncTrigger, WriteHint, WriteStrategy};

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawPolicy {
    /// required: the format version, 1
    pub version: Option<Spanned<i64>>,
    /// `[defaults]`: what files no rule matches get, and what rules inherit
    pub defaults: Option<Spanned<RawSection>>,
    /// `[[rule]]`, in order
    #[serde(default)]
    pub rule: Vec<Spanned<RawSection>>,
}

/// `[defaults]` or one `[[rule]]`: every setting optional. `name` and
/// `match` belong to rules only (validation says so for `[defaults]`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawSection {
    /// the rule's name (default `rule-N`)
    pub name: Option<Spanned<String>>,
    /// one glob or a list (required for a rule)
    #[serde(rename = "match")]
    pub globs: Option<Spanned<Globs>>,
    /// default `passthrough`
    pub write: Option<Spanned<WriteStrategy>>,
    /// default `on-fsync`
    pub sync: Option<Spanned<SyncTrigger>>,
    /// default `data`
    pub method: Option<Spanned<SyncMethod>>,
    /// default false
    pub dir_sync: Option<Spanned<bool>>,
    /// default 16 MiB for `append`, none otherwise
    pub preallocate: Option<Spanned<Size>>,
    /// default none
    pub hint: Option<Spanned<WriteHint>>,
    /// default none
    pub advise: Option<Spanned<Advice>>,
}

/// One glob or a list of globs, each with its span.
#[derive(Debug)]
pub(super) struct Globs(pub Vec<Spanned<String>>);

/// A size in bytes, from an integer or a string such as "64MiB" or "4k".
#[derive(Debug, Clone, Copy)]
pub(super) struct Size(pub u64);

/// A duration such as "100ms" or "2s".
#[derive(Debug, Clone, Copy)]
pub(super) struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Globs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Globs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a glob (\"**/*.db\") or a list of globs")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Globs, E> {
                // The span of a lone glob is the span of the whole value,
                // which the caller has; an empty range marks "use that".
                Ok(Globs(vec![Spanned::new(0..0, s.to_string())]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Globs, A::Error> {
                let mut v = Vec::new();
                while let Some(g) = seq.next_element::<Spanned<String>>()? {
                    v.push(g);
                }
                Ok(Globs(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// Parses "64MiB", "4k", "512", "1GB" into bytes. Binary units (k, KiB,
/// M, MiB, ...) are powers of 1024; KB, MB, GB, TB powers of 1000.
pub(super) fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(format!(
            "bad size \"{s}\": expected a number of bytes with an optional unit, such as \"64MiB\" or \"4k\""
        ));
    }
    let unit = unit.trim();
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "bad size \"{s}\": unknown unit \"{unit}\" (use B, k/KiB, M/MiB, G/GiB, T/TiB, or KB/MB/GB/TB for powers of 1000)"
            ));
        }
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("bad size \"{s}\": too large"))
}

/// Parses "100ms", "2s", "1m" into a duration. Units: ns, us, ms, s, m, h.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim();
    if num.is_empty() {
        return Err(format!(
            "bad duration \"{s}\": expected a whole number and a unit, such as \"100ms\" or \"2s\""
        ));
    }
    let n: u64 = num
        .parse()
        .map_err(|_| format!("bad duration \"{s}\": too large"))?;
    let d = match unit {
        "ns" => Duration::from_nanos(n),
        "us" | "µs" => Duration::from_micros(n),
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" | "min" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        "" => {
            return Err(format!(
                "bad duration \"{s}\": a duration needs a unit (ns, us, ms, s, m, h), such as \"{n}ms\""
            ));
        }
        _ if unit.starts_with('.') => {
            return Err(format!(
                "bad duration \"{s}\": whole numbers only; use a smaller unit (\"1500ms\", not \"1.5s\")"
            ));
        }
        _ => {
            return Err(format!(
                "bad duration \"{s}\": unknown unit \"{unit}\" (use ns, us, ms, s, m or h)"
            ));
        }
    };
    Ok(d)
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size: bytes, or a string such as \"64MiB\" or \"4k\"")
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Size, E> {
                u64::try_from(n)
                    .map(Size)
                    .map_err(|_| E::custom(format!("bad size {n}: a size cannot be negative")))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Size, E> {
                Ok(Size(n))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Size, E> {
                parse_size(s).map(Size).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"100ms\" or \"2s\"")
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Dur, E> {
                Err(E::custom(format!(
                    "bad duration {n}: a duration is a string with a unit, such as \"{n}ms\""
                )))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Dur, E> {
                parse_duration(s).map(Dur).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

const SYNC_NAMES: &[&str] = &["never", "on-fsync", "on-close", "always", "interval"];

impl<'de> Deserialize<'de> for SyncTrigger {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SyncTrigger;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "\"never\", \"on-fsync\", \"on-close\", \"always\" or { interval = \"100ms\" }",
                )
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<SyncTrigger, E> {
                match s {
                    "never" => Ok(SyncTrigger::Never),
                    "on-fsync" => Ok(SyncTrigger::OnFsync),
                    "on-close" => Ok(SyncTrigger::OnClose),
                    "always" => Ok(SyncTrigger::Always),
                    "interval" => Err(E::custom(
                        "an interval needs its length: sync = { interval = \"100ms\" }",
                    )),
                    _ => Err(E::unknown_variant(s, SYNC_NAMES)),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SyncTrigger, A::Error> {
                let mut interval = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key != "interval" {
                        return Err(de::Error::unknown_field(&key, &["interval"]));
                    }
                    let Dur(d) = map.next_value()?;
                    interval = Some(d);
                }
                match interval {
                    None => Err(de::Error::missing_field("interval")),
                    Some(d) if d.is_zero() => Err(de::Error::custom(
                        "an interval of zero would sync continuously: use sync = \"always\", or give a length such as \"100ms\"",
                    )),
                    Some(d) => Ok(SyncTrigger::Interval(d)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1 GiB"), Ok(1 << 30));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("3t"), Ok(3 << 40));
        assert!(parse_size("").unwrap_err().contains("expected a number"));
        assert!(parse_size("MiB").unwrap_err().contains("expected a number"));
        assert!(
            parse_size("4 lb")
                .unwrap_err()
                .contains("unknown unit \"lb\"")
        );
        assert!(
            parse_size("1.5M")
                .unwrap_err()
                .contains("unknown unit \".5M\"")
        );
        assert!(
            parse_size("99999999999999999999k")
                .unwrap_err()
                .contains("too large")
        );
        assert!(parse_size("20000000T").unwrap_err().contains("too large"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("7ns"), Ok(Duration::from_nanos(7)));
        assert!(parse_duration("100").unwrap_err().contains("needs a unit"));
        assert!(
            parse_duration("1.5s")
                .unwrap_err()
                .contains("whole numbers")
        );
        assert!(
            parse_duration("3 days")
                .unwrap_err()
                .contains("unknown unit \"days\"")
        );
        assert!(parse_duration("ms").unwrap_err().contains("whole number"));
    }
}
