//! The emulated shell: splits a command line into words (quotes, `$VAR`, `~`) and into simple
//! commands joined by `;`, `&&` and `||` with `>`/`>>` redirections, and runs the commands it
//! knows (`cd`, `pwd`, `ls`, `cat`, `echo`, `touch`, `mkdir`, `rm`, `whoami`, `id`, `uname`,
//! `hostname`, `history`, `env`, `export`, `which`, `sudo`, `su`, editors, `exit`)
//! deterministically over the session's [`Vfs`]. Other real command names (a list of the usual
//! Linux tools) are for the model; anything else is `command not found`, as bash says it.
//! Pipelines, command substitution and input redirection go to the model whole.

use super::profile::Profile;
use super::vfs::{base_name, normalize, FsError, Node, Vfs};
use std::collections::{BTreeMap, VecDeque};

/// Commands `history` keeps (bash's default `HISTSIZE`).
pub const HISTSIZE: usize = 500;

/// Commands the model answers (real tools the emulator does not run).
pub const MODEL_COMMANDS: &[&str] = &[
    "ps",
    "top",
    "htop",
    "free",
    "df",
    "du",
    "uptime",
    "w",
    "who",
    "last",
    "lastlog",
    "netstat",
    "ss",
    "ip",
    "ifconfig",
    "route",
    "arp",
    "ping",
    "traceroute",
    "dig",
    "nslookup",
    "host",
    "curl",
    "wget",
    "nc",
    "ncat",
    "telnet",
    "ssh",
    "scp",
    "sftp",
    "rsync",
    "ftp",
    "apt",
    "apt-get",
    "dpkg",
    "snap",
    "pip",
    "pip3",
    "python",
    "python3",
    "perl",
    "ruby",
    "node",
    "npm",
    "php",
    "gcc",
    "make",
    "git",
    "docker",
    "kubectl",
    "systemctl",
    "service",
    "journalctl",
    "crontab",
    "mount",
    "umount",
    "lsblk",
    "fdisk",
    "blkid",
    "lscpu",
    "lsusb",
    "lspci",
    "lsmod",
    "dmesg",
    "date",
    "cal",
    "find",
    "locate",
    "grep",
    "egrep",
    "awk",
    "sed",
    "sort",
    "uniq",
    "wc",
    "head",
    "tail",
    "less",
    "more",
    "cut",
    "tr",
    "tee",
    "xargs",
    "file",
    "stat",
    "chmod",
    "chown",
    "chgrp",
    "cp",
    "mv",
    "ln",
    "tar",
    "gzip",
    "gunzip",
    "zip",
    "unzip",
    "base64",
    "md5sum",
    "sha256sum",
    "openssl",
    "kill",
    "killall",
    "pkill",
    "pgrep",
    "nohup",
    "screen",
    "tmux",
    "nginx",
    "mysql",
    "psql",
    "redis-cli",
    "passwd",
    "useradd",
    "adduser",
    "groups",
    "getent",
    "lsof",
    "strace",
    "env",
    "printenv",
    "uname",
    "arch",
    "nproc",
    "sleep",
    "yes",
    "seq",
    "diff",
    "man",
    "info",
    "alias",
    "type",
    "whereis",
    "bash",
    "sh",
    "dash",
    "zsh",
    "chattr",
    "lsattr",
    "iptables",
    "ufw",
    "sysctl",
    "hostnamectl",
    "timedatectl",
    "locale",
    "tree",
    "readlink",
    "realpath",
    "basename",
    "dirname",
    "xxd",
    "od",
    "strings",
    "hexdump",
    "vmstat",
    "iostat",
    "mpstat",
    "sar",
    "watch",
    "at",
    "crond",
    "cron",
];

/// Editors: in a line-oriented session they fail as they do without a terminal.
const EDITORS: &[&str] = &["vi", "vim", "nano", "emacs", "pico", "ed", "joe", "mcedit"];

/// What answered a simple command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// The emulator.
    Emulator,
    /// The model must answer this command.
    Model,
}

/// One simple command after parsing.
#[derive(Clone, Debug, PartialEq)]
pub struct Simple {
    /// Words (expanded).
    pub words: Vec<String>,
    /// `>` or `>>` target and whether it appends.
    pub redirect: Option<(String, bool)>,
    /// How it is joined to the previous command: `;`, `&&` or `||` (`;` for the first).
    pub join: &'static str,
    /// The command as typed (for the model).
    pub source: String,
}

/// A parsed line.
#[derive(Clone, Debug, PartialEq)]
pub enum Parsed {
    /// Simple commands to run in order.
    Commands(Vec<Simple>),
    /// Shell syntax the emulator does not run (pipes, substitution, `<`, here-docs): the whole
    /// line goes to the model if its first word is a real command.
    Complex {
        /// The first word.
        first: String,
    },
    /// A syntax error bash would report.
    Error(String),
}

/// The session state the emulator reads and changes.
pub struct ShellState {
    /// The filesystem.
    pub fs: Vfs,
    /// Current directory.
    pub cwd: String,
    /// Previous directory (`cd -`).
    pub oldpwd: String,
    /// Environment.
    pub env: BTreeMap<String, String>,
    /// The last [`HISTSIZE`] commands typed (`history`).
    pub history: VecDeque<String>,
    /// Commands typed before the first one kept in `history`.
    pub history_offset: usize,
    /// `ls -l` time of new files.
    pub now: String,
}

impl ShellState {
    /// Records a typed command in `history`, keeping the last [`HISTSIZE`].
    pub fn remember(&mut self, line: &str) {
        self.history.push_back(line.to_string());
        if self.history.len() > HISTSIZE {
            self.history.pop_front();
            self.history_offset += 1;
        }
    }

    /// A fresh session of `profile`.
    pub fn new(profile: &Profile) -> ShellState {
        let mut env = BTreeMap::new();
        for (k, v) in [
            ("HOME", profile.home.as_str()),
            ("USER", profile.user.as_str()),
            ("LOGNAME", profile.user.as_str()),
            ("SHELL", "/bin/bash"),
            ("HOSTNAME", profile.hostname.as_str()),
            ("LANG", "C.UTF-8"),
            (
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            ),
            ("TERM", "dumb"),
        ] {
            env.insert(k.to_string(), v.to_string());
        }
        env.insert("PWD".into(), profile.home.clone());
        ShellState {
            fs: profile.filesystem(),
            cwd: profile.home.clone(),
            oldpwd: profile.home.clone(),
            env,
            history: VecDeque::new(),
            history_offset: 0,
            now: "Nov 28 09:31".into(),
        }
    }
}

/// Splits `line` into simple commands, expanding quotes, `$VAR`, `${VAR}` and a leading `~`.
pub fn parse(line: &str, env: &BTreeMap<String, String>) -> Parsed {
    let chars: Vec<char> = line.chars().collect();
    let first_word = line.split_whitespace().next().unwrap_or("").to_string();
    let complex = |_: &str| Parsed::Complex {
        first: first_word.clone(),
    };
    let mut cmds: Vec<Simple> = Vec::new();
    let (mut words, mut word, mut in_word) = (Vec::<String>::new(), String::new(), false);
    let mut redirect: Option<(String, bool)> = None;
    let mut pending_redirect: Option<bool> = None;
    let mut join: &'static str = ";";
    let mut seg_start = 0;
    let home = env.get("HOME").cloned().unwrap_or_default();
    let var = |name: &str| env.get(name).cloned().unwrap_or_default();
    let mut i = 0;
    let finish_word = |words: &mut Vec<String>,
                       word: &mut String,
                       in_word: &mut bool,
                       pending: &mut Option<bool>,
                       redirect: &mut Option<(String, bool)>| {
        if *in_word {
            let w = std::mem::take(word);
            match pending.take() {
                Some(append) => *redirect = Some((w, append)),
                None => words.push(w),
            }
            *in_word = false;
        }
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' => finish_word(
                &mut words,
                &mut word,
                &mut in_word,
                &mut pending_redirect,
                &mut redirect,
            ),
            '\'' => {
                in_word = true;
                i += 1;
                while i < chars.len() && chars[i] != '\'' {
                    word.push(chars[i]);
                    i += 1;
                }
                if i >= chars.len() {
                    return Parsed::Error(
                        "bash: unexpected EOF while looking for matching `''".into(),
                    );
                }
            }
            '"' => {
                in_word = true;
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' && i + 1 < chars.len() && "\"\\$`".contains(chars[i + 1]) {
                        word.push(chars[i + 1]);
                        i += 2;
                        continue;
                    }
                    if chars[i] == '`' || (chars[i] == '$' && chars.get(i + 1) == Some(&'(')) {
                        return complex(line);
                    }
                    if chars[i] == '$' {
                        let (name, next) = var_name(&chars, i + 1);
                        if name.is_empty() {
                            word.push('$');
                        } else {
                            word.push_str(&var(&name));
                        }
                        i = next;
                        continue;
                    }
                    word.push(chars[i]);
                    i += 1;
                }
                if i >= chars.len() {
                    return Parsed::Error(
                        "bash: unexpected EOF while looking for matching `\"'".into(),
                    );
                }
            }
            '\\' => {
                in_word = true;
                if let Some(&n) = chars.get(i + 1) {
                    word.push(n);
                    i += 1;
                }
            }
            '$' if chars.get(i + 1) == Some(&'(') => return complex(line),
            '$' => {
                in_word = true;
                let (name, next) = var_name(&chars, i + 1);
                if name.is_empty() {
                    word.push('$');
                    i += 1;
                } else {
                    word.push_str(&var(&name));
                    i = next;
                }
                continue;
            }
            '`' | '<' | '(' | ')' => return complex(line),
            '|' if chars.get(i + 1) != Some(&'|') => return complex(line),
            '~' if !in_word && matches!(chars.get(i + 1), None | Some('/') | Some(' ')) => {
                in_word = true;
                word.push_str(&home);
            }
            '#' if !in_word => break,
            '>' => {
                finish_word(
                    &mut words,
                    &mut word,
                    &mut in_word,
                    &mut pending_redirect,
                    &mut redirect,
                );
                // `2>` and `2>&1`: drop the word `2` (errors are shown anyway).
                if words.last().map(String::as_str) == Some("2") && i > 0 && chars[i - 1] == '2' {
                    words.pop();
                    if chars.get(i + 1) == Some(&'&') {
                        i += 3;
                        continue;
                    }
                    // 2> FILE: discard the target word.
                    let append = chars.get(i + 1) == Some(&'>');
                    i += if append { 2 } else { 1 };
                    while i < chars.len() && chars[i] == ' ' {
                        i += 1;
                    }
                    while i < chars.len() && !" ;&|".contains(chars[i]) {
                        i += 1;
                    }
                    continue;
                }
                let append = chars.get(i + 1) == Some(&'>');
                if append {
                    i += 1;
                }
                pending_redirect = Some(append);
            }
            ';' | '&' | '|' => {
                finish_word(
                    &mut words,
                    &mut word,
                    &mut in_word,
                    &mut pending_redirect,
                    &mut redirect,
                );
                let (op, len): (&'static str, usize) = match (c, chars.get(i + 1)) {
                    ('&', Some('&')) => ("&&", 2),
                    ('|', Some('|')) => ("||", 2),
                    (';', _) => (";", 1),
                    // A trailing `&` (background) runs the command as if in the foreground.
                    _ => (";", 1),
                };
                if pending_redirect.is_some() {
                    return Parsed::Error(format!(
                        "bash: syntax error near unexpected token `{op}'"
                    ));
                }
                if words.is_empty() && op != ";" {
                    return Parsed::Error(format!(
                        "bash: syntax error near unexpected token `{op}'"
                    ));
                }
                if !words.is_empty() {
                    let source: String = chars[seg_start..i].iter().collect();
                    cmds.push(Simple {
                        words: std::mem::take(&mut words),
                        redirect: redirect.take(),
                        join,
                        source: source.trim().to_string(),
                    });
                }
                join = op;
                i += len;
                seg_start = i;
                continue;
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
        i += 1;
    }
    finish_word(
        &mut words,
        &mut word,
        &mut in_word,
        &mut pending_redirect,
        &mut redirect,
    );
    if pending_redirect.is_some() {
        return Parsed::Error("bash: syntax error near unexpected token `newline'".into());
    }
    if !words.is_empty() {
        let end = chars.len();
        let source: String = chars[seg_start..end].iter().collect();
        let source = source.split(" #").next().unwrap_or("").trim().to_string();
        cmds.push(Simple {
            words,
            redirect,
            join,
            source,
        });
    } else if join != ";" {
        return Parsed::Error("bash: syntax error: unexpected end of file".into());
    }
    Parsed::Commands(cmds)
}

fn var_name(chars: &[char], mut i: usize) -> (String, usize) {
    let mut name = String::new();
    if chars.get(i) == Some(&'{') {
        i += 1;
        while i < chars.len() && chars[i] != '}' {
            name.push(chars[i]);
            i += 1;
        }
        return (name, i + 1);
    }
    if chars.get(i) == Some(&'?') {
        return ("?".into(), i + 1);
    }
    while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
        name.push(chars[i]);
        i += 1;
    }
    (name, i)
}

/// The outcome of one simple command.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// Text printed (without a trailing newline).
    pub output: String,
    /// Exit status.
    pub status: i32,
    /// Who answered (the model's commands come back as [`Path::Model`] with no output yet).
    pub path: Path,
    /// The session ends (`exit`).
    pub exit: bool,
}

fn done(output: impl Into<String>, status: i32) -> Outcome {
    Outcome {
        output: output.into(),
        status,
        path: Path::Emulator,
        exit: false,
    }
}

/// Whether `name` is a command the model answers.
pub fn is_model_command(name: &str) -> bool {
    let name = base_name(name);
    MODEL_COMMANDS.contains(&name)
}

fn mode_string(n: &Node) -> String {
    let mut s = String::with_capacity(10);
    s.push(if n.is_dir() { 'd' } else { '-' });
    for shift in [6, 3, 0] {
        let bits = (n.mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

fn size_of(n: &Node) -> usize {
    n.content.as_ref().map_or(4096, String::len)
}

fn long_line(name: &str, n: &Node) -> String {
    format!(
        "{} {} {} {} {:>5} {} {}",
        mode_string(n),
        if n.is_dir() { 2 } else { 1 },
        n.owner,
        n.owner,
        size_of(n),
        n.mtime,
        name
    )
}

/// Runs one simple command of the emulator; commands for the model come back with
/// `path: Model` and are run by the session.
pub fn run(state: &mut ShellState, profile: &Profile, cmd: &Simple) -> Outcome {
    let name = cmd.words[0].as_str();
    let args: Vec<&str> = cmd.words[1..].iter().map(String::as_str).collect();
    let flags: String = args
        .iter()
        .filter(|a| a.starts_with('-') && a.len() > 1)
        .flat_map(|a| a.chars().skip(1))
        .collect();
    let operands: Vec<&str> = args
        .iter()
        .copied()
        .filter(|a| !a.starts_with('-') || a.len() == 1)
        .collect();
    let cwd = state.cwd.clone();
    let abs = |p: &str| normalize(&cwd, &profile.home, p);
    let out = match name {
        "cd" => {
            let target = match operands.first() {
                None => profile.home.clone(),
                Some(&"-") => state.oldpwd.clone(),
                Some(p) => abs(p),
            };
            match state.fs.get(&target) {
                None => done(format!("bash: cd: {}: No such file or directory", operands[0]), 1),
                Some(n) if !n.is_dir() => done(format!("bash: cd: {}: Not a directory", operands[0]), 1),
                Some(n) if n.owner != profile.user && n.mode & 0o001 == 0 => {
                    done(format!("bash: cd: {}: Permission denied", operands[0]), 1)
                }
                Some(_) => {
                    state.oldpwd = std::mem::replace(&mut state.cwd, target.clone());
                    state.env.insert("PWD".into(), target.clone());
                    done(if operands.first() == Some(&"-") { target } else { String::new() }, 0)
                }
            }
        }
        "pwd" => done(state.cwd.clone(), 0),
        "ls" | "ll" | "dir" => ls(state, profile, name, &flags, &operands),
        "cat" => {
            let mut out = Vec::new();
            let mut status = 0;
            for p in &operands {
                match state.fs.read(&abs(p)) {
                    Ok(text) => out.push(text.strip_suffix('\n').unwrap_or(text).to_string()),
                    Err(e) => {
                        status = 1;
                        out.push(format!("cat: {p}: {}", e.message()));
                    }
                }
            }
            done(out.join("\n"), status)
        }
        "echo" => {
            let text = operands.join(" ");
            let text = if flags.contains('e') { text.replace("\\n", "\n").replace("\\t", "\t") } else { text };
            done(text, 0)
        }
        "touch" => each(state, &operands, "touch", |st, p| {
            let now = st.now.clone();
            st.fs.touch(p, &now)
        }, &abs, "cannot touch"),
        "mkdir" => {
            let parents = flags.contains('p');
            each(state, &operands, "mkdir", |st, p| {
                let now = st.now.clone();
                st.fs.mkdir(p, parents, &now)
            }, &abs, "cannot create directory")
        }
        "rm" => {
            let (recursive, force) = (flags.contains('r') || flags.contains('R'), flags.contains('f'));
            if operands.is_empty() && !force {
                done("rm: missing operand\nTry 'rm --help' for more information.", 1)
            } else {
                let mut out = Vec::new();
                let mut status = 0;
                for p in &operands {
                    match state.fs.remove(&abs(p), recursive) {
                        Ok(()) => {}
                        Err(FsError::NotFound) if force => {}
                        Err(FsError::IsDir) => {
                            status = 1;
                            out.push(format!("rm: cannot remove '{p}': Is a directory"));
                        }
                        Err(e) => {
                            status = 1;
                            out.push(format!("rm: cannot remove '{p}': {}", e.message()));
                        }
                    }
                }
                done(out.join("\n"), status)
            }
        }
        "whoami" => done(profile.user.clone(), 0),
        "id" => done(
            format!("uid={0}({1}) gid={0}({1}) groups={0}({1})", profile.uid, profile.user),
            0,
        ),
        "hostname" => done(profile.hostname.clone(), 0),
        "uname" => {
            let parts: Vec<&str> = profile.uname.split_whitespace().collect();
            let pick = |i: usize| parts.get(i).copied().unwrap_or("").to_string();
            let text = if flags.contains('a') {
                profile.uname.clone()
            } else {
                let mut v = Vec::new();
                if flags.is_empty() || flags.contains('s') {
                    v.push(pick(0));
                }
                if flags.contains('n') {
                    v.push(pick(1));
                }
                if flags.contains('r') {
                    v.push(pick(2));
                }
                if flags.contains('m') {
                    v.push("x86_64".into());
                }
                v.join(" ")
            };
            done(text, 0)
        }
        "history" => {
            let lines: Vec<String> = state
                .history
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{:>5}  {c}", state.history_offset + i + 1))
                .collect();
            done(lines.join("\n"), 0)
        }
        "env" | "printenv" if operands.is_empty() => {
            let lines: Vec<String> = state.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
            done(lines.join("\n"), 0)
        }
        "export" => {
            for a in &operands {
                if let Some((k, v)) = a.split_once('=') {
                    if !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                        state.env.insert(k.to_string(), v.to_string());
                    }
                }
            }
            done("", 0)
        }
        "which" => {
            let found: Vec<String> = operands
                .iter()
                .filter(|c| is_model_command(c) || is_emulated(c))
                .map(|c| format!("/usr/bin/{c}"))
                .collect();
            let status = if found.len() == operands.len() { 0 } else { 1 };
            done(found.join("\n"), status)
        }
        "sudo" => done(
            format!(
                "[sudo] password for {0}: \n{0} is not in the sudoers file.  This incident will be reported.",
                profile.user
            ),
            1,
        ),
        "su" => done("Password: \nsu: Authentication failure", 1),
        "clear" | "true" | ":" => done("", 0),
        "false" => done("", 1),
        "exit" | "logout" => Outcome {
            output: if name == "logout" { String::new() } else { "logout".into() },
            status: 0,
            path: Path::Emulator,
            exit: true,
        },
        e if EDITORS.contains(&e) => done("Error opening terminal: unknown.", 1),
        m if is_model_command(m) => Outcome {
            output: String::new(),
            status: 0,
            path: Path::Model,
            exit: false,
        },
        other => done(format!("bash: {}: command not found", other), 127),
    };
    out
}

/// Whether the emulator runs `name` itself.
pub fn is_emulated(name: &str) -> bool {
    [
        "cd", "pwd", "ls", "cat", "echo", "touch", "mkdir", "rm", "whoami", "id", "hostname",
        "uname", "history", "sudo", "su", "clear", "true", "false", "exit", "logout",
    ]
    .contains(&name)
        || EDITORS.contains(&name)
}

fn each(
    state: &mut ShellState,
    operands: &[&str],
    cmd: &str,
    mut f: impl FnMut(&mut ShellState, &str) -> Result<(), FsError>,
    abs: &dyn Fn(&str) -> String,
    verb: &str,
) -> Outcome {
    if operands.is_empty() {
        return done(
            format!("{cmd}: missing operand\nTry '{cmd} --help' for more information."),
            1,
        );
    }
    let mut out = Vec::new();
    let mut status = 0;
    for p in operands {
        let path = abs(p);
        if let Err(e) = f(state, &path) {
            status = 1;
            out.push(format!("{cmd}: {verb} '{p}': {}", e.message()));
        }
    }
    done(out.join("\n"), status)
}

fn ls(
    state: &ShellState,
    profile: &Profile,
    name: &str,
    flags: &str,
    operands: &[&str],
) -> Outcome {
    let long = flags.contains('l') || name == "ll";
    let all = flags.contains('a') || name == "ll";
    let targets: Vec<String> = if operands.is_empty() {
        vec![".".into()]
    } else {
        operands.iter().map(|s| s.to_string()).collect()
    };
    let (mut out, mut errors) = (Vec::new(), Vec::new());
    let mut status = 0;
    let many = targets.len() > 1;
    for t in &targets {
        let path = normalize(&state.cwd, &profile.home, t);
        match state.fs.get(&path) {
            None => {
                status = 2;
                errors.push(format!(
                    "ls: cannot access '{t}': No such file or directory"
                ));
            }
            Some(n) if !n.is_dir() => {
                out.push(if long { long_line(t, n) } else { t.clone() });
            }
            Some(n) => match state.fs.list(&path) {
                Err(e) => {
                    status = 2;
                    errors.push(format!("ls: cannot open directory '{t}': {}", e.message()));
                }
                Ok(children) => {
                    let mut entries: Vec<(String, Node)> = Vec::new();
                    if all {
                        entries.push((".".into(), n.clone()));
                        let up = state
                            .fs
                            .get(super::vfs::parent(&path))
                            .cloned()
                            .unwrap_or_else(|| n.clone());
                        entries.push(("..".into(), up));
                    }
                    entries.extend(
                        children
                            .into_iter()
                            .filter(|(k, _)| all || !k.starts_with('.'))
                            .map(|(k, v)| (k, v.clone())),
                    );
                    if many {
                        out.push(format!("{t}:"));
                    }
                    if long {
                        let blocks: usize = entries
                            .iter()
                            .map(|(_, v)| size_of(v).div_ceil(4096) * 4)
                            .sum();
                        out.push(format!("total {blocks}"));
                        out.extend(entries.iter().map(|(k, v)| long_line(k, v)));
                    } else if !entries.is_empty() {
                        out.push(
                            entries
                                .iter()
                                .map(|(k, _)| k.as_str())
                                .collect::<Vec<_>>()
                                .join("  "),
                        );
                    }
                }
            },
        }
    }
    // Errors come first, as ls prints them on stderr before the listings.
    errors.extend(out);
    done(errors.join("\n"), status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> BTreeMap<String, String> {
        [("HOME", "/home/u"), ("USER", "u")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn parsing_quotes_variables_operators_and_redirections() {
        let Parsed::Commands(c) = parse(
            r#"echo "hi $USER" 'a $b' ~/x > out.txt && cd /tmp; ls -la || pwd"#,
            &env(),
        ) else {
            panic!()
        };
        assert_eq!(c[0].words, ["echo", "hi u", "a $b", "/home/u/x"]);
        assert_eq!(c[0].redirect, Some(("out.txt".into(), false)));
        assert_eq!((c[1].join, c[2].join, c[3].join), ("&&", ";", "||"));
        assert_eq!(c[2].source, "ls -la");
        assert!(
            matches!(parse("ps aux | grep ssh", &env()), Parsed::Complex { first } if first == "ps")
        );
        assert!(matches!(
            parse("echo $(id)", &env()),
            Parsed::Complex { .. }
        ));
        assert!(matches!(parse("echo 'open", &env()), Parsed::Error(_)));
        assert!(matches!(parse("&& ls", &env()), Parsed::Error(_)));
        let Parsed::Commands(c) = parse("cat x 2>/dev/null >> log # comment", &env()) else {
            panic!()
        };
        assert_eq!(c[0].words, ["cat", "x"]);
        assert_eq!(c[0].redirect, Some(("log".into(), true)));
    }
}
