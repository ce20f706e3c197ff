//! A honeypot profile (TOML): who the machine pretends to be (hostname, user, home, OS banner),
//! the seed filesystem, the persona prompt given to the model and its few-shot examples.
//! [`Profile::default_profile`] is a small Ubuntu web server; `--profile FILE` replaces it.

use super::vfs::{normalize, Node, Vfs};
use crate::error::{Error, Result};
use serde::Deserialize;
use std::path::Path;

/// The built-in profile's TOML.
pub const DEFAULT_PROFILE: &str = include_str!("default_profile.toml");

/// One seed file or directory.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedEntry {
    /// Absolute path.
    pub path: String,
    /// File contents; absent for a directory.
    pub content: Option<String>,
    /// Permission bits in octal (`"644"`); default 644 for files, 755 for directories.
    pub mode: Option<String>,
    /// Owner (default `root`).
    pub owner: Option<String>,
    /// Time shown by `ls -l` (default `Nov 28 09:14`).
    pub mtime: Option<String>,
}

/// One few-shot example: a command and the terminal's answer.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Example {
    /// The command typed.
    pub command: String,
    /// What the terminal printed.
    pub output: String,
}

/// A profile.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Host name (`hostname`, the prompt).
    pub hostname: String,
    /// The logged-in user.
    pub user: String,
    /// Its numeric id (`id`).
    #[serde(default = "default_uid")]
    pub uid: u32,
    /// Its home directory.
    pub home: String,
    /// Printed when a session starts (motd).
    #[serde(default)]
    pub banner: String,
    /// `uname -a`.
    pub uname: String,
    /// The prompt; `{user}`, `{hostname}` and `{cwd}` (with `~` for the home) are replaced.
    #[serde(default = "default_prompt")]
    pub prompt: String,
    /// The system prompt that makes the model answer as this terminal.
    pub persona: String,
    /// What a refused model answer becomes: `{cmd}` is the command name (default: bash's
    /// `command not found`).
    #[serde(default = "default_fallback")]
    pub fallback: String,
    /// Few-shot examples given to the model before the session.
    #[serde(default)]
    pub examples: Vec<Example>,
    /// The seed filesystem.
    #[serde(default)]
    pub files: Vec<SeedEntry>,
}

fn default_uid() -> u32 {
    1000
}

fn default_prompt() -> String {
    "{user}@{hostname}:{cwd}$ ".into()
}

fn default_fallback() -> String {
    "bash: {cmd}: command not found".into()
}

impl Profile {
    /// The built-in profile.
    pub fn default_profile() -> Profile {
        // The built-in profile is a constant that parses (tested).
        Profile::parse(DEFAULT_PROFILE, Path::new("<built-in profile>"))
            .expect("the built-in profile parses")
    }

    /// Reads a profile file.
    pub fn load(path: &Path) -> Result<Profile> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Profile::parse(&text, path)
    }

    /// Parses and checks a profile; `origin` is named in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Profile> {
        let p: Profile =
            toml::from_str(text).map_err(|e| Error::file(origin, format!("profile: {e}")))?;
        let bad = |field: &str, why: String| {
            Err(Error::file(
                origin,
                format!("profile field `{field}`: {why}"),
            ))
        };
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        if !name_ok(&p.hostname) {
            return bad(
                "hostname",
                format!("{:?} must be letters, digits, `-`, `_` or `.`", p.hostname),
            );
        }
        if !name_ok(&p.user) {
            return bad(
                "user",
                format!("{:?} must be letters, digits, `-`, `_` or `.`", p.user),
            );
        }
        if !p.home.starts_with('/') {
            return bad("home", format!("{:?} must be an absolute path", p.home));
        }
        if p.persona.trim().is_empty() {
            return bad("persona", "is empty".into());
        }
        for f in &p.files {
            if !f.path.starts_with('/') {
                return bad(
                    "files.path",
                    format!("{:?} must be an absolute path", f.path),
                );
            }
            if let Some(m) = &f.mode {
                if u32::from_str_radix(m, 8).map_or(true, |m| m > 0o7777) {
                    return bad(
                        "files.mode",
                        format!("{m:?} for {} must be octal like \"644\"", f.path),
                    );
                }
            }
        }
        Ok(p)
    }

    /// The filesystem a new session starts with: the seed entries, the home directory (owned by
    /// the user) and a world-writable `/tmp`.
    pub fn filesystem(&self) -> Vfs {
        let mut fs = Vfs::new(&self.user);
        let dir = |owner: &str, mode: u32| Node {
            content: None,
            mode,
            owner: owner.to_string(),
            mtime: "Nov 28 09:14".into(),
        };
        fs.seed("/tmp", dir("root", 0o777));
        fs.seed(&self.home, dir(&self.user, 0o750));
        for f in &self.files {
            let is_dir = f.content.is_none();
            let mode = f
                .mode
                .as_deref()
                .and_then(|m| u32::from_str_radix(m, 8).ok())
                .unwrap_or(if is_dir { 0o755 } else { 0o644 });
            fs.seed(
                &normalize("/", &self.home, &f.path),
                Node {
                    content: f.content.clone(),
                    mode,
                    owner: f.owner.clone().unwrap_or_else(|| "root".into()),
                    mtime: f.mtime.clone().unwrap_or_else(|| "Nov 28 09:14".into()),
                },
            );
        }
        fs
    }

    /// The prompt shown in directory `cwd`.
    pub fn prompt_for(&self, cwd: &str) -> String {
        let shown = if cwd == self.home {
            "~".to_string()
        } else if let Some(rest) = cwd.strip_prefix(&format!("{}/", self.home)) {
            format!("~/{rest}")
        } else {
            cwd.to_string()
        };
        self.prompt
            .replace("{user}", &self.user)
            .replace("{hostname}", &self.hostname)
            .replace("{cwd}", &shown)
    }

    /// The answer that replaces a refused model answer to `cmd`.
    pub fn fallback_for(&self, cmd: &str) -> String {
        self.fallback.replace("{cmd}", cmd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_profile_parses_and_bad_fields_are_named() {
        let p = Profile::default_profile();
        assert_eq!(
            p.prompt_for(&p.home),
            format!("{}@{}:~$ ", p.user, p.hostname)
        );
        assert!(p.filesystem().read("/etc/passwd").is_ok());
        let e = Profile::parse(
            &DEFAULT_PROFILE.replace(&format!("home = \"{}\"", p.home), "home = \"rel\""),
            Path::new("p.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("p.toml") && e.contains("home"), "{e}");
        let e = Profile::parse("hostname = 3", Path::new("p.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("p.toml"), "{e}");
    }
}
