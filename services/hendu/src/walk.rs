//! Expanding the command line's files and folders into a list of files.

use std::path::{Path, PathBuf};

/// Files named directly, and every file under the folders named (recursively,
/// sorted, hidden entries skipped). Paths keep the spelling they were given:
/// `music/` yields `music/a.ogg`. Unreadable folders are returned as errors
/// next to the files.
pub fn expand(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<(PathBuf, std::io::Error)>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        if path.is_dir() {
            walk_dir(path, &mut files, &mut errors);
        } else {
            // Missing or unreadable files are reported by whoever opens them.
            files.push(path.clone());
        }
    }
    (files, errors)
}

fn walk_dir(dir: &Path, files: &mut Vec<PathBuf>, errors: &mut Vec<(PathBuf, std::io::Error)>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            errors.push((dir.to_owned(), e));
            return;
        }
    };
    let mut children: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .collect();
    children.sort();
    for child in children {
        if child.is_dir() {
            walk_dir(&child, files, errors);
        } else if child.is_file() {
            files.push(child);
        }
    }
}
