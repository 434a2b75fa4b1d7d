//! The shape of the tree, checked: a newcomer sees the architecture from it
//! only while it keeps its rules. Each crate says what it holds, none grows
//! past what one person reads in a sitting, no two files of a crate import
//! each other, and the dev tool does not stand on the test kit.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// Non-test code lines (no blanks, no comments) a crate may hold.
const MAX_CRATE_LINES: usize = 2_000;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// Every workspace member's folder, from the root `Cargo.toml`.
fn members() -> Vec<PathBuf> {
    let manifest = fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let list = manifest.split("members = [").nth(1).unwrap().split(']').next().unwrap();
    list.split(',')
        .map(|m| m.trim().trim_matches('"'))
        .filter(|m| !m.is_empty())
        .map(|m| root().join(m))
        .collect()
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else { return files };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The code of `source` before its unit tests, without comments.
fn code(source: &str) -> Vec<&str> {
    source
        .lines()
        .take_while(|l| !l.starts_with("#[cfg(test)]"))
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("//"))
        .collect()
}

/// The module a file of `src` is (`lib.rs` and `main.rs` are the root, ``).
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let name = relative.to_string_lossy().replace('/', "::");
    match name.as_str() {
        "lib" | "main" => String::new(),
        other => other.trim_end_matches("::mod").to_owned(),
    }
}

/// The first name of each path at the top level of a `use` group (`a`,
/// `b` and `c` of `a::{x, y}, b, c::z}`), up to the group's closing brace.
fn top_level_names(group: &str) -> Vec<&str> {
    let (mut names, mut depth, mut start) = (Vec::new(), 0, Some(0));
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => start = Some(i + 1),
            _ if depth == 0 && start.is_some() && !c.is_whitespace() => {
                let from = i;
                let to = group[from..]
                    .find(|c: char| !c.is_alphanumeric() && c != '_')
                    .map_or(group.len(), |n| from + n);
                names.push(&group[from..to]);
                start = None;
            }
            _ => {}
        }
    }
    names
}

#[test]
fn every_crate_says_what_it_holds_and_stays_small() {
    for member in members() {
        let src = member.join("src");
        let lib = src.join("lib.rs");
        let entry = if lib.exists() { lib } else { src.join("main.rs") };
        let root_doc = fs::read_to_string(&entry).unwrap();
        assert!(root_doc.starts_with("//!"), "{} has no crate documentation", entry.display());
        assert!(root_doc.contains("//! # Layout"), "{} has no `# Layout` section", entry.display());
        let lines: usize = rust_files(&src).iter().map(|f| code(&fs::read_to_string(f).unwrap()).len()).sum();
        assert!(lines <= MAX_CRATE_LINES, "{} holds {lines} lines of code", member.display());
    }
}

#[test]
fn no_two_files_of_a_crate_import_each_other() {
    for member in members() {
        let src = member.join("src");
        let files = rust_files(&src);
        let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
        let mut uses: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for file in &files {
            let here = module_of(&src, file);
            let text = code(&fs::read_to_string(file).unwrap()).join("\n");
            for at in text.match_indices("crate::").map(|(i, _)| i + "crate::".len()) {
                let rest = &text[at..];
                let names = match rest.strip_prefix('{') {
                    Some(group) => top_level_names(group),
                    None => vec![rest.split(|c: char| !c.is_alphanumeric() && c != '_').next().unwrap()],
                };
                for name in names.into_iter().filter(|n| modules.contains(*n) && *n != here) {
                    uses.entry(here.clone()).or_default().insert(name.to_owned());
                }
            }
        }
        for (module, used) in &uses {
            for other in used {
                assert!(
                    !uses.get(other).is_some_and(|back| back.contains(module)),
                    "{}: {module} and {other} import each other",
                    member.display()
                );
            }
        }
    }
}

#[test]
fn the_dev_tool_does_not_depend_on_the_test_kit() {
    let manifest = fs::read_to_string(root().join("devstack/Cargo.toml")).unwrap();
    let dependencies = manifest.split("[dependencies]").nth(1).unwrap().split("\n[").next().unwrap();
    assert!(!dependencies.contains("clinic-testkit"), "clinic-dev depends on the test kit");
}
