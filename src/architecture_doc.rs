//! ARCHITECTURE.md names real items: every link to `crate::...` in it must resolve to a module, a
//! type, a function or a constant that exists, so renaming one fails this test until the document
//! follows (rustdoc resolves the same links when the crate's documentation is built).

use std::path::{Path, PathBuf};

const DOCUMENT: &str = include_str!("../ARCHITECTURE.md");

/// The `crate::...` paths of the document's links.
fn linked_paths(text: &str) -> Vec<&str> {
    text.split("(crate::").skip(1).filter_map(|rest| rest.split(')').next()).collect()
}

/// Whether some `.rs` file at `files` declares `name` as an item.
fn declares(files: &[PathBuf], name: &str) -> bool {
    let kinds = ["fn", "struct", "enum", "trait", "const", "mod", "type", "static"];
    files.iter().any(|file| {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        kinds.iter().any(|kind| {
            text.contains(&format!("{kind} {name}("))
                || text.contains(&format!("{kind} {name}<"))
                || text.contains(&format!("{kind} {name} "))
                || text.contains(&format!("{kind} {name};"))
                || text.contains(&format!("{kind} {name}:"))
        }) || text.contains(&format!("use {name};"))
            || text.contains(&format!("::{name};"))
            || text.contains(&format!("::{name}}}"))
            || text.contains(&format!(" {name}}};"))
    })
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// Whether `path` (after `crate::`) names an item of this crate's sources.
fn resolves(path: &str) -> bool {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut module = src.clone();
    let mut module_file = src.join("lib.rs");
    let segments: Vec<&str> = path.split("::").collect();
    let mut at = 0;
    while at < segments.len() {
        let (file, dir) = (module.join(format!("{}.rs", segments[at])), module.join(segments[at]));
        if dir.join("mod.rs").is_file() {
            module_file = dir.join("mod.rs");
        } else if file.is_file() {
            module_file = file;
        } else {
            break;
        }
        module = dir;
        at += 1;
    }
    let items = &segments[at..];
    let in_module: Vec<PathBuf> = std::iter::once(module_file).chain(rust_files(&module)).collect();
    match items {
        [] => true,
        [item] => declares(&in_module, item),
        [item, member] => declares(&in_module, item) && declares(&in_module, member),
        _ => false,
    }
}

#[test]
fn every_item_the_architecture_names_exists() {
    let paths = linked_paths(DOCUMENT);
    assert!(paths.len() >= 20, "the walks link the items they name: {paths:?}");
    let missing: Vec<&str> = paths.into_iter().filter(|p| !resolves(p)).collect();
    assert!(missing.is_empty(), "ARCHITECTURE.md names items that do not exist: {missing:?}");
}

#[test]
fn a_renamed_item_is_caught() {
    assert!(resolves("fetch::Fetcher::read"));
    assert!(!resolves("fetch::Fetcher::read_renamed"));
    assert!(!resolves("fetch::NoSuchType"));
    assert!(!resolves("no_such_module::Item"));
}
