//! The honeypot's virtual filesystem: a tree of directories and files in memory, seeded from
//! the profile and changed by the session (`touch`, `mkdir`, `rm`, redirections). Nothing here
//! touches the real disk. Permissions are those of an unprivileged user: the user may write
//! under its home and `/tmp`, may read what is world-readable or its own, and nothing else.

use std::collections::BTreeMap;

/// Bytes a session may add to its filesystem at most (files written by redirection).
pub const MAX_SESSION_BYTES: usize = 1 << 20;
/// Entries a session may create at most.
pub const MAX_SESSION_ENTRIES: usize = 2_000;

/// One file or directory.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// `None` for a directory, the contents for a file.
    pub content: Option<String>,
    /// Unix permission bits (e.g. `0o644`).
    pub mode: u32,
    /// Owner's user name.
    pub owner: String,
    /// Modification time shown by `ls -l` (e.g. `Nov 28 09:14`).
    pub mtime: String,
}

impl Node {
    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        self.content.is_none()
    }
}

/// Why a filesystem operation failed, as `bash` words it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsError {
    /// `No such file or directory`.
    NotFound,
    /// `Permission denied`.
    Denied,
    /// `Is a directory`.
    IsDir,
    /// `Not a directory`.
    NotDir,
    /// `File exists`.
    Exists,
    /// `Directory not empty`.
    NotEmpty,
    /// `No space left on device` (the session's quota).
    Full,
}

impl FsError {
    /// The message `bash` and coreutils print.
    pub fn message(self) -> &'static str {
        match self {
            FsError::NotFound => "No such file or directory",
            FsError::Denied => "Permission denied",
            FsError::IsDir => "Is a directory",
            FsError::NotDir => "Not a directory",
            FsError::Exists => "File exists",
            FsError::NotEmpty => "Directory not empty",
            FsError::Full => "No space left on device",
        }
    }
}

/// The tree: absolute normalised paths to nodes (`/` always exists).
#[derive(Clone, Debug)]
pub struct Vfs {
    nodes: BTreeMap<String, Node>,
    user: String,
    added_bytes: usize,
    added_entries: usize,
}

/// `path` made absolute against `cwd` (with `~` as `home`) and normalised (`.`, `..`, `//`).
pub fn normalize(cwd: &str, home: &str, path: &str) -> String {
    let joined = if path == "~" {
        home.to_string()
    } else if let Some(rest) = path.strip_prefix("~/") {
        format!("{home}/{rest}")
    } else if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{cwd}/{path}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for p in joined.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// The parent of an absolute normalised path (`/` for `/`).
pub fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// The last component of a path.
pub fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

impl Vfs {
    /// An empty tree with `/` for the session's `user`.
    pub fn new(user: &str) -> Vfs {
        let mut nodes = BTreeMap::new();
        nodes.insert("/".to_string(), dir_node("root", 0o755));
        Vfs {
            nodes,
            user: user.to_string(),
            added_bytes: 0,
            added_entries: 0,
        }
    }

    /// Adds a seed entry (profile): parents are created as root-owned directories. Seeds do not
    /// count against the session's quota and ignore permissions.
    pub fn seed(&mut self, path: &str, node: Node) {
        let path = normalize("/", "/", path);
        let mut at = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            let up = if at.is_empty() {
                "/".to_string()
            } else {
                at.clone()
            };
            at = if up == "/" {
                format!("/{part}")
            } else {
                format!("{up}/{part}")
            };
            if at != path {
                self.nodes
                    .entry(at.clone())
                    .or_insert_with(|| dir_node("root", 0o755));
            }
        }
        self.nodes.insert(path, node);
    }

    /// The node at an absolute normalised path.
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    /// Children of a directory (names, sorted), or why not.
    pub fn list(&self, dir: &str) -> Result<Vec<(String, &Node)>, FsError> {
        let node = self.nodes.get(dir).ok_or(FsError::NotFound)?;
        if !node.is_dir() {
            return Err(FsError::NotDir);
        }
        if !self.can_read(node) {
            return Err(FsError::Denied);
        }
        let prefix = if dir == "/" {
            "/".to_string()
        } else {
            format!("{dir}/")
        };
        Ok(self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(k, _)| !k[prefix.len()..].contains('/') && k.len() > prefix.len())
            .map(|(k, n)| (k[prefix.len()..].to_string(), n))
            .collect())
    }

    /// The contents of a file, or why not.
    pub fn read(&self, path: &str) -> Result<&str, FsError> {
        let node = self.nodes.get(path).ok_or(FsError::NotFound)?;
        match &node.content {
            None => Err(FsError::IsDir),
            Some(_) if !self.can_read(node) => Err(FsError::Denied),
            Some(c) => Ok(c),
        }
    }

    fn can_read(&self, n: &Node) -> bool {
        n.owner == self.user || n.mode & 0o004 != 0
    }

    fn can_write_in(&self, dir: &str) -> Result<(), FsError> {
        let d = self.nodes.get(dir).ok_or(FsError::NotFound)?;
        if !d.is_dir() {
            return Err(FsError::NotDir);
        }
        if d.owner == self.user || d.mode & 0o002 != 0 {
            Ok(())
        } else {
            Err(FsError::Denied)
        }
    }

    fn charge(&mut self, bytes: usize, entries: usize) -> Result<(), FsError> {
        if self.added_bytes + bytes > MAX_SESSION_BYTES
            || self.added_entries + entries > MAX_SESSION_ENTRIES
        {
            return Err(FsError::Full);
        }
        self.added_bytes += bytes;
        self.added_entries += entries;
        Ok(())
    }

    /// Writes (or appends to) a file as the user, creating it if needed.
    pub fn write(
        &mut self,
        path: &str,
        text: &str,
        append: bool,
        mtime: &str,
    ) -> Result<(), FsError> {
        if path == "/" {
            return Err(FsError::IsDir);
        }
        match self.nodes.get(path) {
            Some(n) if n.is_dir() => return Err(FsError::IsDir),
            Some(n) if n.owner != self.user && n.mode & 0o002 == 0 => return Err(FsError::Denied),
            Some(_) => {}
            None => self.can_write_in(parent(path))?,
        }
        let new = !self.nodes.contains_key(path);
        // Overwriting gives the old contents' bytes back to the quota.
        let old = match self.nodes.get(path).and_then(|n| n.content.as_ref()) {
            Some(c) if !append => c.len(),
            _ => 0,
        };
        self.added_bytes = self.added_bytes.saturating_sub(old);
        self.charge(text.len(), usize::from(new))?;
        let user = self.user.clone();
        let node = self.nodes.entry(path.to_string()).or_insert_with(|| Node {
            content: Some(String::new()),
            mode: 0o664,
            owner: user,
            mtime: mtime.to_string(),
        });
        let content = node.content.get_or_insert_with(String::new);
        if !append {
            content.clear();
        }
        content.push_str(text);
        node.mtime = mtime.to_string();
        Ok(())
    }

    /// `touch`: creates an empty file or updates the time of an existing entry.
    pub fn touch(&mut self, path: &str, mtime: &str) -> Result<(), FsError> {
        if let Some(n) = self.nodes.get(path) {
            if n.owner != self.user && n.mode & 0o002 == 0 {
                return Err(FsError::Denied);
            }
            if let Some(n) = self.nodes.get_mut(path) {
                n.mtime = mtime.to_string();
            }
            return Ok(());
        }
        self.write(path, "", true, mtime)
    }

    /// `mkdir` (with `parents`: `-p`).
    pub fn mkdir(&mut self, path: &str, parents: bool, mtime: &str) -> Result<(), FsError> {
        if let Some(n) = self.nodes.get(path) {
            return if parents && n.is_dir() {
                Ok(())
            } else {
                Err(FsError::Exists)
            };
        }
        let up = parent(path).to_string();
        if !self.nodes.contains_key(&up) {
            if !parents {
                return Err(FsError::NotFound);
            }
            self.mkdir(&up, true, mtime)?;
        }
        self.can_write_in(&up)?;
        self.charge(0, 1)?;
        let mut node = dir_node(&self.user, 0o775);
        node.mtime = mtime.to_string();
        self.nodes.insert(path.to_string(), node);
        Ok(())
    }

    /// `rm` (with `recursive`: `-r`); directories need `recursive`.
    pub fn remove(&mut self, path: &str, recursive: bool) -> Result<(), FsError> {
        let node = self.nodes.get(path).ok_or(FsError::NotFound)?;
        if path == "/" {
            return Err(FsError::Denied);
        }
        if node.is_dir() && !recursive {
            return Err(FsError::IsDir);
        }
        self.can_write_in(parent(path))?;
        let prefix = format!("{path}/");
        let inside: Vec<String> = self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        if inside.iter().any(|k| self.nodes[k].owner != self.user) {
            return Err(FsError::Denied);
        }
        for k in inside.iter().map(String::as_str).chain([path]) {
            // What the session created is given back to its quota.
            if let Some(n) = self.nodes.remove(k) {
                self.added_entries = self.added_entries.saturating_sub(1);
                self.added_bytes = self
                    .added_bytes
                    .saturating_sub(n.content.map_or(0, |c| c.len()));
            }
        }
        Ok(())
    }
}

fn dir_node(owner: &str, mode: u32) -> Node {
    Node {
        content: None,
        mode,
        owner: owner.to_string(),
        mtime: "Nov 28 09:14".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_permissions_and_quota() {
        assert_eq!(
            normalize("/home/a", "/home/a", "../b/./c//d/.."),
            "/home/b/c"
        );
        assert_eq!(normalize("/x", "/home/a", "~/f"), "/home/a/f");
        assert_eq!(normalize("/", "/h", "../.."), "/");
        let mut fs = Vfs::new("admin");
        fs.seed("/home/admin", dir_node("admin", 0o755));
        fs.seed(
            "/etc/shadow",
            Node {
                content: Some("root:x".into()),
                mode: 0o640,
                owner: "root".into(),
                mtime: String::new(),
            },
        );
        assert_eq!(fs.read("/etc/shadow"), Err(FsError::Denied));
        assert_eq!(fs.list("/etc").unwrap().len(), 1);
        assert_eq!(fs.write("/etc/x", "a", false, "t"), Err(FsError::Denied));
        fs.write("/home/admin/f", "hi\n", false, "t").unwrap();
        fs.write("/home/admin/f", "there\n", true, "t").unwrap();
        assert_eq!(fs.read("/home/admin/f").unwrap(), "hi\nthere\n");
        fs.mkdir("/home/admin/a/b", true, "t").unwrap();
        assert_eq!(fs.remove("/home/admin/a", false), Err(FsError::IsDir));
        fs.remove("/home/admin/a", true).unwrap();
        assert!(fs.get("/home/admin/a/b").is_none());
        let big = "x".repeat(MAX_SESSION_BYTES);
        assert_eq!(
            fs.write("/home/admin/big", &big, false, "t"),
            Err(FsError::Full)
        );
    }
}
