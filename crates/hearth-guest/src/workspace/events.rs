//! Turning raw inotify events into the wire's `WatchEvent`s, per watch stream.

use std::collections::HashMap;

use hearth_proto::{WatchEvent, WatchEventKind};
use rustix::fs::inotify::ReadFlags;

use super::watch::{Added, RawEvent};

pub(crate) fn event(kind: WatchEventKind, path: String) -> WatchEvent {
    WatchEvent {
        kind,
        path,
        from: None,
    }
}

/// What a batch of raw events means.
#[derive(Debug, Default, PartialEq)]
pub struct Translated {
    pub events: Vec<WatchEvent>,
    /// Directories that appeared (recursive watches only): watch them.
    pub new_dirs: Vec<String>,
    /// Watches to drop (their directory left the watched tree).
    pub removed: Vec<i32>,
    /// The watched directory itself is gone: the stream ends.
    pub ended: bool,
}

/// The state of one watch stream: which directory each watch descriptor stands for.
#[derive(Debug)]
pub struct Watch {
    dirs: HashMap<i32, String>,
    root_wd: i32,
    root: String,
    recursive: bool,
    last: Option<WatchEvent>,
}

impl Watch {
    pub fn new(root: String, recursive: bool, added: &Added) -> Watch {
        let mut w = Watch {
            dirs: HashMap::new(),
            root_wd: added.dirs.first().map(|d| d.0).unwrap_or(-1),
            root,
            recursive,
            last: None,
        };
        w.insert(added);
        w
    }

    pub fn insert(&mut self, added: &Added) {
        self.dirs.extend(added.dirs.iter().cloned());
    }

    pub fn watched(&self) -> usize {
        self.dirs.len()
    }

    pub fn root(&self) -> &str {
        &self.root
    }

    /// Turns `batch` into wire events. A `MOVED_FROM` and `MOVED_TO` with one cookie in
    /// the same batch are one `move`; alone they are a `delete` (moved out of sight) or
    /// a `create` (moved in). Repeated `modify` events for one path are sent once.
    pub fn translate(&mut self, batch: &[RawEvent]) -> Translated {
        let mut out = Translated::default();
        let mut paired = vec![false; batch.len()];
        for (i, ev) in batch.iter().enumerate() {
            if paired[i] {
                continue;
            }
            let f = ev.flags;
            if f.contains(ReadFlags::QUEUE_OVERFLOW) {
                let root = self.root.clone();
                self.emit(&mut out, event(WatchEventKind::Overflow, root));
                continue;
            }
            if f.contains(ReadFlags::IGNORED) || f.contains(ReadFlags::UNMOUNT) {
                self.dirs.remove(&ev.wd);
                out.ended |= ev.wd == self.root_wd;
                continue;
            }
            let Some(dir) = self.dirs.get(&ev.wd).cloned() else {
                continue;
            };
            if f.contains(ReadFlags::DELETE_SELF) {
                if ev.wd == self.root_wd {
                    self.emit(&mut out, event(WatchEventKind::Delete, dir));
                    out.ended = true;
                }
                continue;
            }
            let Some(name) = &ev.name else { continue };
            let path = format!("{dir}/{name}");
            let is_dir = f.contains(ReadFlags::ISDIR);
            if f.contains(ReadFlags::CREATE) {
                if is_dir && self.recursive {
                    out.new_dirs.push(path.clone());
                }
                self.emit(&mut out, event(WatchEventKind::Create, path));
            } else if f.contains(ReadFlags::MODIFY) {
                self.emit(&mut out, event(WatchEventKind::Modify, path));
            } else if f.contains(ReadFlags::DELETE) {
                self.emit(&mut out, event(WatchEventKind::Delete, path));
            } else if f.contains(ReadFlags::MOVED_FROM) {
                let to =
                    batch.iter().enumerate().skip(i + 1).find(|(_, t)| {
                        t.flags.contains(ReadFlags::MOVED_TO) && t.cookie == ev.cookie
                    });
                let dest = to.and_then(|(j, t)| {
                    let d = self.dirs.get(&t.wd)?;
                    Some((j, format!("{d}/{}", t.name.as_deref()?)))
                });
                match dest {
                    Some((j, to_path)) => {
                        paired[j] = true;
                        if is_dir {
                            self.renamed(&path, &to_path);
                        }
                        let mut e = event(WatchEventKind::Move, to_path);
                        e.from = Some(path);
                        self.emit(&mut out, e);
                    }
                    None => {
                        if is_dir {
                            out.removed.extend(self.below(&path));
                        }
                        self.emit(&mut out, event(WatchEventKind::Delete, path));
                    }
                }
            } else if f.contains(ReadFlags::MOVED_TO) {
                if is_dir && self.recursive {
                    out.new_dirs.push(path.clone());
                }
                self.emit(&mut out, event(WatchEventKind::Create, path));
            }
        }
        for wd in &out.removed {
            self.dirs.remove(wd);
        }
        out
    }

    fn emit(&mut self, out: &mut Translated, e: WatchEvent) {
        if e.kind == WatchEventKind::Modify && self.last.as_ref() == Some(&e) {
            return;
        }
        self.last = Some(e.clone());
        out.events.push(e);
    }

    /// Watch descriptors of `path` and everything below it.
    fn below(&self, path: &str) -> Vec<i32> {
        let prefix = format!("{path}/");
        self.dirs
            .iter()
            .filter(|(_, d)| *d == path || d.starts_with(&prefix))
            .map(|(wd, _)| *wd)
            .collect()
    }

    /// A watched directory moved within the tree: its watches keep working, under the
    /// new name.
    fn renamed(&mut self, from: &str, to: &str) {
        let prefix = format!("{from}/");
        for d in self.dirs.values_mut() {
            if d == from {
                *d = to.to_string();
            } else if let Some(rest) = d.strip_prefix(&prefix) {
                *d = format!("{to}/{rest}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(wd: i32, flags: ReadFlags, cookie: u32, name: &str) -> RawEvent {
        RawEvent {
            wd,
            flags,
            cookie,
            name: Some(name.into()),
        }
    }

    fn kinds(t: &Translated) -> Vec<(WatchEventKind, &str, Option<&str>)> {
        t.events
            .iter()
            .map(|e| (e.kind, e.path.as_str(), e.from.as_deref()))
            .collect()
    }

    #[test]
    fn raw_events_become_wire_events() {
        use WatchEventKind::*;
        let added = Added {
            dirs: vec![(1, "/workspace".into()), (2, "/workspace/d".into())],
            ..Default::default()
        };
        let mut w = Watch::new("/workspace".into(), true, &added);
        let t = w.translate(&[
            raw(1, ReadFlags::CREATE, 0, "a"),
            raw(1, ReadFlags::MODIFY, 0, "a"),
            raw(1, ReadFlags::MODIFY, 0, "a"),
            raw(1, ReadFlags::MOVED_FROM, 7, "a"),
            raw(2, ReadFlags::MOVED_TO, 7, "b"),
            raw(1, ReadFlags::CREATE | ReadFlags::ISDIR, 0, "new"),
            raw(2, ReadFlags::MOVED_FROM, 8, "gone"),
            raw(1, ReadFlags::MOVED_TO, 9, "came"),
            raw(2, ReadFlags::DELETE, 0, "b"),
            raw(-1, ReadFlags::QUEUE_OVERFLOW, 0, ""),
        ]);
        assert_eq!(
            kinds(&t),
            vec![
                (Create, "/workspace/a", None),
                (Modify, "/workspace/a", None),
                (Move, "/workspace/d/b", Some("/workspace/a")),
                (Create, "/workspace/new", None),
                (Delete, "/workspace/d/gone", None),
                (Create, "/workspace/came", None),
                (Delete, "/workspace/d/b", None),
                (Overflow, "/workspace", None),
            ]
        );
        assert_eq!(t.new_dirs, vec!["/workspace/new".to_string()]);
        assert!(!t.ended);
    }

    #[test]
    fn directory_moves_rename_and_drop_watches() {
        let added = Added {
            dirs: vec![
                (1, "/workspace".into()),
                (2, "/workspace/d".into()),
                (3, "/workspace/d/e".into()),
                (4, "/workspace/x".into()),
            ],
            ..Default::default()
        };
        let mut w = Watch::new("/workspace".into(), true, &added);
        let dir = ReadFlags::ISDIR;
        w.translate(&[
            raw(1, ReadFlags::MOVED_FROM | dir, 5, "d"),
            raw(1, ReadFlags::MOVED_TO | dir, 5, "r"),
        ]);
        let t = w.translate(&[raw(3, ReadFlags::CREATE, 0, "f")]);
        assert_eq!(t.events[0].path, "/workspace/r/e/f");
        let t = w.translate(&[raw(1, ReadFlags::MOVED_FROM | dir, 6, "x")]);
        assert_eq!(t.removed, vec![4]);
        assert_eq!(w.watched(), 3);
        let t = w.translate(&[RawEvent {
            wd: 1,
            flags: ReadFlags::IGNORED,
            cookie: 0,
            name: None,
        }]);
        assert!(t.ended);
    }
}
