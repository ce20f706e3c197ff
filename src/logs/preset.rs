//! Named settings for the loghub data sets (`--format hdfs`, `--format bgl`, ...): the line
//! format, the masking rules, Drain's depth and similarity threshold, as in Drain's loghub
//! benchmark (logpai/logparser `benchmark/Drain_benchmark.py`), whose published grouping
//! accuracies were measured with them.
//!
//! Why the benchmark's masks and not the generic ones: they are what the published numbers were
//! measured with, and they are narrow on purpose (BGL masks only `core.N`), so that a
//! data set's parameters and its event-defining words stay apart as its ground truth has them.
//! A format given as a string instead of a name gets the generic masks
//! ([`super::mask::generic_rules`]).

use super::drain::DrainSettings;
use super::format::LineFormat;
use super::mask::{generic_rules, MaskRule};
use crate::error::{Error, Result};

/// The settings a name stands for.
#[derive(Clone, Copy, Debug)]
pub struct Preset {
    /// The name given to `--format` (lower case).
    pub name: &'static str,
    /// The loghub format string.
    pub format: &'static str,
    /// Masking rules `(name, pattern)`, applied in order.
    pub masks: &'static [(&'static str, &'static str)],
    /// Drain's depth.
    pub depth: usize,
    /// Drain's similarity threshold.
    pub st: f64,
}

impl Preset {
    /// The masking rules.
    pub fn mask_rules(&self) -> Vec<MaskRule> {
        self.masks
            .iter()
            .map(|&(name, pattern)| MaskRule::new(name, pattern))
            .collect()
    }

    /// Drain's settings (`max_children` at Drain's default).
    pub fn drain_settings(&self) -> DrainSettings {
        DrainSettings {
            depth: self.depth,
            st: self.st,
            ..DrainSettings::default()
        }
    }
}

const IP: (&str, &str) = ("ip", r"(\d+\.){3}\d+");
const DOTTED_NAME: (&str, &str) = ("dotted_name", r"([\w-]+\.){2,}[\w-]+");

/// The loghub data sets, with Drain's benchmark settings.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "hdfs",
        format: "<Date> <Time> <Pid> <Level> <Component>: <Content>",
        masks: &[
            ("block_id", r"blk_-?\d+"),
            ("ip_port", r"(\d+\.){3}\d+(:\d+)?"),
        ],
        depth: 4,
        st: 0.5,
    },
    Preset {
        // The first field is the anomaly label (`-` or an alert category): a header field,
        // never part of what is mined.
        name: "bgl",
        format: "<Label> <Timestamp> <Date> <Node> <Time> <NodeRepeat> <Type> <Component> \
                 <Level> <Content>",
        masks: &[("core_id", r"core\.\d+")],
        depth: 4,
        st: 0.5,
    },
    Preset {
        name: "hadoop",
        format: r"<Date> <Time> <Level> \[<Process>\] <Component>: <Content>",
        masks: &[IP],
        depth: 4,
        st: 0.5,
    },
    Preset {
        name: "spark",
        format: "<Date> <Time> <Level> <Component>: <Content>",
        masks: &[IP, ("size_unit", r"\b[KGTM]?B\b"), DOTTED_NAME],
        depth: 4,
        st: 0.5,
    },
    Preset {
        name: "zookeeper",
        format: r"<Date> <Time> - <Level>  \[<Node>:<Component>@<Id>\] - <Content>",
        masks: &[("ip_port", r"(/|)(\d+\.){3}\d+(:\d+)?")],
        depth: 4,
        st: 0.5,
    },
    Preset {
        name: "hpc",
        format: "<LogId> <Node> <Component> <State> <Time> <Flag> <Content>",
        masks: &[("assigned_number", r"=\d+")],
        depth: 4,
        st: 0.5,
    },
    Preset {
        // Like BGL, the first field is the label.
        name: "thunderbird",
        format: r"<Label> <Timestamp> <Date> <User> <Month> <Day> <Time> <Location> <Component>(\[<PID>\])?: <Content>",
        masks: &[IP],
        depth: 4,
        st: 0.5,
    },
    Preset {
        name: "windows",
        format: "<Date> <Time>, <Level>                  <Component>    <Content>",
        masks: &[("hex", r"0x.*?\s")],
        depth: 5,
        st: 0.7,
    },
    Preset {
        name: "linux",
        format: r"<Month> <Date> <Time> <Level> <Component>(\[<PID>\])?: <Content>",
        masks: &[IP, ("clock", r"\d{2}:\d{2}:\d{2}")],
        depth: 6,
        st: 0.39,
    },
    Preset {
        name: "android",
        format: "<Date> <Time>  <Pid>  <Tid> <Level> <Component>: <Content>",
        masks: &[
            ("path", r"(/[\w-]+)+"),
            DOTTED_NAME,
            (
                "number_hex",
                r"\b(\-?\+?\d+)\b|\b0[Xx][a-fA-F\d]+\b|\b[a-fA-F\d]{4,}\b",
            ),
        ],
        depth: 6,
        st: 0.2,
    },
    Preset {
        name: "healthapp",
        format: r"<Time>\|<Component>\|<Pid>\|<Content>",
        masks: &[],
        depth: 4,
        st: 0.2,
    },
    Preset {
        name: "apache",
        format: r"\[<Time>\] \[<Level>\] <Content>",
        masks: &[IP],
        depth: 4,
        st: 0.5,
    },
    Preset {
        name: "proxifier",
        format: r"\[<Time>\] <Program> - <Content>",
        masks: &[
            ("duration", r"<\d+\ssec"),
            ("host_port", r"([\w-]+\.)+[\w-]+(:\d+)?"),
            ("clock", r"\d{2}:\d{2}(:\d{2})*"),
            ("size_unit", r"[KGTM]B"),
        ],
        depth: 3,
        st: 0.6,
    },
    Preset {
        name: "openssh",
        format: r"<Date> <Day> <Time> <Component> sshd\[<Pid>\]: <Content>",
        masks: &[IP, DOTTED_NAME],
        depth: 5,
        st: 0.6,
    },
    Preset {
        name: "openstack",
        format: r"<Logrecord> <Date> <Time> <Pid> <Level> <Component> \[<ADDR>\] <Content>",
        masks: &[
            ("ip_list", r"((\d+\.){3}\d+,?)+"),
            ("path", r"/.+?\s"),
            ("number", r"\d+"),
        ],
        depth: 5,
        st: 0.5,
    },
    Preset {
        name: "mac",
        format: r"<Month>  <Date> <Time> <User> <Component>\[<PID>\]( \(<Address>\))?: <Content>",
        masks: &[DOTTED_NAME],
        depth: 6,
        st: 0.7,
    },
];

/// The preset called `name` (case-insensitive).
pub fn find(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name.eq_ignore_ascii_case(name))
}

/// The preset names, comma-separated (for messages).
pub fn names() -> String {
    let names: Vec<&str> = PRESETS.iter().map(|p| p.name).collect();
    names.join(", ")
}

/// Settings chosen by a `--format` value.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The preset, if the value was a name.
    pub preset: Option<&'static Preset>,
    /// The line format.
    pub format: LineFormat,
    /// The masking rules.
    pub masks: Vec<MaskRule>,
    /// Drain's settings.
    pub settings: DrainSettings,
}

/// Resolves a `--format` value: absent, the whole line is the content; a value with a `<` is a
/// format string (generic masks, Drain's default settings); anything else names a preset.
pub fn resolve(format: Option<&str>) -> Result<Resolved> {
    let custom = |format: LineFormat| Resolved {
        preset: None,
        format,
        masks: generic_rules(),
        settings: DrainSettings::default(),
    };
    match format {
        None => Ok(custom(LineFormat::whole_line())),
        Some(f) if f.contains('<') => Ok(custom(LineFormat::parse(f)?)),
        Some(name) => {
            let preset = find(name).ok_or_else(|| {
                Error::field(
                    "--format",
                    format!(
                        "`{name}` is neither a preset ({}) nor a format string such as \
                         '<Date> <Time> <Level> <Content>'",
                        names()
                    ),
                )
            })?;
            Ok(Resolved {
                preset: Some(preset),
                format: LineFormat::parse(preset.format)?,
                masks: preset.mask_rules(),
                settings: preset.drain_settings(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::format::LineFormat;
    use crate::logs::mask::Masking;

    #[test]
    fn every_preset_compiles() {
        for p in PRESETS {
            LineFormat::parse(p.format).unwrap_or_else(|e| panic!("{}: {e}", p.name));
            Masking::new(p.mask_rules()).unwrap_or_else(|e| panic!("{}: {e}", p.name));
            p.drain_settings().validate().unwrap();
        }
        assert_eq!(find("BGL").unwrap().name, "bgl");
        assert!(find("nope").is_none());
    }
}
